"""Replay through outages made with a TCP fault proxy: RabbitMQ refused, cut or hung, and the
audit database down. Every message is counted by id; the shared services are never touched."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from fallbackbus.audit import AuditQueries, SqlAuditStore
from fallbackbus.replay import Replayer, ReplayReport
from tests.replay.conftest import (
    CONFIRM_TIMEOUT,
    CONNECT_TIMEOUT,
    RABBITMQ_URL,
    Backlog,
    Tally,
    delete_exchange,
    entry_ids,
    ledger_for,
    outcomes,
    received_ids,
)
from tests.support.consumer import QueueCounter
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

BATCH = 100


@pytest.fixture
def rabbitmq_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        yield proxy


@pytest.fixture
def postgres_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        yield proxy


def after_first_batch(action: Callable[[], None]) -> Callable[[ReplayReport], None]:
    """An ``on_batch`` hook that breaks something once the first batch is done."""
    done = False

    def hook(report: ReplayReport) -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return hook


# -- RabbitMQ ------------------------------------------------------------------------------------


def test_rabbitmq_going_down_mid_run_stops_it_with_the_unconfirmed_entries_back_untouched_in_order(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    rabbitmq_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given 500 entries and a replayer that reaches RabbitMQ through a proxy
    ids = backlog.add(500, organization)
    before = backlog.entries()
    replayer = make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))

    # When RabbitMQ refuses connections (and resets the open one) after the first batch
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_first_batch(rabbitmq_proxy.refuse)
    )

    # Then the run stops and says why, and every unconfirmed entry is back at the oldest end,
    # byte for byte (attempts not incremented: RabbitMQ never saw them), in original order
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert "RabbitMQ" in report.stop_reason
    assert report.republished == BATCH
    assert backlog.entries() == before[BATCH:]
    assert all(json.loads(raw)["attempts"] == 0 for raw in backlog.entries())
    assert backlog.processing_lists() == {}
    run = AuditQueries(sqlite_audit).run(report.run_id)
    assert run is not None
    assert (run.status, run.stop_reason) == ("stopped", report.stop_reason)
    counter.drain(expected=BATCH, timeout=5)
    assert received_ids(counter) == ids[:BATCH]

    # When RabbitMQ is back and the next run starts
    rabbitmq_proxy.pass_through()
    again = replayer.run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids), timeout=10)

    # Then everything is republished exactly once, oldest first, each with one republished row
    assert (again.status, again.republished) == ("completed", len(ids) - BATCH)
    assert received_ids(counter) == ids
    republished = [row.message_id for row in outcomes(sqlite_audit) if row.status == "republished"]
    assert sorted(republished) == sorted(ids)
    backlog.assert_counters_balance()
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_a_connection_cut_between_batches_costs_one_reconnect_and_no_duplicate(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    rabbitmq_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given 300 entries, replayed through a proxy that resets the pooled connection once
    ids = backlog.add(300, organization)
    replayer = make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))

    # When the connection is cut after the first batch (the broker itself stays up)
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_first_batch(rabbitmq_proxy.cut)
    )
    counter.drain(expected=len(ids), timeout=10)

    # Then the run reconnects and completes; every entry reaches RabbitMQ once, in order
    assert (report.status, report.republished) == ("completed", len(ids))
    assert received_ids(counter) == ids
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


@pytest.mark.slow
def test_a_broker_that_hangs_mid_run_ends_the_run_within_the_confirm_timeout_entries_back_in_order(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    rabbitmq_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given 500 entries replayed through a proxy
    ids = backlog.add(500, organization)
    before = backlog.entries()
    replayer = make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))
    hung_at: list[float] = []

    def hang() -> None:
        rabbitmq_proxy.hang()
        hung_at.append(time.monotonic())

    # When the network black-holes every byte after the first batch
    report = replayer.run(backlog.keys.name, batch_size=BATCH, on_batch=after_first_batch(hang))
    stalled = time.monotonic() - hung_at[0]

    # Then the run gives up within its bounded waits, not a client's default 15 s or forever ...
    assert stalled < CONNECT_TIMEOUT + CONFIRM_TIMEOUT + 1.0
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert "RabbitMQ" in report.stop_reason
    # ... with the unconfirmed entries back, untouched and in order
    assert backlog.entries() == before[BATCH:]
    assert backlog.processing_lists() == {}

    # When the network recovers
    rabbitmq_proxy.pass_through()
    again = replayer.run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids), timeout=10)

    # Then all are republished once, in order (the hung batch never reached RabbitMQ)
    assert again.status == "completed"
    assert received_ids(counter) == ids
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


@pytest.mark.slow
def test_a_broker_that_hangs_does_not_stall_a_run_whose_next_batch_needs_a_new_exchange(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    rabbitmq_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given a batch of one service's events followed by a batch of another service's events
    ids = backlog.add(BATCH, organization)
    ids += backlog.add(BATCH, organization, service="other")
    before = backlog.entries()
    replayer = make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))
    reports: list[ReplayReport] = []
    run = threading.Thread(
        target=lambda: reports.append(
            replayer.run(
                backlog.keys.name,
                batch_size=BATCH,
                on_batch=after_first_batch(rabbitmq_proxy.hang),
            )
        ),
        daemon=True,
    )

    # When the broker hangs after the first batch (the second must declare its exchange first)
    try:
        started = time.monotonic()
        run.start()
        run.join(timeout=CONNECT_TIMEOUT + CONFIRM_TIMEOUT + 2.0)
        blocked = run.is_alive()
        stalled = time.monotonic() - started
    finally:
        rabbitmq_proxy.stop()  # resets the hung link, so a blocked run cannot outlive the test
        run.join(timeout=10)
        delete_exchange(f"{organization}.other")
    counter.drain(expected=BATCH, timeout=2)
    ledger = ledger_for(ids, counter, backlog)  # the second batch waits in the list: not lost
    tally.ledger(ledger)

    # Then the run ended within its bounded waits, with the entries back in order
    assert not blocked, f"replay still blocked after {stalled:.1f} s on a hung broker"
    assert reports[0].status == "stopped"
    assert backlog.entries() == before[BATCH:]
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_a_broker_that_never_answers_stops_the_run_before_anything_is_claimed(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    rabbitmq_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given entries and a broker that accepts TCP and never says a word
    ids = backlog.add(50, organization)
    before = backlog.entries()
    rabbitmq_proxy.hang()
    replayer = make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))

    # When a run starts
    started = time.monotonic()
    report = replayer.run(backlog.keys.name, batch_size=BATCH)

    # Then it stops within the connect timeout without touching the list
    assert time.monotonic() - started < CONNECT_TIMEOUT + 1.0
    assert report.status == "stopped"
    assert backlog.entries() == before
    assert backlog.processing_lists() == {}
    assert outcomes(sqlite_audit) == []
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


# -- the audit database --------------------------------------------------------------------------


def test_a_run_does_not_start_while_the_audit_database_is_down(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    make_audit: Callable[..., SqlAuditStore],
    pg_url: str,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given an audit database in PostgreSQL, reached through a proxy, that is down
    audit = make_audit(postgres_proxy.url_for(pg_url))
    ids = backlog.add(50, organization)
    before = backlog.entries()
    replayer = make_replayer(audit)
    postgres_proxy.refuse()

    # When a run starts
    report = replayer.run(backlog.keys.name, batch_size=10)

    # Then it stops before claiming anything: no republish without an audit row
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert "audit" in report.stop_reason
    assert (report.republished, report.dead_lettered, report.returned) == (0, 0, 0)
    assert backlog.entries() == before
    assert backlog.processing_lists() == {}
    assert backlog.client.zcard(backlog.keys.leases) == 0
    counter.drain(timeout=1, idle=0.3)
    assert counter.received == 0

    # When the database is back
    postgres_proxy.pass_through()
    again = replayer.run(backlog.keys.name, batch_size=10)
    counter.drain(expected=len(ids), timeout=5)

    # Then the next run republishes and audits everything once
    assert (again.status, again.republished) == ("completed", len(ids))
    assert received_ids(counter) == ids
    assert sorted(row.message_id for row in outcomes(audit)) == sorted(ids)
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)


def test_the_audit_database_failing_mid_run_deletes_nothing_without_its_audit_row(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    make_audit: Callable[..., SqlAuditStore],
    pg_url: str,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given 500 entries and a PostgreSQL audit database reached through a proxy
    ids = backlog.add(500, organization)
    audit = make_audit(postgres_proxy.url_for(pg_url))
    replayer = make_replayer(audit)

    # When the database goes away after the first batch
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_first_batch(postgres_proxy.refuse)
    )
    waiting = entry_ids(backlog.entries())
    in_processing = backlog.processing_lists()
    counter.drain(expected=2 * BATCH, timeout=5)

    # Then the run stops and says why; the batch it published but could not audit is back
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert "audit" in report.stop_reason
    assert in_processing == {}
    assert waiting == ids[BATCH:]
    postgres_proxy.pass_through()
    audited = {row.message_id for row in outcomes(audit) if row.status == "republished"}
    assert audited == set(ids[:BATCH])
    # every entry is either still waiting or audited, never both, never neither
    assert audited.isdisjoint(waiting)
    assert audited | set(waiting) == set(ids)

    # When the next run drains the rest
    again = replayer.run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids) + BATCH, timeout=10)

    # Then nothing is lost, at most that one batch went out twice, and each id has one row
    assert again.status == "completed"
    assert Counter(row.message_id for row in outcomes(audit)) == dict.fromkeys(ids, 1)
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost()
    assert ledger.duplicate_count() <= BATCH
    assert sorted(counter.duplicates()) == sorted(ids[BATCH : 2 * BATCH])


def test_an_audit_connection_cut_between_batches_is_replaced_and_the_run_completes(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    make_audit: Callable[..., SqlAuditStore],
    pg_url: str,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    tally: Tally,
) -> None:
    # Given 300 entries and a PostgreSQL audit database reached through a proxy
    ids = backlog.add(300, organization)
    audit = make_audit(postgres_proxy.url_for(pg_url))

    # When the pooled database connection is reset after the first batch (the server stays up)
    report = make_replayer(audit).run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_first_batch(postgres_proxy.cut)
    )
    counter.drain(expected=len(ids), timeout=10)

    # Then the store reconnects: the run completes, each entry published and audited once
    assert (report.status, report.republished) == ("completed", len(ids))
    assert received_ids(counter) == ids
    assert Counter(row.message_id for row in outcomes(audit)) == dict.fromkeys(ids, 1)
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    ledger.assert_nothing_lost(allow_duplicates=False)
