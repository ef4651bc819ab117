"""Settings: one frozen dataclass built from ``FALLBACKBUS_*`` environment variables.

Every field has a default that works against the services on localhost, so a newcomer needs no
configuration at all. Nothing here opens a connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from fallbackbus.errors import ConfigurationError
from fallbackbus.secrets import mask_url

PREFIX = "FALLBACKBUS_"


@dataclass(frozen=True)
class Settings:
    rabbitmq_url: str = "amqp://guest:guest@localhost:5672//"
    """One URL, or a ``;``-separated list for a cluster (tried in order)."""
    redis_url: str = "redis://localhost:6379/0"
    audit_db_url: str = "sqlite:///fallbackbus-audit.db"
    celery_broker_url: str = ""
    """Celery's own broker; empty means the Redis URL, so beat ticks while RabbitMQ is down."""
    replay_interval: float = 30.0
    replay_batch_size: int = 500
    replay_lists: tuple[str, ...] = ("domain.events", "commands")
    replay_max_entries: int = 100_000
    """At most this many entries per run, so one tick cannot run forever."""
    replay_max_attempts: int = 5
    """Attempts made while RabbitMQ was reachable before an entry is parked as dead letter."""
    replay_lease_seconds: float = 300.0
    """A processing list untouched for this long belongs to a crashed run and is recovered."""
    replay_allowed_services: tuple[str, ...] = ()
    """``organization.service`` pairs replay may publish to; empty allows any."""
    connect_timeout: float = 2.0
    confirm_timeout: float = 5.0
    breaker_cooldown: float = 5.0
    """Seconds publishes skip RabbitMQ after a connection failure, before one probe."""
    max_message_bytes: int = 1_048_576
    redis_key_prefix: str = ""

    def __post_init__(self) -> None:
        positive = {
            "replay_interval": self.replay_interval,
            "replay_batch_size": self.replay_batch_size,
            "replay_max_entries": self.replay_max_entries,
            "replay_max_attempts": self.replay_max_attempts,
            "replay_lease_seconds": self.replay_lease_seconds,
            "connect_timeout": self.connect_timeout,
            "confirm_timeout": self.confirm_timeout,
            "max_message_bytes": self.max_message_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigurationError(f"{PREFIX}{name.upper()} must be > 0, got {value!r}")
        if self.breaker_cooldown < 0:
            raise ConfigurationError(f"{PREFIX}BREAKER_COOLDOWN must be >= 0")
        if not self.replay_lists:
            raise ConfigurationError(f"{PREFIX}REPLAY_LISTS must name at least one list")

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never with a password in them.
        shown = ", ".join(f"{f.name}={_masked(getattr(self, f.name))}" for f in fields(self))
        return f"Settings({shown})"

    @property
    def effective_celery_broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, f.default, raw.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _masked(value: Any) -> str:
    return repr(mask_url(value)) if isinstance(value, str) else repr(value)


def _parse(name: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{PREFIX}{name.upper()}: cannot parse {raw!r}") from exc
    return raw


__all__ = ["Settings"]
