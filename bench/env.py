"""The services a run talks to, and throw-away exchanges, queues, Redis keys and audit schemas.

Every figure gets names of its own (unique exchange, queue, Redis key prefix, PostgreSQL schema)
and removes them afterwards, so runs never see each other's messages or rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kombu
import redis
from sqlalchemy import create_engine, make_url, text

from bench.workload import event_routing_key
from fallbackbus import RabbitMqConnector, RabbitMqDomainEventBus, RedisDomainEventBus, Settings
from fallbackbus.audit import SqlAuditStore
from fallbackbus.redis import ListKeys
from fallbackbus.redis.keys import DOMAIN_EVENTS

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ORGANIZATION = "bench"
# Bounds what the bench leaves in the shared broker while a figure runs (the 1,000,000-entry
# replay would otherwise queue 1,000,000 persistent messages). drop-head still routes and
# confirms every message, for fallbackbus and baselines alike.
QUEUE_MAX_LENGTH = 50_000


@dataclass(frozen=True)
class Services:
    rabbitmq_url: str
    redis_url: str
    postgres_url: str

    @classmethod
    def from_env(cls) -> Services:
        """The library's own settings for RabbitMQ and Redis; ``FALLBACKBUS_BENCH_PG_URL``."""
        settings = Settings.from_env()
        return cls(
            rabbitmq_url=settings.rabbitmq_url.split(";")[0].strip(),
            redis_url=settings.redis_url,
            postgres_url=os.environ.get("FALLBACKBUS_BENCH_PG_URL", DEFAULT_PG_URL),
        )


@dataclass(frozen=True)
class Destination:
    """One figure's exchange (``bench.<service>``), the queue bound to it and its Redis keys."""

    service: str
    queue: str
    key_prefix: str
    organization: str = ORGANIZATION

    @property
    def exchange(self) -> str:
        return f"{self.organization}.{self.service}"

    @property
    def routing_key(self) -> str:
        return event_routing_key(self.organization, self.service)

    @property
    def fallback_keys(self) -> ListKeys:
        return ListKeys(DOMAIN_EVENTS, self.key_prefix)


class Environment:
    """Shared clients plus the factories that create and clean up per-figure resources."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.run_tag = uuid.uuid4().hex[:8]
        self.redis = redis.Redis.from_url(services.redis_url)

    def close(self) -> None:
        self.redis.close()

    @contextmanager
    def destination(self, figure: str) -> Iterator[Destination]:
        """A topic exchange with a durable queue bound to ``#`` (so nothing comes back as
        unroutable), and a Redis key prefix; all deleted afterwards."""
        service = f"{figure}-{self.run_tag}"
        dest = Destination(
            service=service,
            queue=f"bench.{service}",
            key_prefix=f"bench:{service}:",
        )
        with kombu.Connection(self.services.rabbitmq_url) as connection:
            channel: Any = connection.channel()
            channel.exchange_declare(dest.exchange, "topic", durable=True, auto_delete=False)
            channel.queue_declare(
                dest.queue,
                durable=True,
                auto_delete=False,
                arguments={"x-max-length": QUEUE_MAX_LENGTH},
            )
            channel.queue_bind(dest.queue, dest.exchange, "#")
            try:
                yield dest
            finally:
                channel.queue_delete(dest.queue)
                channel.exchange_delete(dest.exchange)
                self.delete_keys(dest.key_prefix)

    def queued(self, dest: Destination) -> int:
        """Messages in ``dest``'s queue now (capped by ``QUEUE_MAX_LENGTH``)."""
        with kombu.Connection(self.services.rabbitmq_url) as connection:
            channel: Any = connection.channel()
            return int(channel.queue_declare(dest.queue, passive=True).message_count)

    def delete_keys(self, prefix: str) -> None:
        keys = list(self.redis.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start : start + 1000])

    def fallen_back(self, dest: Destination) -> int:
        return int(self.redis.llen(dest.fallback_keys.source))

    @contextmanager
    def bus(
        self, dest: Destination, rabbitmq_url: str | None = None, **connector: Any
    ) -> Iterator[RabbitMqDomainEventBus]:
        """The documented set-up: a RabbitMQ bus with a Redis fallback bus."""
        conn = RabbitMqConnector(rabbitmq_url or self.services.rabbitmq_url, **connector)
        fallback = RedisDomainEventBus(
            dest.organization, dest.service, self.redis, key_prefix=dest.key_prefix
        )
        try:
            yield RabbitMqDomainEventBus(dest.organization, dest.service, conn, fallback=fallback)
        finally:
            conn.close()

    @contextmanager
    def audit_database(self) -> Iterator[str]:
        """A migrated audit database in a schema of its own, dropped afterwards.

        libpq's ``options`` sets ``search_path`` on every connection the store opens, so the
        tables and Alembic's version table all land in this schema.
        """
        schema = f"fallbackbus_bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(self.services.postgres_url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(self.services.postgres_url).update_query_dict(
                {"options": f"-csearch_path={schema}"}
            )
            rendered = url.render_as_string(hide_password=False)
            store = SqlAuditStore(rendered)
            store.upgrade()
            store.dispose()
            yield rendered
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
