"""The replay service as it runs: a real ``celery worker`` and ``celery beat`` ticking every 1 s.

An outage is made with a FaultProxy between the service and RabbitMQ or PostgreSQL; the test's
own consumer talks to RabbitMQ directly, so it sees exactly what the service published.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fallbackbus import (
    Command,
    DomainEvent,
    RabbitMqCommandBus,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisCommandBus,
    RedisDomainEventBus,
)
from fallbackbus.audit import AuditQueries, SqlAuditStore
from fallbackbus.testing.faultproxy import FaultProxy
from tests.celery.helpers import CeleryProcess, service_env, wait_until
from tests.support.consumer import QueueCounter
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL = 1.0


class OrderPlaced(DomainEvent):
    order_id: str


class ShipOrder(Command):
    order_id: str


def start_service(
    stack: contextlib.ExitStack, names: Names, cwd: Path, *, rabbitmq_url: str, audit_db_url: str
) -> CeleryProcess:
    """Start a worker and beat on ``names``' lists (stopped by ``stack``); returns the worker."""
    env = service_env(
        {
            "FALLBACKBUS_RABBITMQ_URL": rabbitmq_url,
            "FALLBACKBUS_REDIS_URL": REDIS_URL,
            "FALLBACKBUS_AUDIT_DB_URL": audit_db_url,
            "FALLBACKBUS_REDIS_KEY_PREFIX": names.prefix,
            "FALLBACKBUS_REPLAY_INTERVAL": str(INTERVAL),
            "FALLBACKBUS_CONNECT_TIMEOUT": "1",
        }
    )
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    quiet = ["--without-gossip", "--without-mingle", "--hostname", f"{names.organization}@%h"]
    worker = CeleryProcess(
        [*celery, "worker", "--loglevel", "INFO", *quiet],
        env=env,
        cwd=cwd,
        name="worker",
    )
    beat = CeleryProcess([*celery, "beat", "--loglevel", "INFO"], env=env, cwd=cwd, name="beat")
    stack.enter_context(worker)
    stack.enter_context(beat)
    worker.wait_for(" ready.")
    return worker


@pytest.fixture
def store(pg_url: str) -> Iterator[SqlAuditStore]:
    """The test's (empty) audit schema, for the test's own reads."""
    store = SqlAuditStore(pg_url)
    yield store
    store.dispose()


@pytest.mark.timeout(90)
def test_given_messages_fell_back_during_an_outage_when_rabbitmq_returns_then_each_arrives_once(
    names: Names,
    pg_url: str,
    tmp_path: Path,
    redis_client: redis.Redis,
    store: SqlAuditStore,
    counter: QueueCounter,
    rabbitmq_proxy: FaultProxy,
) -> None:
    queries = AuditQueries(store)
    rabbitmq_proxy.refuse()
    rabbitmq = rabbitmq_proxy.url_for(RABBITMQ_URL)
    with contextlib.ExitStack() as stack:
        # Given: the service runs (and migrated the empty schema) while RabbitMQ is down, and
        # what the applications published meanwhile fell back to Redis.
        worker = start_service(stack, names, tmp_path, rabbitmq_url=rabbitmq, audit_db_url=pg_url)
        assert "upgraded to revision" in worker.output
        connector = RabbitMqConnector(rabbitmq, connect_timeout=1)
        stack.callback(connector.close)
        org, service, prefix = names.organization, names.service, names.prefix
        events = RabbitMqDomainEventBus(
            org, service, connector,
            fallback=RedisDomainEventBus(org, service, redis_client, key_prefix=prefix),
        )  # fmt: skip
        commands = RabbitMqCommandBus(
            org, service, connector,
            fallback=RedisCommandBus(org, service, redis_client, key_prefix=prefix),
        )  # fmt: skip
        sent_events = [OrderPlaced(order_id=str(i)) for i in range(40)]
        sent_commands = [ShipOrder(order_id=str(i)) for i in range(10)]
        events.publish(sent_events)
        commands.dispatch(sent_commands)
        assert redis_client.llen(f"{prefix}domain.events") == len(sent_events)
        assert redis_client.llen(f"{prefix}commands") == len(sent_commands)
        wait_until(
            lambda: [
                run
                for run in queries.runs()
                if (run.stop_reason or "").startswith("RabbitMQ unavailable")
            ],
            timeout=10 * INTERVAL,
            what="a replay run to stop on the RabbitMQ outage",
        )
        assert counter.received == 0

        # When: RabbitMQ is reachable again.
        rabbitmq_proxy.pass_through()

        # Then: within a few intervals every message arrives, exactly once, and is audited.
        expected = {m.message_id for m in [*sent_events, *sent_commands]}
        counter.drain(expected=len(expected), timeout=10 * INTERVAL)
        counter.drain(timeout=2 * INTERVAL, idle=2 * INTERVAL)  # stragglers would be duplicates
        assert dict(counter.ids) == dict.fromkeys(expected, 1)
        assert redis_client.llen(f"{prefix}domain.events") == 0
        assert redis_client.llen(f"{prefix}commands") == 0
        republished = wait_until(
            lambda: queries.outcomes(statuses=["republished"], limit=10 * len(expected)),
            timeout=5,
            what="the audit rows of the replayed messages",
        )
        assert sorted(row.message_id for row in republished) == sorted(expected)


@pytest.mark.timeout(60)
def test_given_the_audit_database_is_down_when_the_worker_starts_then_it_waits_and_claims_nothing(
    names: Names,
    pg_url: str,
    tmp_path: Path,
    redis_client: redis.Redis,
    store: SqlAuditStore,
    counter: QueueCounter,
    postgres_proxy: FaultProxy,
) -> None:
    store.upgrade()
    postgres_proxy.refuse()
    event = OrderPlaced(order_id="o-1")
    RedisDomainEventBus(
        names.organization, names.service, redis_client, key_prefix=names.prefix
    ).publish(event)
    with contextlib.ExitStack() as stack:
        # Given: the worker starts while PostgreSQL cannot be reached.
        worker = start_service(
            stack,
            names,
            tmp_path,
            rabbitmq_url=RABBITMQ_URL,
            audit_db_url=postgres_proxy.url_for(pg_url),
        )

        # Then: it keeps running, and its runs stop before claiming anything.
        assert "audit schema not upgraded" in worker.output
        worker.wait_for("audit database unavailable", timeout=10 * INTERVAL)
        assert redis_client.llen(f"{names.prefix}domain.events") == 1
        assert counter.received == 0

        # When: the database is back, the next tick replays (and audits) the waiting entry.
        postgres_proxy.pass_through()
        counter.drain(expected=1, timeout=10 * INTERVAL)
        assert dict(counter.ids) == {event.message_id: 1}
        # Published first, audited next: the row may land a moment after the message.
        rows = wait_until(
            lambda: AuditQueries(store).outcomes(message_id=event.message_id),
            timeout=5,
            what="the audit row of the replayed message",
        )
        assert [row.status for row in rows] == ["republished"]
