"""RabbitMQ connections: bounded connects, cluster failover, a thread-safe pool, fork safety."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import amqp
from kombu.utils.url import parse_url

from fallbackbus.errors import BrokerUnavailable, ConfigurationError
from fallbackbus.rabbitmq.breaker import CircuitBreaker
from fallbackbus.secrets import describe_error, mask_url
from fallbackbus.settings import Settings

logger = logging.getLogger(__name__)

#: Errors that mean "the connection is gone or unusable", as opposed to a broker's answer.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    amqp.exceptions.IrrecoverableConnectionError,
    amqp.exceptions.ChannelError,
    amqp.exceptions.RecoverableChannelError,
    amqp.exceptions.IrrecoverableChannelError,
    amqp.exceptions.AMQPError,
)
_MAX_IDLE = 8


@dataclass
class Lease:
    """One pooled connection with its confirm-mode channel, checked out to one caller at a time."""

    connection: amqp.Connection
    channel: Any
    url: str
    reused: bool = False
    next_tag: int = 1
    """RabbitMQ numbers confirms per channel from 1 after confirm.select; we count in step."""
    declared: set[str] = field(default_factory=set)
    handlers: dict[str, Any] = field(default_factory=dict)


class RabbitMqConnector:
    """Owns how to reach RabbitMQ; the buses and the replay borrow connections from it.

    ``url`` may be a ``;``-separated list of cluster nodes, tried in order within one connect
    timeout budget. Connections are pooled (one per concurrent caller) and never shared by two
    threads at once. After ``os.fork()`` the child drops the parent's sockets without closing
    them (closing would shut the parent's connection down) and opens its own.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        connect_timeout: float | None = None,
        confirm_timeout: float | None = None,
        breaker_cooldown: float | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        self.urls = [u.strip() for u in (url or settings.rabbitmq_url).split(";") if u.strip()]
        if not self.urls:
            raise ConfigurationError("no RabbitMQ URL given")
        for u in self.urls:
            if not u.startswith(("amqp://", "amqps://", "pyamqp://")):
                raise ConfigurationError(f"not an AMQP URL: {mask_url(u)}")
        self.connect_timeout = connect_timeout or settings.connect_timeout
        self.confirm_timeout = confirm_timeout or settings.confirm_timeout
        self.breaker = CircuitBreaker(
            settings.breaker_cooldown if breaker_cooldown is None else breaker_cooldown
        )
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: list[Lease] = []

    def __repr__(self) -> str:
        return f"RabbitMqConnector({mask_url(';'.join(self.urls))!r})"

    @property
    def safe_url(self) -> str:
        return mask_url(";".join(self.urls))

    def discard(self, lease: Lease) -> None:
        """Close a connection whose state is unknown (error, timeout): never reuse it."""
        with suppress(Exception):  # best effort on a broken socket
            lease.connection.collect()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for lease in idle:
            try:
                lease.connection.close()
            except Exception:
                self.discard(lease)

    def connect(self) -> Lease:
        """Open a fresh connection with a confirm-mode channel, within one connect budget."""
        deadline = time.monotonic() + self.connect_timeout
        errors = []
        for url in self.urls:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors.append(f"{mask_url(url)}: no time left in the connect budget")
                break
            try:
                return self._open(url, remaining)
            except Exception as exc:  # OSError covers socket timeouts; anything else is as fatal
                errors.append(f"{mask_url(url)}: {describe_error(exc)}")
        raise BrokerUnavailable("cannot connect to RabbitMQ: " + "; ".join(errors))

    def _open(self, url: str, timeout: float) -> Lease:
        parts = parse_url(url)
        ssl = parts.get("ssl") or url.startswith("amqps://")
        host = f"{parts['hostname'] or 'localhost'}:{parts['port'] or (5671 if ssl else 5672)}"
        connection = amqp.Connection(
            host=host,
            userid=parts.get("userid") or "guest",
            password=parts.get("password") or "guest",
            virtual_host=parts.get("virtual_host") or "/",
            ssl=ssl,
            # connect_timeout bounds both the TCP connect and the AMQP handshake, so a broker
            # that accepts TCP and never answers costs at most this long.
            connect_timeout=timeout,
            # Neither a send into a broker that stopped reading nor a synchronous reply
            # (channel.open, confirm.select, exchange.declare) may block forever.
            write_timeout=self.confirm_timeout,
            read_timeout=self.confirm_timeout,
            heartbeat=0,
        )
        try:
            connection.connect()
            channel = connection.channel()
            # Publisher confirms: RabbitMQ acks a message once it has taken responsibility for it
            # (https://www.rabbitmq.com/docs/confirms#publisher-confirms).
            channel.confirm_select()
        except BaseException:
            connection.collect()
            raise
        return Lease(connection=connection, channel=channel, url=url)

    def reopen_channel(self, lease: Lease) -> None:
        """Replace a channel RabbitMQ closed with an error by a fresh confirm-mode channel."""
        lease.channel = lease.connection.channel()
        lease.channel.confirm_select()
        lease.next_tag = 1
        lease.handlers = {}

    def acquire(self) -> Lease:
        """A pooled connection, or a new one; raises :class:`BrokerUnavailable`."""
        self._forget_parent_connections()
        with self._lock:
            if self._idle:
                lease = self._idle.pop()
                lease.reused = True
                return lease
        return self.connect()

    def release(self, lease: Lease) -> None:
        """Return a healthy connection to the pool."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(lease)
                return
        lease.connection.close()

    def _forget_parent_connections(self) -> None:
        if os.getpid() == self._pid:
            return
        # We are a forked child: these sockets are shared with the parent. Closing them with
        # shutdown() would kill the parent's connections, so only drop our descriptor copies.
        inherited, self._idle = self._idle, []
        for lease in inherited:
            _detach_socket(lease.connection)
        self._lock = threading.Lock()  # the breaker resets itself on its first use here
        self._pid = os.getpid()


def _detach_socket(connection: amqp.Connection) -> None:
    transport: Any = getattr(connection, "_transport", None)
    sock = getattr(transport, "sock", None)
    if sock is None:
        return
    with suppress(OSError):
        os.close(sock.detach())
    transport.sock = None
    connection._transport = None  # type: ignore[attr-defined]  # forget, never shut down
