"""Fixtures for the operator-surface tests (``tests/admin`` and ``tests/cli``).

Every test gets a world of its own on the real services: a Redis key prefix, an organization (so
an exchange ``{organization}.svc``, bound to the ``counter`` before anything is replayed) and a
migrated SQLite audit database in ``tmp_path``. Everything is removed afterwards (the fixtures of
``tests/conftest.py``). Messages fall back the way they do in production: a RabbitMQ bus whose
broker is a closed port hands them to a Redis bus. An unreachable service is a closed port; the
shared services are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import redis

from fallbackbus import (
    DomainEvent,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisDomainEventBus,
    Settings,
)
from fallbackbus.admin import upgrade_database
from fallbackbus.audit import AuditQueries, OutcomeRow, SqlAuditStore
from fallbackbus.envelope import decode
from fallbackbus.redis.keys import ListKeys
from fallbackbus.replay import ReplayReport, replay_list
from tests.support.servers import free_port
from tests.support.services import RABBITMQ_URL, REDIS_URL

SERVICE = "svc"
EVENTS = "domain.events"
PASSWORD = "s3cr3t-pw"
"""Put in every unreachable URL a test uses: it must never be printed."""


class UserCreated(DomainEvent):
    index: int


def closed_port_url(scheme: str, path: str = "") -> str:
    """A URL with a password, on a port nothing listens on: an unreachable service."""
    return f"{scheme}://user:{PASSWORD}@127.0.0.1:{free_port()}{path}"


@dataclass
class World:
    """One test's keys, organization and audit database, with helpers to act on them."""

    redis: redis.Redis
    prefix: str
    organization: str
    audit_url: str

    def settings(self, **overrides: Any) -> Settings:
        """Settings for this world only: the environment is ignored, ``overrides`` win."""
        values: dict[str, Any] = {
            "rabbitmq_url": RABBITMQ_URL,
            "redis_url": REDIS_URL,
            "audit_db_url": self.audit_url,
            "redis_key_prefix": self.prefix,
            "connect_timeout": 1.0,
            "confirm_timeout": 2.0,
            "breaker_cooldown": 0.0,
        }
        values.update(overrides)
        return Settings.from_env({}, **values)

    def environ(self, **overrides: str) -> dict[str, str]:
        """The same world as ``FALLBACKBUS_*`` variables, for the command line."""
        values = {
            "FALLBACKBUS_RABBITMQ_URL": RABBITMQ_URL,
            "FALLBACKBUS_REDIS_URL": REDIS_URL,
            "FALLBACKBUS_AUDIT_DB_URL": self.audit_url,
            "FALLBACKBUS_REDIS_KEY_PREFIX": self.prefix,
            "FALLBACKBUS_REPLAY_LISTS": "domain.events,commands",
            "FALLBACKBUS_REPLAY_ALLOWED_SERVICES": "",
            "FALLBACKBUS_REPLAY_BATCH_SIZE": "500",
            "FALLBACKBUS_CONNECT_TIMEOUT": "1",
            "FALLBACKBUS_CONFIRM_TIMEOUT": "2",
            "FALLBACKBUS_BREAKER_COOLDOWN": "0",
        }
        values.update({f"FALLBACKBUS_{name.upper()}": value for name, value in overrides.items()})
        return values

    def keys(self, list_name: str = EVENTS) -> ListKeys:
        return ListKeys(list_name, self.prefix)

    def fall_back(self, count: int, service: str = SERVICE) -> list[str]:
        """Publish ``count`` events while RabbitMQ is unreachable: they fall back to Redis."""
        broker = RabbitMqConnector(closed_port_url("amqp", "//"), connect_timeout=0.5)
        fallback = RedisDomainEventBus(
            self.organization, service, self.redis, key_prefix=self.prefix
        )
        bus = RabbitMqDomainEventBus(self.organization, service, broker, fallback=fallback)
        events = [UserCreated(index=i) for i in range(count)]
        bus.publish(events)
        broker.close()
        return [event.message_id for event in events]

    def push_raw(self, *entries: bytes, list_name: str = EVENTS) -> None:
        """LPUSH entries as petisco or a careless hand would, oldest first."""
        self.redis.lpush(self.keys(list_name).source, *entries)

    def petisco_entry(self, message_id: str, service: str = SERVICE) -> bytes:
        """An entry as petisco writes it: only organization, service and message."""
        body = (
            f'{{"data": {{"id": "{message_id}", "type": "user.created", '
            '"type_message": "domain_event", "version": 1, '
            '"occurred_on": "2026-01-01 10:00:00.000000", "attributes": {}, "meta": {}}}'
        )
        return (
            f'{{"organization": "{self.organization}", "service": "{service}", "message": {body}}}'
        ).encode()

    def poison_entry(self, service: str = SERVICE) -> bytes:
        """A petisco-style entry replay can never publish (no message id)."""
        return (
            f'{{"organization": "{self.organization}", "service": "{service}", '
            '"message": {"data": {"type": "user.created", "type_message": "domain_event"}}}'
        ).encode()

    def replay(
        self, list_name: str = EVENTS, limit: int | None = None, **overrides: Any
    ) -> ReplayReport:
        return replay_list(list_name, settings=self.settings(**overrides), limit=limit)

    def park(self, count: int) -> list[str]:
        """``count`` events that fall back and that replay parks (their service is not allowed)."""
        ids = self.fall_back(count)
        report = self.replay(replay_allowed_services=("nobody.else",))
        assert report.dead_lettered == count, report
        return ids

    def waiting(self, list_name: str = EVENTS) -> list[bytes]:
        """The source list, oldest first."""
        entries: list[bytes] = self.redis.lrange(self.keys(list_name).source, 0, -1)  # type: ignore[assignment]
        return entries[::-1]

    def waiting_ids(self, list_name: str = EVENTS) -> list[str]:
        return [
            decode(raw, max_bytes=1 << 20).outgoing.message_id for raw in self.waiting(list_name)
        ]

    def outcomes(self, **filters: Any) -> list[OutcomeRow]:
        """Every audit row matching ``filters``, oldest first."""
        store = SqlAuditStore(self.audit_url)
        try:
            return AuditQueries(store).outcomes(limit=10_000, newest_first=False, **filters)
        finally:
            store.dispose()


@pytest.fixture
def world(redis_client: redis.Redis, key_prefix: str, organization: str, sqlite_url: str) -> World:
    """A fresh world with a migrated SQLite audit database."""
    world = World(
        redis=redis_client, prefix=key_prefix, organization=organization, audit_url=sqlite_url
    )
    upgrade_database(world.settings())
    return world
