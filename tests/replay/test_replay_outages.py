"""Replay through outages made with a TCP fault proxy: RabbitMQ refused, cut or hung, and the
audit database down. Every message is counted by id; the shared services are never touched.
A broker that hangs before a batch that needs a new exchange is fault scenario 7 (``tests/faults``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import pytest

from fallbackbus.audit import AuditQueries, SqlAuditStore
from fallbackbus.replay import Replayer
from fallbackbus.testing.faultproxy import FaultProxy
from tests.replay.conftest import (
    CONFIRM_TIMEOUT,
    CONNECT_TIMEOUT,
    Backlog,
    assert_stopped,
    entry_ids,
    outcomes,
    received_ids,
    republished,
)
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter
from tests.support.replay import after_batches
from tests.support.services import RABBITMQ_URL

pytestmark = pytest.mark.integration

BATCH = 100

Account = Callable[..., Ledger]


@pytest.fixture
def replayer(
    make_replayer: Callable[..., Replayer], sqlite_audit: SqlAuditStore, rabbitmq_proxy: FaultProxy
) -> Replayer:
    """A replayer, audited in SQLite, that reaches RabbitMQ through ``rabbitmq_proxy``."""
    return make_replayer(sqlite_audit, rabbitmq_url=rabbitmq_proxy.url_for(RABBITMQ_URL))


@pytest.fixture
def proxied_audit(
    make_audit: Callable[..., SqlAuditStore], pg_url: str, postgres_proxy: FaultProxy
) -> SqlAuditStore:
    """An audit database in PostgreSQL, reached through ``postgres_proxy``."""
    return make_audit(postgres_proxy.url_for(pg_url))


# -- RabbitMQ ------------------------------------------------------------------------------------


def test_rabbitmq_going_down_mid_run_stops_it_with_the_unconfirmed_entries_back_untouched_in_order(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    replayer: Replayer,
    rabbitmq_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given 500 entries and a replayer that reaches RabbitMQ through a proxy
    ids = backlog.add(500, organization)
    before = backlog.entries()

    # When RabbitMQ refuses connections (and resets the open one) after the first batch
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_batches(1, rabbitmq_proxy.refuse)
    )

    # Then the run stops and says why, and every unconfirmed entry is back at the oldest end,
    # byte for byte (attempts not incremented: RabbitMQ never saw them), in original order
    assert_stopped(report, because="RabbitMQ")
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
    assert republished(sqlite_audit) == dict.fromkeys(ids, 1)
    backlog.assert_counters_balance()
    account(ids)


def test_a_connection_cut_between_batches_costs_one_reconnect_and_no_duplicate(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    replayer: Replayer,
    rabbitmq_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given 300 entries, replayed through a proxy that resets the pooled connection once
    ids = backlog.add(300, organization)

    # When the connection is cut after the first batch (the broker itself stays up)
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_batches(1, rabbitmq_proxy.cut)
    )
    counter.drain(expected=len(ids), timeout=10)

    # Then the run reconnects and completes; every entry reaches RabbitMQ once, in order
    assert (report.status, report.republished) == ("completed", len(ids))
    assert received_ids(counter) == ids
    account(ids)


@pytest.mark.slow
def test_a_broker_that_hangs_mid_run_ends_the_run_within_the_confirm_timeout_entries_back_in_order(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    replayer: Replayer,
    rabbitmq_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given 500 entries replayed through a proxy
    ids = backlog.add(500, organization)
    before = backlog.entries()
    hung_at: list[float] = []

    def hang() -> None:
        rabbitmq_proxy.hang()
        hung_at.append(time.monotonic())

    # When the network black-holes every byte after the first batch
    report = replayer.run(backlog.keys.name, batch_size=BATCH, on_batch=after_batches(1, hang))
    stalled = time.monotonic() - hung_at[0]

    # Then the run gives up within its bounded waits, not a client's default 15 s or forever ...
    assert stalled < CONNECT_TIMEOUT + CONFIRM_TIMEOUT + 1.0
    assert_stopped(report, because="RabbitMQ")
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
    account(ids)


def test_a_broker_that_never_answers_stops_the_run_before_anything_is_claimed(
    backlog: Backlog,
    organization: str,
    sqlite_audit: SqlAuditStore,
    replayer: Replayer,
    rabbitmq_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given entries and a broker that accepts TCP and never says a word
    ids = backlog.add(50, organization)
    before = backlog.entries()
    rabbitmq_proxy.hang()

    # When a run starts
    started = time.monotonic()
    report = replayer.run(backlog.keys.name, batch_size=BATCH)

    # Then it stops within the connect timeout without touching the list
    assert time.monotonic() - started < CONNECT_TIMEOUT + 1.0
    assert report.status == "stopped"
    assert backlog.entries() == before
    assert backlog.processing_lists() == {}
    assert outcomes(sqlite_audit) == []
    account(ids)


# -- the audit database --------------------------------------------------------------------------


def test_a_run_does_not_start_while_the_audit_database_is_down(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    proxied_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given an audit database in PostgreSQL, reached through a proxy, that is down
    ids = backlog.add(50, organization)
    before = backlog.entries()
    replayer = make_replayer(proxied_audit)
    postgres_proxy.refuse()

    # When a run starts
    report = replayer.run(backlog.keys.name, batch_size=10)

    # Then it stops before claiming anything: no republish without an audit row
    assert_stopped(report, because="audit")
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
    assert sorted(row.message_id for row in outcomes(proxied_audit)) == sorted(ids)
    account(ids)


def test_the_audit_database_failing_mid_run_deletes_nothing_without_its_audit_row(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    proxied_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given 500 entries and a PostgreSQL audit database reached through a proxy
    ids = backlog.add(500, organization)
    replayer = make_replayer(proxied_audit)

    # When the database goes away after the first batch
    report = replayer.run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_batches(1, postgres_proxy.refuse)
    )
    waiting = entry_ids(backlog.entries())
    in_processing = backlog.processing_lists()
    counter.drain(expected=2 * BATCH, timeout=5)

    # Then the run stops and says why; the batch it published but could not audit is back
    assert_stopped(report, because="audit")
    assert in_processing == {}
    assert waiting == ids[BATCH:]
    postgres_proxy.pass_through()
    audited = {row.message_id for row in outcomes(proxied_audit) if row.status == "republished"}
    assert audited == set(ids[:BATCH])
    # every entry is either still waiting or audited, never both, never neither
    assert audited.isdisjoint(waiting)
    assert audited | set(waiting) == set(ids)

    # When the next run drains the rest
    again = replayer.run(backlog.keys.name, batch_size=BATCH)
    counter.drain(expected=len(ids) + BATCH, timeout=10)

    # Then nothing is lost, at most that one batch went out twice, and each id has one row
    assert again.status == "completed"
    assert Counter(row.message_id for row in outcomes(proxied_audit)) == dict.fromkeys(ids, 1)
    ledger = account(ids, allow_duplicates=True)
    assert ledger.duplicate_count() <= BATCH
    assert sorted(counter.duplicates()) == sorted(ids[BATCH : 2 * BATCH])


def test_an_audit_connection_cut_between_batches_is_replaced_and_the_run_completes(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    proxied_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    postgres_proxy: FaultProxy,
    account: Account,
) -> None:
    # Given 300 entries and a PostgreSQL audit database reached through a proxy
    ids = backlog.add(300, organization)

    # When the pooled database connection is reset after the first batch (the server stays up)
    report = make_replayer(proxied_audit).run(
        backlog.keys.name, batch_size=BATCH, on_batch=after_batches(1, postgres_proxy.cut)
    )
    counter.drain(expected=len(ids), timeout=10)

    # Then the store reconnects: the run completes, each entry published and audited once
    assert (report.status, report.republished) == ("completed", len(ids))
    assert received_ids(counter) == ids
    assert Counter(row.message_id for row in outcomes(proxied_audit)) == dict.fromkeys(ids, 1)
    account(ids)
