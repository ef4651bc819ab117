"""Replay runs killed with SIGKILL at each step, and several runs draining one list at once.

The runs under test live in child processes (``tests/replay/_child.py``) so that a real SIGKILL
hits them: no ``finally``, no clean-up, exactly what an OOM kill or a lost host does. A drain
killed at random points again and again is fault scenario 2 (``tests/faults``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from fallbackbus.audit import SqlAuditStore
from fallbackbus.replay import Replayer, ReplayReport
from tests.replay.conftest import Backlog, Child, entry_ids, received_ids, republished
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration

BATCH = 100


@pytest.fixture
def stalled(
    children: Callable[..., Child], key_prefix: str, sqlite_url: str
) -> Callable[..., Child]:
    """``stalled(step, nth, lease_seconds)``: a run in batches of 100, stopped inside its ``nth``
    ``step`` call (``"publish"``: claimed, nothing sent; ``"record"``: confirmed, not yet audited
    nor deleted), waiting to be SIGKILLed."""

    def start(step: str, nth: int, lease_seconds: float) -> Child:
        child = children(
            prefix=key_prefix,
            audit_url=sqlite_url,
            lease_seconds=lease_seconds,
            batch_size=BATCH,
            stall=step,
            stall_on=nth,
        )
        child.expect("STALLED")
        return child

    return start


@pytest.fixture
def recover(
    backlog: Backlog, sqlite_audit: SqlAuditStore, make_replayer: Callable[..., Replayer]
) -> Callable[[], ReplayReport]:
    """Once the dead run's 1 s lease has expired, one more run drains the list."""

    def run() -> ReplayReport:
        backlog.wait_for_leases_to_expire()
        replayer = make_replayer(sqlite_audit, replay_lease_seconds=1.0)
        return replayer.run(backlog.keys.name, batch_size=BATCH)

    return run


def claimed_batches(backlog: Backlog) -> list[list[str]]:
    """The ids in each processing list (a claimed, unfinished batch)."""
    return [entry_ids(entries) for entries in backlog.processing_lists().values()]


@pytest.mark.parametrize(
    ("step", "confirmed"),
    [
        pytest.param("publish", False, id="killed-between-claim-and-publish"),
        pytest.param("record", True, id="killed-after-publish-before-audit-and-delete"),
    ],
)
def test_a_run_killed_mid_batch_is_recovered_after_its_lease_in_order_and_audited_once(
    step: str,
    confirmed: bool,
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    stalled: Callable[..., Child],
    recover: Callable[[], ReplayReport],
    account: Callable[..., Ledger],
) -> None:
    # Given 1,000 entries and a run killed inside its third batch of 100: after claiming it and
    # before publishing it, or once RabbitMQ ``confirmed`` it, before it wrote that batch's
    # audit rows and deleted the entries
    ids = backlog.add(1000, organization)
    sent = ids[: 3 * BATCH] if confirmed else ids[: 2 * BATCH]
    child = stalled(step, 3, lease_seconds=1.0)
    counter.drain(expected=len(sent), timeout=5)
    child.kill()

    # Then the claimed batch sits in the dead run's processing list, the rest in the source
    assert received_ids(counter) == sent
    assert claimed_batches(backlog) == [ids[2 * BATCH : 3 * BATCH]]
    assert entry_ids(backlog.entries()) == ids[3 * BATCH :]
    backlog.assert_counters_balance()

    # When its lease has expired and another run starts
    report = recover()
    twice = ids[2 * BATCH : 3 * BATCH] if confirmed else []
    counter.drain(expected=len(ids) + len(twice), timeout=10)

    # Then that run recovers the batch first and everything arrives in original order, only a
    # batch RabbitMQ had confirmed a second time; every id has one audit row
    assert (report.status, report.recovered, report.republished) == ("completed", BATCH, 800)
    assert list(dict.fromkeys(received_ids(counter))) == ids
    assert sorted(counter.duplicates()) == sorted(twice)
    assert republished(sqlite_audit) == dict.fromkeys(ids, 1)
    assert backlog.processing_lists() == {}
    assert backlog.client.zcard(backlog.keys.leases) == 0
    backlog.assert_counters_balance()
    ledger = account(ids, allow_duplicates=confirmed)
    assert ledger.duplicate_count() <= BATCH


def test_a_live_runs_processing_list_is_not_taken_by_another_run_before_its_lease_expires(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    stalled: Callable[..., Child],
    account: Callable[..., Ledger],
) -> None:
    # Given a run (with a 60 s lease) that has claimed a batch and is slow to publish it
    ids = backlog.add(500, organization)
    child = stalled("publish", 1, lease_seconds=60.0)

    # When another run drains the same list meanwhile
    report = make_replayer(sqlite_audit).run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids) - BATCH, timeout=10)

    # Then it leaves the live run's batch alone and drains only the rest
    assert (report.recovered, report.republished) == (0, len(ids) - BATCH)
    assert received_ids(counter) == ids[BATCH:]
    assert claimed_batches(backlog) == [ids[:BATCH]]
    child.kill()
    account(ids)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_drains_of_one_backlog_lose_nothing_and_duplicate_nothing(
    workers: int,
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    pg_url: str,
    pg_audit: SqlAuditStore,
    children: Callable[..., Child],
    key_prefix: str,
    account: Callable[..., Ledger],
) -> None:
    # Given 20,000 entries and several replay processes, audited in one PostgreSQL database
    ids = backlog.add(20_000, organization)
    runs = [
        children(prefix=key_prefix, audit_url=pg_url, batch_size=500, wait_for_go=True)
        for _ in range(workers)
    ]
    for run in runs:
        run.expect("READY")

    # When they all drain the list at the same moment
    for run in runs:
        run.say("go")
    reports = [json.loads(run.expect("REPORT", timeout=120)) for run in runs]
    counter.drain(expected=len(ids), timeout=60)

    # Then every entry is republished exactly once and audited exactly once
    assert [r["status"] for r in reports] == ["completed"] * workers
    assert sum(r["republished"] for r in reports) == len(ids)
    assert all(r["republished"] > 0 for r in reports), "some worker never got a batch"
    assert counter.duplicates() == {}
    assert set(counter.ids) == set(ids)
    assert republished(pg_audit) == dict.fromkeys(ids, 1)
    assert backlog.entries() == []
    assert backlog.processing_lists() == {}
    backlog.assert_counters_balance()
    account(ids)
