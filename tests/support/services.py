"""The machine's shared RabbitMQ, Redis and PostgreSQL: where they are, and what a test owns there.

A test never touches what it did not make: it gets an organization (so exchanges) and a Redis key
prefix of its own (see ``tests/conftest.py``) and deletes them afterwards with the helpers here.
Each URL can be pointed elsewhere with a ``FALLBACKBUS_TEST_*`` variable.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import kombu
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fallbackbus.redis import ListKeys

RABBITMQ_URL = os.environ.get(
    "FALLBACKBUS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"
)
REDIS_URL = os.environ.get("FALLBACKBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get(
    "FALLBACKBUS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def unique(length: int = 8) -> str:
    """A random token for a name no other test (or run) uses."""
    return uuid.uuid4().hex[:length]


@dataclass(frozen=True)
class Names:
    """One test's organization, service and Redis key prefix."""

    organization: str
    service: str
    prefix: str

    @property
    def exchange(self) -> str:
        return f"{self.organization}.{self.service}"

    def keys(self, list_name: str = "domain.events") -> ListKeys:
        return ListKeys(list_name, self.prefix)


def strict_redis(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails at once instead of retrying behind our back, so each fault shows."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def delete_keys(client: redis.Redis, *patterns: str) -> None:
    """Delete every key matching any of ``patterns`` (SCAN, so the shared Redis never blocks)."""
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


def delete_exchange(name: str) -> None:
    """Delete a test's exchange (deleting one that does not exist is no error)."""
    with kombu.Connection(RABBITMQ_URL) as connection:
        kombu.Exchange(name, "topic", durable=True)(connection.default_channel).delete()
