"""AuditQueries answers operators' questions: filters, windows, pages, order and counts."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fallbackbus.audit import (
    OUTCOME_STATUSES,
    AuditQueries,
    InvalidQuery,
    Outcome,
    OutcomeRow,
    RunReport,
    RunRow,
    SqlAuditStore,
    TypeCount,
)
from fallbackbus.audit.models import OutcomeRecord, RunRecord

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# A SQLAlchemy warning here is a bug (an uncached type, a cartesian product): fail on it.
pytestmark = pytest.mark.filterwarnings("error")


def outcome(
    message_id: str, status: str, message_type: str | None, org: str | None, service: str | None
) -> Outcome:
    return Outcome(
        message_id=message_id,
        status=status,
        source_list="domain.events",
        message_type=message_type,
        organization=org,
        service=service,
    )


@pytest.fixture
def seeded(store: SqlAuditStore, queries: AuditQueries) -> AuditQueries:
    """Six outcomes a minute apart (m1 and m2 in one batch), in two runs and two admin actions."""
    store.record(
        "run-1",
        [
            outcome("m1", "republished", "user.created", "acme", "petisco"),
            # A poison entry: nothing could be read from it.
            outcome("m2", "dead_lettered", None, None, None),
        ],
        at=T0,
    )
    store.record(
        "run-1", [outcome("m3", "returned", "user.updated", "acme", "petisco")], at=T0 + MINUTE
    )
    store.record(
        "run-2",
        [outcome("m4", "republished", "user.created", "acme", "billing")],
        at=T0 + 2 * MINUTE,
    )
    store.record(
        None, [outcome("m5", "requeued", "user.created", "acme", "petisco")], at=T0 + 3 * MINUTE
    )
    store.record(
        None, [outcome("m6", "purged", "order.placed", "globex", "shop")], at=T0 + 4 * MINUTE
    )
    return queries


def ids(rows: list[OutcomeRow]) -> list[str]:
    return [row.message_id for row in rows]


def test_outcomes_come_newest_first_by_default(seeded: AuditQueries) -> None:
    assert ids(seeded.outcomes()) == ["m6", "m5", "m4", "m3", "m2", "m1"]


def test_outcomes_can_come_oldest_first(seeded: AuditQueries) -> None:
    assert ids(seeded.outcomes(newest_first=False)) == ["m1", "m2", "m3", "m4", "m5", "m6"]


def test_pages_follow_each_other_without_gaps_or_repeats(seeded: AuditQueries) -> None:
    pages = [seeded.outcomes(limit=4, offset=offset) for offset in (0, 4, 8)]

    assert [ids(page) for page in pages] == [["m6", "m5", "m4", "m3"], ["m2", "m1"], []]


def test_rows_recorded_in_one_batch_keep_one_order_across_pages(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    # Same recorded_at for the whole batch: only the id tie-break makes paging deterministic.
    store.record(
        "run-1", [Outcome(f"m{i}", "republished", "domain.events") for i in range(7)], at=T0
    )

    pages = [
        ids(queries.outcomes(limit=3, offset=offset, newest_first=False)) for offset in (0, 3, 6)
    ]

    assert pages == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]


def test_since_is_inclusive_and_until_is_exclusive(seeded: AuditQueries) -> None:
    rows = seeded.outcomes(since=T0 + MINUTE, until=T0 + 3 * MINUTE)

    assert ids(rows) == ["m4", "m3"]


def test_a_window_given_in_another_zone_means_the_same_instants(seeded: AuditQueries) -> None:
    # 07:01 in New York in January is 12:01 UTC.
    new_york = datetime(2024, 1, 1, 7, 1, tzinfo=ZoneInfo("America/New_York"))

    assert ids(seeded.outcomes(since=new_york, until=new_york + 2 * MINUTE)) == ["m4", "m3"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"statuses": ["republished"]}, ["m4", "m1"], id="one status"),
        pytest.param({"statuses": ["requeued", "purged"]}, ["m6", "m5"], id="several statuses"),
        pytest.param({"statuses": "returned"}, ["m3"], id="a lone status string"),
        pytest.param({"message_type": "user.created"}, ["m5", "m4", "m1"], id="message type"),
        pytest.param({"organization": "acme"}, ["m5", "m4", "m3", "m1"], id="organization"),
        pytest.param(
            {"organization": "acme", "service": "petisco"}, ["m5", "m3", "m1"], id="service"
        ),
        pytest.param({"message_id": "m2"}, ["m2"], id="message id"),
        pytest.param({"run_id": "run-1"}, ["m3", "m2", "m1"], id="run id"),
        pytest.param(
            {"statuses": ["republished"], "message_type": "user.created", "service": "petisco"},
            ["m1"],
            id="filters combine",
        ),
        pytest.param({"message_id": "nope"}, [], id="no match"),
    ],
)
def test_outcomes_keep_only_the_rows_matching_every_filter(
    seeded: AuditQueries, filters: dict[str, Any], expected: list[str]
) -> None:
    assert ids(seeded.outcomes(**filters)) == expected


def test_an_outcome_row_carries_every_column(store: SqlAuditStore, queries: AuditQueries) -> None:
    recorded: dict[str, Any] = {
        "message_id": "m1",
        "status": "dead_lettered",
        "source_list": "commands",
        "message_type": "create_user",
        "organization": "acme",
        "service": "petisco",
        "routing_key": "acme.petisco.1.command.create_user",
        "reason": "service not allowed",
        "attempts": 5,
    }
    store.record("run-1", [Outcome(**recorded)], at=T0)

    (row,) = queries.outcomes()

    assert row == OutcomeRow(id=row.id, run_id="run-1", recorded_at=T0, **recorded)


def test_result_rows_have_exactly_the_columns_of_their_tables() -> None:
    assert [f.name for f in fields(OutcomeRow)] == list(OutcomeRecord.__table__.c.keys())
    assert [f.name for f in fields(RunRow)] == list(RunRecord.__table__.c.keys())


def test_an_unknown_status_raises_invalid_query_naming_the_valid_ones(seeded: AuditQueries) -> None:
    with pytest.raises(InvalidQuery) as raised:
        seeded.outcomes(statuses=["republished", "sent"])

    message = str(raised.value)
    assert message == (
        "unknown status 'sent'; valid statuses: "
        "republished, dead_lettered, returned, requeued, purged"
    )
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(lambda q: q.outcomes(since=datetime(2024, 1, 1)), id="outcomes since"),
        pytest.param(lambda q: q.outcomes(until=datetime(2024, 1, 1)), id="outcomes until"),
        pytest.param(lambda q: q.outcome_counts(datetime(2024, 1, 1)), id="outcome_counts"),
        pytest.param(lambda q: q.runs(datetime(2024, 1, 1)), id="runs"),
    ],
)
def test_a_naive_datetime_raises_invalid_query(seeded: AuditQueries, query: Any) -> None:
    with pytest.raises(InvalidQuery, match="timezone-aware"):
        query(seeded)


@pytest.mark.parametrize(
    ("page", "message"),
    [
        pytest.param({"limit": 0}, "limit must be at least 1", id="limit 0"),
        pytest.param({"offset": -1}, "offset must be 0 or more", id="negative offset"),
    ],
)
def test_a_page_that_cannot_exist_raises_invalid_query(
    seeded: AuditQueries, page: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidQuery, match=message):
        seeded.outcomes(**page)
    with pytest.raises(InvalidQuery, match=message):
        seeded.runs(**page)


def test_outcome_counts_give_every_status_zero_included(seeded: AuditQueries) -> None:
    assert seeded.outcome_counts() == {
        "republished": 2,
        "dead_lettered": 1,
        "returned": 1,
        "requeued": 1,
        "purged": 1,
    }


def test_outcome_counts_only_count_the_window(seeded: AuditQueries) -> None:
    counts = seeded.outcome_counts(T0 + MINUTE, T0 + 3 * MINUTE)

    assert counts == {
        "republished": 1,
        "dead_lettered": 0,
        "returned": 1,
        "requeued": 0,
        "purged": 0,
    }


def test_outcome_counts_of_an_empty_trail_are_all_zero(queries: AuditQueries) -> None:
    assert queries.outcome_counts() == dict.fromkeys(OUTCOME_STATUSES, 0)


def test_counts_by_type_are_sorted_by_type_then_status_with_unknown_types_last(
    seeded: AuditQueries,
) -> None:
    assert seeded.counts_by_type() == [
        TypeCount("order.placed", "purged", 1),
        TypeCount("user.created", "republished", 2),
        TypeCount("user.created", "requeued", 1),
        TypeCount("user.updated", "returned", 1),
        TypeCount(None, "dead_lettered", 1),
    ]


def test_counts_by_type_only_count_the_window(seeded: AuditQueries) -> None:
    assert seeded.counts_by_type(since=T0 + 3 * MINUTE) == [
        TypeCount("order.placed", "purged", 1),
        TypeCount("user.created", "requeued", 1),
    ]


def test_totals_by_service_count_every_status_per_organization_and_service(
    seeded: AuditQueries,
) -> None:

    zero = dict.fromkeys(OUTCOME_STATUSES, 0)

    assert seeded.totals_by_service() == {
        ("acme", "petisco"): {**zero, "republished": 1, "returned": 1, "requeued": 1},
        ("acme", "billing"): {**zero, "republished": 1},
        ("globex", "shop"): {**zero, "purged": 1},
        (None, None): {**zero, "dead_lettered": 1},
    }


def finished(run_id: str, started_at: datetime) -> RunReport:
    return RunReport(
        run_id=run_id,
        source_list="domain.events",
        status="completed",
        stop_reason=None,
        republished=1,
        dead_lettered=0,
        returned=0,
        recovered=0,
        started_at=started_at,
        finished_at=started_at + timedelta(seconds=1),
        duration_seconds=1.0,
        worker="host-a:1",
    )


@pytest.fixture
def five_runs(store: SqlAuditStore, queries: AuditQueries) -> AuditQueries:
    for minute in range(5):
        store.finish_run(finished(f"run-{minute}", T0 + minute * MINUTE))
    return queries


def test_runs_come_newest_first_in_pages(five_runs: AuditQueries) -> None:
    pages = [[run.run_id for run in five_runs.runs(limit=2, offset=o)] for o in (0, 2, 4)]

    assert pages == [["run-4", "run-3"], ["run-2", "run-1"], ["run-0"]]


def test_runs_keep_those_started_in_the_window(five_runs: AuditQueries) -> None:
    runs = five_runs.runs(T0 + MINUTE, T0 + 3 * MINUTE)

    assert [run.run_id for run in runs] == ["run-2", "run-1"]


def test_run_returns_the_whole_run_by_its_id(five_runs: AuditQueries) -> None:
    assert five_runs.run("run-2") == RunRow(**asdict(finished("run-2", T0 + 2 * MINUTE)))


def test_run_returns_none_for_an_unknown_run_id(five_runs: AuditQueries) -> None:
    assert five_runs.run("no-such-run") is None
