"""The replay tasks and the worker's start-up migration, called in-process."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from fallbackbus import DomainEvent, RedisDomainEventBus
from fallbackbus.audit import SqlAuditStore
from fallbackbus.replay import ReplayReport, replay_list
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tasks.app import upgrade_audit_schema
from tasks.replay import replay, replay_domain_events
from tests.support.consumer import QueueCounter
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names


class ParcelShipped(DomainEvent):
    parcel_id: str


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, names: Names, sqlite_url: str) -> None:
    """What the worker's environment would hold, for tasks called in this process."""
    monkeypatch.setenv("FALLBACKBUS_RABBITMQ_URL", RABBITMQ_URL)
    monkeypatch.setenv("FALLBACKBUS_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("FALLBACKBUS_AUDIT_DB_URL", sqlite_url)
    monkeypatch.setenv("FALLBACKBUS_REDIS_KEY_PREFIX", names.prefix)


@pytest.mark.integration
@pytest.mark.usefixtures("service_env")
def test_given_a_run_holds_the_lock_when_another_tick_comes_then_it_returns_skipped_at_once(
    names: Names, sqlite_url: str, redis_client: redis.Redis, counter: QueueCounter
) -> None:
    SqlAuditStore(sqlite_url).upgrade()
    event = ParcelShipped(parcel_id="p-1")
    RedisDomainEventBus(
        names.organization, names.service, redis_client, key_prefix=names.prefix
    ).publish(event)
    inside, release = threading.Event(), threading.Event()
    first: list[ReplayReport] = []

    def hold_the_lock(_: ReplayReport) -> None:
        inside.set()
        release.wait(timeout=10)

    def first_run() -> None:
        first.append(replay_list("domain.events", on_batch=hold_the_lock))

    holder = threading.Thread(target=first_run, daemon=True)
    holder.start()
    try:
        assert inside.wait(timeout=10), "the first run never reached its first batch"

        started = time.monotonic()
        second = replay_domain_events()
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(timeout=10)
    counter.drain(expected=1, timeout=5)

    assert second["status"] == "skipped"
    assert second["republished"] == 0
    assert elapsed < 1.0
    assert [(r.status, r.republished) for r in first] == [("completed", 1)]
    assert dict(counter.ids) == {event.message_id: 1}


@pytest.mark.parametrize(
    "bad", [("",), (" ",), (None,), ("domain.events", 0), ("domain.events", "9")]
)
def test_given_bad_arguments_when_the_generic_task_runs_then_it_refuses_before_any_io(
    bad: tuple[object, ...],
) -> None:
    with pytest.raises(ValueError, match="must be"):
        replay(*bad)


def test_given_an_empty_database_when_the_worker_starts_then_the_audit_schema_is_migrated(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqlAuditStore(sqlite_url)
    settings = Settings(audit_db_url=sqlite_url)

    with caplog.at_level(logging.INFO, logger="tasks.app"):
        upgrade_audit_schema(settings)
        upgrade_audit_schema(settings)

    assert store.current_revision() == store.head_revision()
    messages = [record.getMessage() for record in caplog.records]
    assert "upgrading audit schema" in messages[0]
    assert "upgraded to revision" in messages[1]
    assert "is up to date" in messages[2]
    store.dispose()


@pytest.mark.integration
def test_given_an_unreachable_database_when_the_worker_starts_then_it_warns_and_carries_on(
    caplog: pytest.LogCaptureFixture, postgres_proxy: FaultProxy
) -> None:
    postgres_proxy.refuse()
    url = postgres_proxy.url_for("postgresql+psycopg://postgres:secret@127.0.0.1:5432/test")
    with caplog.at_level(logging.INFO, logger="tasks.app"):
        upgrade_audit_schema(Settings(audit_db_url=url, connect_timeout=1))

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "audit schema not upgraded" in warning.getMessage()
    assert "secret" not in caplog.text
