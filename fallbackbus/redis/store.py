"""The fallback-store role over Redis lists: what the buses write when RabbitMQ cannot take it."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence

import redis as redis_py

from fallbackbus.envelope import encode
from fallbackbus.errors import FallbackUnavailable
from fallbackbus.messages import Outgoing
from fallbackbus.redis import scripts
from fallbackbus.redis.keys import ListKeys, stats_field
from fallbackbus.secrets import describe_error

logger = logging.getLogger(__name__)

_checked_servers: set[str] = set()
_checked_lock = threading.Lock()


class RedisFallbackStore:
    """Stores entries with LPUSH (newest at the head); replay takes from the tail, oldest first."""

    def __init__(self, client: redis_py.Redis, keys: ListKeys) -> None:
        self.client = client
        self.keys = keys
        self._sha: str | None = None
        self._persistence_checked = False

    def store(self, messages: Sequence[Outgoing], reason: str) -> None:
        """Store every message or none, together with the accounting counters."""
        per_service = Counter((m.organization, m.service) for m in messages)
        counters: list[str | int] = []
        for (organization, service), count in per_service.items():
            counters += [stats_field(organization, service, "fell_back"), count]
        entries = [encode(m, reason=reason) for m in messages]
        try:
            self._warn_if_not_persistent()
            # One script: the entries and their fell_back counters land together or not at all.
            self._run_store_script(
                self.keys.source, self.keys.stats, len(per_service), *counters, *entries
            )
        except redis_py.RedisError as exc:
            raise FallbackUnavailable(
                f"Redis could not store {len(messages)} message(s) in "
                f"{self.keys.source!r}: {describe_error(exc)}"
            ) from exc

    def _run_store_script(self, *keys_and_args: str | int | bytes) -> None:
        # EVALSHA called directly: this is the hot path of every fallback write, and redis-py's
        # Script object costs more client CPU per call than the round trip saves.
        if self._sha is None:
            self._sha = str(self.client.script_load(scripts.STORE))
        try:
            self.client.evalsha(self._sha, 2, *keys_and_args)
        except redis_py.exceptions.NoScriptError:
            # The server lost its script cache (restart, SCRIPT FLUSH, failover): load it again.
            self._sha = str(self.client.script_load(scripts.STORE))
            self.client.evalsha(self._sha, 2, *keys_and_args)

    def _warn_if_not_persistent(self) -> None:
        if self._persistence_checked:
            return
        server = _server_name(self.client)
        with _checked_lock:
            if server in _checked_servers:
                self._persistence_checked = True
                return
        enabled = persistence_enabled(self.client)
        if enabled is None:
            return  # could not tell (unreachable, CONFIG disabled): ask again next time
        self._persistence_checked = True
        with _checked_lock:
            if server in _checked_servers:
                return
            _checked_servers.add(server)
        if not enabled:
            logger.warning(
                "Redis at %s has no persistence (no AOF, no RDB snapshots): messages that fall "
                "back to it are only as durable as that server's memory. Enable appendonly.",
                server,
            )


def persistence_enabled(client: redis_py.Redis) -> bool | None:
    """True if AOF or RDB snapshots are on, False if both are off, None if it cannot tell."""
    try:
        info = client.info("persistence")
        if int(info.get("aof_enabled", 0)):
            return True
        try:
            save = client.config_get("save").get("save", "")
        except redis_py.ResponseError:
            return None  # CONFIG is disabled on many managed servers; cannot tell RDB's state
        return bool(str(save).strip())
    except redis_py.RedisError:
        return None


def _server_name(client: redis_py.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{where}/{kwargs.get('db', 0)}"
