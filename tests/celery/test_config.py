"""celeryconfig.py follows the FALLBACKBUS_ environment, and the app registers the named tasks."""

from __future__ import annotations

import os
import runpy
from typing import Any

import pytest

import tasks
from tests.celery.helpers import ROOT


def load_celeryconfig(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """celeryconfig's settings as a worker started with exactly ``env`` would read them."""
    for name in [n for n in os.environ if n.startswith("FALLBACKBUS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"FALLBACKBUS_{name}", value)
    return runpy.run_path(str(ROOT / "celeryconfig.py"))


def test_given_no_environment_when_loaded_then_each_default_list_is_replayed_every_30_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_celeryconfig(monkeypatch)

    assert config["beat_schedule"] == {
        "replay domain.events": {
            "task": "fallbackbus.replay.domain_events",
            "schedule": 30.0,
            "args": (),
            "options": {"expires": 30.0},
        },
        "replay commands": {
            "task": "fallbackbus.replay.commands",
            "schedule": 30.0,
            "args": (),
            "options": {"expires": 30.0},
        },
    }


def test_given_replay_lists_and_interval_when_loaded_then_every_list_gets_an_entry_that_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_celeryconfig(
        monkeypatch, REPLAY_LISTS="domain.events, events ,audit.retries", REPLAY_INTERVAL="7.5"
    )

    schedule = config["beat_schedule"]
    assert list(schedule) == ["replay domain.events", "replay events", "replay audit.retries"]
    assert schedule["replay events"] == {
        "task": "fallbackbus.replay.list",
        "schedule": 7.5,
        "args": ("events",),
        "options": {"expires": 7.5},
    }
    assert schedule["replay audit.retries"]["args"] == ("audit.retries",)
    assert schedule["replay domain.events"]["task"] == "fallbackbus.replay.domain_events"


@pytest.mark.parametrize(
    ("env", "broker_url"),
    [
        pytest.param(
            {"REDIS_URL": "redis://cache.internal:6380/2", "RABBITMQ_URL": "amqp://rabbit//"},
            "redis://cache.internal:6380/2",
            id="only a Redis URL: that Redis",
        ),
        pytest.param(
            {"REDIS_URL": "redis://cache:6379/0", "CELERY_BROKER_URL": "redis://celery:6379/5"},
            "redis://celery:6379/5",
            id="a Celery broker URL wins over the Redis URL",
        ),
    ],
)
def test_given_urls_when_loaded_then_celery_uses_the_right_redis_as_its_broker(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], broker_url: str
) -> None:
    config = load_celeryconfig(monkeypatch, **env)

    assert config["broker_url"] == broker_url


def test_given_a_lease_when_loaded_then_time_limits_and_visibility_timeout_derive_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_celeryconfig(monkeypatch, REPLAY_LEASE_SECONDS="120")

    assert config["task_time_limit"] == 120
    assert 0 < config["task_soft_time_limit"] < config["task_time_limit"]
    # Redis redelivers a late-acked message after this long: never while its run may still live.
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"]


def test_given_a_key_prefix_when_loaded_then_the_celery_queue_carries_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_celeryconfig(monkeypatch)["task_default_queue"] == "fallbackbus.replay"
    prefixed = load_celeryconfig(monkeypatch, REDIS_KEY_PREFIX="staging:")
    assert prefixed["task_default_queue"] == "staging:fallbackbus.replay"


def test_given_credentials_in_the_urls_when_loaded_then_no_public_setting_shows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_celeryconfig(
        monkeypatch,
        RABBITMQ_URL="amqp://app:hunter2@rabbit//",
        AUDIT_DB_URL="postgresql+psycopg://app:hunter2@db/audit",
    )

    # Celery prints every setting not starting with "_" in `celery report` and on errors.
    public = {name: value for name, value in config.items() if not name.startswith("_")}
    assert "hunter2" not in repr(public)


def test_the_app_is_configured_from_celeryconfig_for_late_acks_json_and_utc() -> None:
    conf = tasks.app.conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.timezone == "UTC"
    assert conf.broker_connection_retry_on_startup is True
    assert conf.task_ignore_result is True


def test_the_app_registers_every_task_that_beat_can_schedule() -> None:
    registered = {name for name in tasks.app.tasks if name.startswith("fallbackbus.")}

    assert registered == {
        "fallbackbus.replay.list",
        "fallbackbus.replay.domain_events",
        "fallbackbus.replay.commands",
    }
    assert {entry["task"] for entry in tasks.app.conf.beat_schedule.values()} <= registered
