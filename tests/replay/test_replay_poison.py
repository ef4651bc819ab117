"""Entries that can never be published: parked with a reason, audited, never blocking others."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import kombu
import pytest

from fallbackbus.audit import SqlAuditStore
from fallbackbus.replay import Replayer
from tests.replay.conftest import (
    SERVICE,
    Backlog,
    Tally,
    entry_ids,
    ledger_for,
    outcomes,
    received_ids,
)
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter, rejecting_queue
from tests.support.services import RABBITMQ_URL, delete_exchange

pytestmark = pytest.mark.integration


def body(**data: Any) -> dict[str, Any]:
    """A petisco body; ``data`` overrides (``None`` removes) fields of ``data``."""
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": "user.created",
        "type_message": "domain_event",
        "version": 1,
        "occurred_on": "2024-05-01 10:00:00.000000",
        "attributes": {"index": -1},
        "meta": {},
    }
    fields.update(data)
    return {"data": {k: v for k, v in fields.items() if v is not None}}


def entry(organization: str, message: Any, service: str = SERVICE, **extra: Any) -> bytes:
    return json.dumps(
        {"organization": organization, "service": service, "message": message, **extra}
    ).encode()


def poison_kinds(organization: str) -> list[tuple[str, bytes, str]]:
    """``(kind, raw entry, pattern its dead-letter reason must match)``, one of each kind."""
    whole = entry(organization, body())
    return [
        ("not JSON", b"this is not JSON at all", r"JSON"),
        ("truncated JSON", whole[: len(whole) // 2], r"JSON"),
        ("not UTF-8", b'{"organization": "\xff\xfe", "service": "\xc3\x28"}', r"UTF-8"),
        (
            "no message",
            json.dumps({"organization": organization, "service": SERVICE}).encode(),
            r"message",
        ),
        ("no data", entry(organization, {"payload": {"id": "x"}}), r"data"),
        ("no id", entry(organization, body(id=None)), r"id"),
        ("unknown kind", entry(organization, body(type_message="notification")), r"kind"),
        ("service not allowed", entry("someoneelse", body(), service="billing"), r"allow-list"),
        (
            "over the size limit",
            entry(organization, body(attributes={"blob": "x" * 5000})),
            r"limit",
        ),
        (
            "attempts exhausted",
            entry(
                organization,
                body(),
                reason="returned as unroutable",
                stored_at="2024-05-01T10:00:00.000000+00:00",
                attempts=5,
            ),
            r"attempts",
        ),
    ]


def test_poison_entries_of_every_kind_are_dead_lettered_with_a_reason_and_never_block_good_ones(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    # Given a good entry before, between and after poison entries of every kind
    poison = poison_kinds(organization)
    good = backlog.add(1, organization)
    for _, raw, _ in poison:
        backlog.push_raw(raw)
        good += backlog.add(1, organization)
    # The 'attempts exhausted' entry claims to be ours: count it as the bus would have.
    backlog.client.hincrby(backlog.keys.stats, f"{organization}|{SERVICE}|fell_back", 1)
    replayer = make_replayer(
        sqlite_audit,
        replay_allowed_services=(f"{organization}.{SERVICE}",),
        max_message_bytes=4096,
        replay_max_attempts=5,
    )

    # When the list is replayed in batches that mix good and bad entries
    report = replayer.run(backlog.keys.name, batch_size=3)
    counter.drain(expected=len(good), timeout=10)

    # Then every good entry is republished once, in order, and the run completes
    assert (report.status, report.republished, report.dead_lettered) == (
        "completed",
        len(good),
        len(poison),
    )
    assert received_ids(counter) == good
    # ... every poison entry is parked untouched, in order, with a reason that says why
    parked = backlog.dead_letters()
    assert [original for original, _ in parked] == [raw for _, raw, _ in poison]
    for (kind, _, pattern), (_, reason) in zip(poison, parked, strict=True):
        assert re.search(pattern, reason), f"{kind}: reason {reason!r} does not match {pattern}"
    # ... and audited as dead-lettered with that reason
    rows = outcomes(sqlite_audit)
    dead_rows = [row for row in rows if row.status == "dead_lettered"]
    assert [row.reason for row in dead_rows] == [reason for _, reason in parked]
    assert Counter(row.status for row in rows) == {
        "republished": len(good),
        "dead_lettered": len(poison),
    }
    assert backlog.entries() == []
    assert backlog.processing_lists() == {}
    backlog.assert_counters_balance()
    ledger = ledger_for(good, counter, backlog)
    tally.record(len(good) + len(poison), len(ledger.lost()), ledger.duplicate_count())
    ledger.assert_nothing_lost(allow_duplicates=False)


def deeply_nested(organization: str) -> bytes:
    """A 200 kB entry (well under the size limit) whose message nests 100,000 arrays."""
    nested = "[" * 100_000 + "]" * 100_000
    envelope = f'{{"organization": "{organization}", "service": "{SERVICE}", "message": {nested}}}'
    return envelope.encode()


def routing_key_too_long(organization: str) -> bytes:
    """An entry whose type makes a routing key over AMQP's 255-byte limit."""
    return entry(organization, body(type="user." + "x" * 300))


@pytest.mark.parametrize(
    ("poison", "good_before", "good_after"),
    [
        pytest.param(deeply_nested, 2, 2, id="nested-too-deep-to-parse"),
        pytest.param(routing_key_too_long, 0, 5, id="routing-key-too-long-for-amqp"),
    ],
)
def test_an_entry_that_could_crash_the_run_is_dead_lettered_and_blocks_nothing(
    poison: Callable[[str], bytes],
    good_before: int,
    good_after: int,
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    # Given the entry among good ones
    good = backlog.add(good_before, organization)
    backlog.push_raw(poison(organization))
    good += backlog.add(good_after, organization)

    # When the list is replayed
    report = make_replayer(sqlite_audit).run(backlog.keys.name, batch_size=10)
    counter.drain(expected=len(good), timeout=5)

    # Then it is parked like any other unreadable entry, RabbitMQ is not blamed for it, and the
    # good ones go through
    assert (report.status, report.stop_reason) == ("completed", None)
    assert (report.republished, report.dead_lettered) == (len(good), 1)
    assert received_ids(counter) == good
    assert len(backlog.dead_letters()) == 1
    assert backlog.processing_lists() == {}
    ledger = ledger_for(good, counter, backlog)
    tally.record(len(good) + 1, len(ledger.lost()), ledger.duplicate_count())
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_an_entry_for_an_exchange_rabbitmq_refuses_does_not_drag_its_batch_neighbours_down(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    # Given another organization's exchange that exists as a *direct* exchange, so declaring it
    # as petisco's topic exchange fails with 406 PRECONDITION_FAILED; one entry for it sits
    # among good entries of one batch (no allow-list configured)
    other = f"t{uuid.uuid4().hex[:8]}"
    with kombu.Connection(RABBITMQ_URL) as connection:
        kombu.Exchange(f"{other}.{SERVICE}", "direct", durable=False)(
            connection.default_channel
        ).declare()
    try:
        good = backlog.add(3, organization)
        backlog.push_raw(entry(other, body()))
        good += backlog.add(3, organization)
        replayer = make_replayer(sqlite_audit, replay_max_attempts=3)

        # When the list is replayed (as many runs as the attempt limit allows)
        for _ in range(3):
            replayer.run(backlog.keys.name, batch_size=10)
        counter.drain(expected=len(good), timeout=5)
    finally:
        delete_exchange(f"{other}.{SERVICE}")

    # Then the good entries are republished once and only the refused entry is parked
    parked = backlog.dead_letters()
    ledger = ledger_for(good, counter, backlog, dead=entry_ids([o for o, _ in parked]))
    tally.record(len(good) + 1, len(ledger.lost()), ledger.duplicate_count())
    assert received_ids(counter) == good
    assert [json.loads(original)["organization"] for original, _ in parked] == [other]
    rows = outcomes(sqlite_audit)
    assert not [row for row in rows if row.message_id in good and row.status != "republished"]
    ledger.assert_nothing_lost(allow_duplicates=False)


# -- attempts: nacks and returns count, one per run ----------------------------------------------


def attempts_of(backlog: Backlog) -> list[int]:
    return [json.loads(raw).get("attempts", 0) for raw in backlog.entries()]


def count_unpublished(ids: list[str], backlog: Backlog, tally: Tally) -> None:
    """Tally entries that never reach a queue: each must be waiting or parked, once."""
    ledger = Ledger(ids)
    ledger.add_fallback(backlog.client, backlog.keys.source)
    ledger.add_dead_lettered(entry_ids([original for original, _ in backlog.dead_letters()]))
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_a_return_counts_one_attempt_puts_the_entries_back_in_order_and_stops_the_run(
    backlog: Backlog,
    organization: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    # Given entries for an exchange no queue is bound to (RabbitMQ returns them as unroutable)
    ids = backlog.add(5, organization)
    try:
        # When one run replays them
        report = make_replayer(sqlite_audit, replay_max_attempts=3).run(backlog.keys.name)
    finally:
        delete_exchange(f"{organization}.{SERVICE}")

    # Then that is one attempt: they are back, in order, with attempts 1, and the run stopped
    # saying why (no retry storm that burns every attempt within one run)
    count_unpublished(ids, backlog, tally)
    assert entry_ids(backlog.entries()) == ids
    assert attempts_of(backlog) == [1] * 5
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert "unroutable" in report.stop_reason
    assert (report.returned, report.dead_lettered) == (5, 0)


@pytest.mark.parametrize("refusal", ["returned as unroutable", "nacked"])
def test_entries_rabbitmq_keeps_refusing_are_parked_after_max_attempts_each_attempt_audited(
    refusal: str,
    backlog: Backlog,
    organization: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    # Given entries RabbitMQ refuses every time: unroutable (no queue bound), or nacked by a
    # queue that rejects every publish
    ids = backlog.add(4, organization)
    exchange = f"{organization}.{SERVICE}"
    refusing: AbstractContextManager[None] = (
        nullcontext() if refusal.startswith("returned") else rejecting_queue(exchange)
    )
    replayer = make_replayer(sqlite_audit, replay_max_attempts=3)
    try:
        # When replay runs until the list is empty (at most one run per allowed attempt)
        with refusing:
            runs = 0
            while backlog.entries() and runs < 3:
                replayer.run(backlog.keys.name)
                runs += 1
    finally:
        delete_exchange(exchange)

    # Then each entry was tried 3 times: 2 'returned' rows and then parked with the reason
    count_unpublished(ids, backlog, tally)
    parked = backlog.dead_letters()
    assert entry_ids([original for original, _ in parked]) == ids
    assert all(re.search(rf"gave up after 3 attempts: .*{refusal}", r) for _, r in parked), parked
    rows = outcomes(sqlite_audit)
    assert Counter((row.message_id, row.status) for row in rows) == {
        **{(message_id, "returned"): 2 for message_id in ids},
        **{(message_id, "dead_lettered"): 1 for message_id in ids},
    }
    assert sorted(row.attempts for row in rows if row.status == "dead_lettered") == [3] * 4
    assert backlog.entries() == []
    backlog.assert_counters_balance()
