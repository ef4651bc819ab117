"""The replay service as it runs: a real ``celery worker`` and ``celery beat`` ticking every 1 s.

An outage is made with a FaultProxy between the service and RabbitMQ or PostgreSQL; the test's
own consumer talks to RabbitMQ directly, so it sees exactly what the service published.
"""

from __future__ import annotations

import contextlib
import sys
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
from tests.celery.helpers import (
    RABBITMQ_URL,
    REDIS_URL,
    CeleryProcess,
    Names,
    service_env,
    wait_until,
)
from tests.support.consumer import QueueCounter
from tests.support.faultproxy import FaultProxy

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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_given_messages_fell_back_during_an_outage_when_rabbitmq_returns_then_each_arrives_once(
    names: Names, pg_audit_url: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        client = redis.Redis.from_url(REDIS_URL)
        stack.callback(client.close)
        store = SqlAuditStore(pg_audit_url)
        stack.callback(store.dispose)
        queries = AuditQueries(store)
        counter = stack.enter_context(QueueCounter(names.exchange))  # bound before publishing
        stack.callback(counter.delete_exchange)
        proxy = stack.enter_context(FaultProxy("127.0.0.1", 5672))
        proxy.refuse()
        rabbitmq = proxy.url_for(RABBITMQ_URL)

        # Given: the service runs (and migrated the empty schema) while RabbitMQ is down, and
        # what the applications published meanwhile fell back to Redis.
        worker = start_service(
            stack, names, tmp_path, rabbitmq_url=rabbitmq, audit_db_url=pg_audit_url
        )
        assert "upgraded to revision" in worker.output
        connector = RabbitMqConnector(rabbitmq, connect_timeout=1)
        stack.callback(connector.close)
        org, service, prefix = names.organization, names.service, names.prefix
        events = RabbitMqDomainEventBus(
            org, service, connector,
            fallback=RedisDomainEventBus(org, service, client, key_prefix=prefix),
        )  # fmt: skip
        commands = RabbitMqCommandBus(
            org, service, connector,
            fallback=RedisCommandBus(org, service, client, key_prefix=prefix),
        )  # fmt: skip
        sent_events = [OrderPlaced(order_id=str(i)) for i in range(40)]
        sent_commands = [ShipOrder(order_id=str(i)) for i in range(10)]
        events.publish(sent_events)
        commands.dispatch(sent_commands)
        assert client.llen(f"{prefix}domain.events") == len(sent_events)
        assert client.llen(f"{prefix}commands") == len(sent_commands)
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
        proxy.pass_through()

        # Then: within a few intervals every message arrives, exactly once, and is audited.
        expected = {m.message_id for m in [*sent_events, *sent_commands]}
        counter.drain(expected=len(expected), timeout=10 * INTERVAL)
        counter.drain(timeout=2 * INTERVAL, idle=2 * INTERVAL)  # stragglers would be duplicates
        assert dict(counter.ids) == dict.fromkeys(expected, 1)
        assert client.llen(f"{prefix}domain.events") == 0
        assert client.llen(f"{prefix}commands") == 0
        republished = wait_until(
            lambda: queries.outcomes(statuses=["republished"], limit=10 * len(expected)),
            timeout=5,
            what="the audit rows of the replayed messages",
        )
        assert sorted(row.message_id for row in republished) == sorted(expected)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_given_the_audit_database_is_down_when_the_worker_starts_then_it_waits_and_claims_nothing(
    names: Names, pg_audit_url: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        client = redis.Redis.from_url(REDIS_URL)
        stack.callback(client.close)
        counter = stack.enter_context(QueueCounter(names.exchange))
        stack.callback(counter.delete_exchange)
        store = SqlAuditStore(pg_audit_url)
        stack.callback(store.dispose)
        store.upgrade()
        proxy = stack.enter_context(FaultProxy("127.0.0.1", 5432))
        proxy.refuse()
        event = OrderPlaced(order_id="o-1")
        RedisDomainEventBus(
            names.organization, names.service, client, key_prefix=names.prefix
        ).publish(event)

        # Given: the worker starts while PostgreSQL cannot be reached.
        worker = start_service(
            stack,
            names,
            tmp_path,
            rabbitmq_url=RABBITMQ_URL,
            audit_db_url=proxy.url_for(pg_audit_url),
        )

        # Then: it keeps running, and its runs stop before claiming anything.
        assert "audit schema not upgraded" in worker.output
        worker.wait_for("audit database unavailable", timeout=10 * INTERVAL)
        assert client.llen(f"{names.prefix}domain.events") == 1
        assert counter.received == 0

        # When: the database is back, the next tick replays (and audits) the waiting entry.
        proxy.pass_through()
        counter.drain(expected=1, timeout=10 * INTERVAL)
        assert dict(counter.ids) == {event.message_id: 1}
        # Published first, audited next: the row may land a moment after the message.
        rows = wait_until(
            lambda: AuditQueries(store).outcomes(message_id=event.message_id),
            timeout=5,
            what="the audit row of the replayed message",
        )
        assert [row.status for row in rows] == ["republished"]
