"""Replay runs killed with SIGKILL at each step, and several runs draining one list at once.

The runs under test live in child processes (``tests/replay/_child.py``) so that a real SIGKILL
hits them: no ``finally``, no clean-up, exactly what an OOM kill or a lost host does.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest

from fallbackbus.audit import SqlAuditStore
from fallbackbus.replay import Replayer
from tests.replay.conftest import (
    Backlog,
    Child,
    Tally,
    entry_ids,
    ledger_for,
    outcomes,
    received_ids,
)
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration

BATCH = 100


def first_seen(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_a_run_killed_between_claim_and_publish_is_recovered_after_its_lease_in_order(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_url: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    children: Callable[..., Child],
    key_prefix: str,
    tally: Tally,
) -> None:
    # Given 1,000 entries and a run that is killed after claiming its third batch of 100
    ids = backlog.add(1000, organization)
    child = children(
        prefix=key_prefix,
        audit_url=sqlite_url,
        lease_seconds=1.0,
        batch_size=BATCH,
        stall="publish",
        stall_on=3,
    )
    child.expect("STALLED")
    child.kill()

    # Then the claimed batch sits in the dead run's processing list, the rest in the source
    counter.drain(expected=2 * BATCH, timeout=5)
    assert received_ids(counter) == ids[: 2 * BATCH]
    processing = backlog.processing_lists()
    assert [entry_ids(entries) for entries in processing.values()] == [ids[2 * BATCH : 3 * BATCH]]
    assert entry_ids(backlog.entries()) == ids[3 * BATCH :]
    backlog.assert_counters_balance()

    # When its lease has expired and another run starts
    backlog.wait_for_leases_to_expire()
    report = make_replayer(sqlite_audit, replay_lease_seconds=1.0).run(
        backlog.keys.name, batch_size=BATCH
    )
    counter.drain(expected=len(ids), timeout=10)

    # Then that run recovers the batch first and everything arrives once, in original order
    assert (report.status, report.recovered, report.republished) == ("completed", BATCH, 800)
    assert received_ids(counter) == ids
    republished = Counter(r.message_id for r in outcomes(sqlite_audit) if r.status == "republished")
    assert republished == dict.fromkeys(ids, 1)
    assert backlog.processing_lists() == {}
    assert backlog.client.zcard(backlog.keys.leases) == 0
    backlog.assert_counters_balance()
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_a_run_killed_after_publish_before_delete_is_republished_once_more_and_audited_once(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_url: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    children: Callable[..., Child],
    key_prefix: str,
    tally: Tally,
) -> None:
    # Given 1,000 entries and a run killed once RabbitMQ confirmed its third batch, before it
    # wrote that batch's audit rows and deleted the entries
    ids = backlog.add(1000, organization)
    child = children(
        prefix=key_prefix,
        audit_url=sqlite_url,
        lease_seconds=1.0,
        batch_size=BATCH,
        stall="record",
        stall_on=3,
    )
    child.expect("STALLED")
    counter.drain(expected=3 * BATCH, timeout=5)
    child.kill()
    assert received_ids(counter) == ids[: 3 * BATCH]
    processing = backlog.processing_lists()
    assert [entry_ids(entries) for entries in processing.values()] == [ids[2 * BATCH : 3 * BATCH]]

    # When its lease has expired and another run starts
    backlog.wait_for_leases_to_expire()
    report = make_replayer(sqlite_audit, replay_lease_seconds=1.0).run(
        backlog.keys.name, batch_size=BATCH
    )
    counter.drain(expected=len(ids) + BATCH, timeout=10)

    # Then nothing is lost; only that one batch went out twice; every id has one audit row
    assert (report.status, report.recovered, report.republished) == ("completed", BATCH, 800)
    assert first_seen(received_ids(counter)) == ids
    assert sorted(counter.duplicates()) == sorted(ids[2 * BATCH : 3 * BATCH])
    republished = Counter(r.message_id for r in outcomes(sqlite_audit) if r.status == "republished")
    assert republished == dict.fromkeys(ids, 1)
    backlog.assert_counters_balance()
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost()
    assert ledger.duplicate_count() <= BATCH


def test_a_live_runs_processing_list_is_not_taken_by_another_run_before_its_lease_expires(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_url: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    children: Callable[..., Child],
    key_prefix: str,
    tally: Tally,
) -> None:
    # Given a run (with a 60 s lease) that has claimed a batch and is slow to publish it
    ids = backlog.add(500, organization)
    child = children(
        prefix=key_prefix,
        audit_url=sqlite_url,
        lease_seconds=60.0,
        batch_size=BATCH,
        stall="publish",
        stall_on=1,
    )
    child.expect("STALLED")

    # When another run drains the same list meanwhile
    report = make_replayer(sqlite_audit).run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids) - BATCH, timeout=10)

    # Then it leaves the live run's batch alone and drains only the rest
    assert (report.recovered, report.republished) == (0, len(ids) - BATCH)
    assert received_ids(counter) == ids[BATCH:]
    processing = backlog.processing_lists()
    assert [entry_ids(entries) for entries in processing.values()] == [ids[:BATCH]]
    child.kill()
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


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
    tally: Tally,
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
    republished = Counter(r.message_id for r in outcomes(pg_audit) if r.status == "republished")
    assert republished == dict.fromkeys(ids, 1)
    assert backlog.entries() == []
    assert backlog.processing_lists() == {}
    backlog.assert_counters_balance()
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


@pytest.mark.slow
def test_a_drain_killed_at_random_points_five_times_loses_nothing(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_url: str,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    children: Callable[..., Child],
    key_prefix: str,
    tally: Tally,
) -> None:
    # Given 20,000 entries
    ids = backlog.add(20_000, organization)
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    batch, kills = 500, 5

    # When five runs in a row are SIGKILLed at random moments of their drain
    for _ in range(kills):
        run = children(
            prefix=key_prefix,
            audit_url=sqlite_url,
            lease_seconds=1.0,
            batch_size=batch,
            wait_for_go=True,
        )
        run.expect("READY")
        run.say("go")
        time.sleep(chance.uniform(0.05, 0.4))
        run.kill()
    # ... and, once their leases expire, one more run drains what is left
    backlog.wait_for_leases_to_expire()
    report = make_replayer(sqlite_audit, replay_lease_seconds=1.0).run(
        backlog.keys.name, batch_size=batch
    )
    counter.drain(expected=len(ids), timeout=30)
    counter.drain(timeout=2, idle=0.5)  # stragglers: duplicates

    # Then nothing is lost, at most one batch per kill went out twice, each id is audited
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    assert report.status == "completed", f"seed {seed}"
    assert backlog.entries() == []
    assert backlog.processing_lists() == {}
    ledger.assert_nothing_lost()
    assert ledger.duplicate_count() <= kills * batch, f"seed {seed}: {ledger.summary()}"
    audited = {r.message_id for r in outcomes(sqlite_audit) if r.status == "republished"}
    assert audited == set(ids), f"seed {seed}"
    backlog.assert_counters_balance()
