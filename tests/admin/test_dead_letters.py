"""Dead letters from Python: list them with reasons, requeue or purge a selection, each audited."""

from __future__ import annotations

import pytest

from fallbackbus import admin
from fallbackbus.admin import ConfirmationRequired, InvalidSelection, NotFound, Selector
from fallbackbus.envelope import decode
from fallbackbus.errors import AuditUnavailable
from tests.admin.conftest import EVENTS, PASSWORD, World, closed_port_url
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration

NOT_ALLOWED = "service {organization}.svc is not in the allow-list"


def test_dead_letters_are_listed_most_recent_first_with_their_reason(world: World) -> None:
    ids = world.park(3)

    page = admin.list_dead_letters(EVENTS, settings=world.settings())

    assert (page.list_key, page.total, page.offset) == (world.keys().source, 3, 0)
    assert [entry.message_id for entry in page.entries] == ids[::-1]
    assert [entry.index for entry in page.entries] == [0, 1, 2]
    reason = NOT_ALLOWED.format(organization=world.organization)
    assert {(e.reason, e.message_type, e.organization) for e in page.entries} == {
        (reason, "user.created", world.organization)
    }


def test_dead_letters_are_listed_a_page_at_a_time(world: World) -> None:
    ids = world.park(5)

    page = admin.list_dead_letters(EVENTS, limit=2, offset=2, settings=world.settings())

    assert page.total == 5
    assert [(e.index, e.message_id) for e in page.entries] == [(2, ids[2]), (3, ids[1])]


def test_a_poison_entry_is_listed_with_what_can_be_read_of_it(world: World) -> None:
    world.push_raw(world.poison_entry(), b"not json")
    world.replay()

    entries = admin.list_dead_letters(EVENTS, settings=world.settings()).entries

    assert [(e.message_id, e.organization, e.reason) for e in entries] == [
        (None, None, "entry is not a JSON object"),
        (None, world.organization, "message has no string 'data.id'"),
    ]


def test_requeue_puts_the_selection_at_the_oldest_end_with_attempts_reset(world: World) -> None:
    parked = world.park(3)
    waiting = world.fall_back(2)

    report = admin.requeue(EVENTS, Selector(indexes=(0, 2)), settings=world.settings())

    # index 2 is the oldest parked (parked[0]): it is now the very next entry to replay
    assert [view.message_id for view in report.moved] == [parked[2], parked[0]]
    assert report.skipped == ()
    assert world.waiting_ids() == [parked[0], parked[2], *waiting]
    requeued = [decode(raw, max_bytes=1 << 20) for raw in world.waiting()[:2]]
    assert {entry.attempts for entry in requeued} == {0}
    remaining = admin.list_dead_letters(EVENTS, settings=world.settings()).entries
    assert [entry.message_id for entry in remaining] == [parked[1]]


def test_requeue_writes_one_requeued_audit_row_per_entry(world: World) -> None:
    parked = world.park(2)

    admin.requeue(EVENTS, Selector(message_ids=(parked[1],)), settings=world.settings())

    [row] = world.outcomes(statuses=["requeued"])
    assert (row.message_id, row.run_id, row.source_list) == (parked[1], None, world.keys().source)
    assert (row.message_type, row.organization, row.service) == (
        "user.created",
        world.organization,
        "svc",
    )
    assert row.reason is not None
    assert "requeued by an operator" in row.reason
    assert "not in the allow-list" in row.reason


def test_requeued_entries_are_republished_by_the_next_replay(
    world: World, counter: QueueCounter
) -> None:
    parked = world.park(3)

    admin.requeue(EVENTS, Selector(all_entries=True), settings=world.settings())
    report = world.replay()
    counter.drain(expected=3)

    assert report.republished == 3
    assert list(counter.ids) == parked  # oldest parked first, as they first fell back
    assert admin.list_dead_letters(EVENTS, settings=world.settings()).total == 0


def test_requeue_all_keeps_the_order_across_chunks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    parked = world.park(7)
    monkeypatch.setattr(admin, "CHUNK", 3)

    report = admin.requeue(EVENTS, Selector(all_entries=True), settings=world.settings())

    assert len(report.moved) == 7
    assert world.waiting_ids() == parked


def test_requeue_of_an_unknown_message_id_changes_nothing(world: World) -> None:
    parked = world.park(2)

    with pytest.raises(NotFound, match="no-such-id"):
        admin.requeue(
            EVENTS, Selector(message_ids=(parked[0], "no-such-id")), settings=world.settings()
        )

    assert admin.list_dead_letters(EVENTS, settings=world.settings()).total == 2
    assert world.waiting() == []
    assert world.outcomes(statuses=["requeued"]) == []


def test_an_index_past_the_end_is_not_found(world: World) -> None:
    world.park(2)

    with pytest.raises(NotFound, match="has 2 dead letter"):
        admin.requeue(EVENTS, Selector(indexes=(0, 5)), settings=world.settings())

    assert admin.list_dead_letters(EVENTS, settings=world.settings()).total == 2


@pytest.mark.parametrize(
    "selection",
    [{}, {"indexes": (1,), "all_entries": True}, {"indexes": (-1,)}],
    ids=["nothing", "two-kinds", "negative"],
)
def test_a_selection_must_be_exactly_one_kind_of_valid_choice(selection: dict[str, object]) -> None:
    with pytest.raises(InvalidSelection):
        Selector(**selection)  # type: ignore[arg-type]


def test_purge_without_confirmation_deletes_nothing_and_says_how_much_it_would(
    world: World,
) -> None:
    world.park(3)

    with pytest.raises(ConfirmationRequired) as refused:
        admin.purge(EVENTS, Selector(all_entries=True), settings=world.settings())

    assert refused.value.count == 3
    assert admin.list_dead_letters(EVENTS, settings=world.settings()).total == 3
    assert world.outcomes(statuses=["purged"]) == []


def test_purge_deletes_the_selection_and_audits_each_entry(world: World) -> None:
    parked = world.park(3)

    report = admin.purge(
        EVENTS,
        Selector(message_ids=(parked[0], parked[2])),
        confirm=True,
        settings=world.settings(),
    )

    assert sorted(view.message_id or "" for view in report.moved) == sorted([parked[0], parked[2]])
    remaining = admin.list_dead_letters(EVENTS, settings=world.settings()).entries
    assert [entry.message_id for entry in remaining] == [parked[1]]
    assert sorted(row.message_id for row in world.outcomes(statuses=["purged"])) == sorted(
        [parked[0], parked[2]]
    )
    assert world.waiting() == []


def test_a_poison_entry_gets_the_same_audit_id_each_time_it_is_acted_on(world: World) -> None:
    world.push_raw(b"not json")
    world.replay()
    admin.requeue(EVENTS, Selector(all_entries=True), settings=world.settings())
    world.replay()
    admin.purge(EVENTS, Selector(all_entries=True), confirm=True, settings=world.settings())

    [requeued] = world.outcomes(statuses=["requeued"])
    [purged] = world.outcomes(statuses=["purged"])
    assert requeued.message_id == purged.message_id
    assert requeued.message_id.startswith("unreadable:")


def test_nothing_moves_when_the_audit_database_is_unreachable(world: World) -> None:
    world.park(2)
    down = world.settings(audit_db_url=closed_port_url("postgresql+psycopg", "/test"))

    with pytest.raises(AuditUnavailable) as failed:
        admin.purge(EVENTS, Selector(all_entries=True), confirm=True, settings=down)

    assert PASSWORD not in str(failed.value)
    assert admin.list_dead_letters(EVENTS, settings=world.settings()).total == 2


def test_an_unknown_list_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no list 'nope'"):
        admin.list_dead_letters("nope", settings=world.settings())
