"""Redis clients with bounded waits: redis-py's defaults wait forever on a hung server."""

from __future__ import annotations

import redis as redis_py

from fallbackbus.settings import Settings


def redis_from_url(
    url: str | None = None, *, settings: Settings | None = None, timeout: float | None = None
) -> redis_py.Redis:
    """A client for ``url`` (default ``FALLBACKBUS_REDIS_URL``) whose connects and replies are
    bounded by ``timeout`` (default ``FALLBACKBUS_CONNECT_TIMEOUT``), plus headroom for replies."""
    settings = settings or Settings.from_env()
    connect_timeout = timeout or settings.connect_timeout
    return redis_py.Redis.from_url(
        url or settings.redis_url,
        socket_connect_timeout=connect_timeout,
        # Replies can legitimately take longer than a connect (a large LRANGE, a claim script).
        socket_timeout=max(connect_timeout, settings.confirm_timeout),
        health_check_interval=30,
    )
