"""Count what actually reached a RabbitMQ exchange.

Fault tests publish N messages through a misbehaving network and then need to know,
per message id, how many copies arrived. ``QueueCounter`` binds a private queue to the
exchange with ``#`` *when it is created* -- create it before publishing, or messages
routed while no queue was bound are silently dropped by RabbitMQ and look "lost".
``counting`` also deletes the (test's own) exchange afterwards; ``draining`` keeps a counter
reading while a long test runs; ``rejecting_queue`` makes RabbitMQ nack what it routes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import kombu

from tests.support.services import RABBITMQ_URL, delete_exchange

# (routing_key, body, properties, headers)
Received = tuple[str, bytes, dict[str, Any], dict[str, Any]]


def message_id_of(body: bytes, properties: dict[str, Any]) -> str | None:
    """The AMQP ``message_id`` property, else the petisco body's ``data.id``, else None."""
    if properties.get("message_id"):
        return str(properties["message_id"])
    try:
        data = json.loads(body)["data"]
        return str(data["id"]) if data.get("id") else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class QueueCounter:
    """A private, auto-deleted queue bound to ``exchange`` that records every delivery.

    ``ids`` counts deliveries per message id (messages without any id only appear in
    ``messages``/``bodies``). Use as a context manager or call ``close()``.
    """

    def __init__(self, exchange: str, url: str = RABBITMQ_URL, routing_key: str = "#") -> None:
        self.exchange = kombu.Exchange(exchange, "topic", durable=True)
        self.queue_name = f"test.counter.{uuid.uuid4().hex}"
        self.ids: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.messages: list[Received] = []
        self._connection = kombu.Connection(url, heartbeat=0)
        try:
            channel = self._connection.channel()
            self.exchange(channel).declare()
            # exclusive + auto_delete: the queue vanishes with our connection, even on a crash.
            queue = kombu.Queue(
                self.queue_name,
                self.exchange,
                routing_key=routing_key,
                exclusive=True,
                auto_delete=True,
                durable=False,
            )
            # no_ack: we only count; on_message: keep the raw body, skip kombu's decoding.
            self._consumer = kombu.Consumer(
                channel, queues=[queue], no_ack=True, on_message=self._record
            )
            self._consumer.consume()  # declares and binds the queue now
        except BaseException:
            self._connection.release()
            raise

    def _record(self, message: Any) -> None:
        body = message.body if isinstance(message.body, bytes) else message.body.encode()
        properties = dict(message.properties)
        headers = dict(message.headers or {})
        self.bodies.append(body)
        self.messages.append((message.delivery_info["routing_key"], body, properties, headers))
        message_id = message_id_of(body, properties)
        if message_id is not None:
            self.ids[message_id] += 1

    @property
    def received(self) -> int:
        return len(self.messages)

    def drain(self, expected: int | None = None, timeout: float = 10.0, idle: float = 0.5) -> None:
        """Consume until ``expected`` messages in total have arrived, or until ``timeout``.

        With ``expected=None``, stop once no message came for ``idle`` seconds. Never
        raises on a shortfall -- compare ``received``/``ids`` (or use a ``Ledger``) so the
        failure message can say exactly what is missing. Call again to catch stragglers.
        """
        deadline = time.monotonic() + timeout
        while expected is None or self.received < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wait = remaining if expected is not None else min(remaining, idle)
            try:
                self._connection.drain_events(timeout=wait)
            except TimeoutError:
                if expected is None:
                    return

    def duplicates(self) -> dict[str, int]:
        """Message ids delivered more than once, with their delivery counts."""
        return {mid: n for mid, n in self.ids.items() if n > 1}

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may already be broken
            self._consumer.cancel()
        self._connection.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def counting(exchange: str, routing_key: str = "#") -> Iterator[QueueCounter]:
    """A ``QueueCounter`` on a test's own ``exchange``, which is deleted afterwards."""
    try:
        with QueueCounter(exchange, routing_key=routing_key) as counter:
            yield counter
    finally:
        delete_exchange(exchange)


@contextlib.contextmanager
def draining(counter: QueueCounter) -> Iterator[QueueCounter]:
    """Consume in a background thread while the body runs.

    A consumer that stops reading gets its connection closed by RabbitMQ once a socket write to
    it blocks for ``send_timeout`` (15 s by default), and its exclusive queue -- with everything
    in it -- is deleted. Long scenarios therefore read as they go. The counter must not be used
    by anyone else until the block ends.
    """
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            counter.drain(None, timeout=0.5, idle=0.5)

    thread = threading.Thread(target=consume, name="consumer", daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        stop.set()
        thread.join(10)


@contextlib.contextmanager
def rejecting_queue(exchange: str, routing_key: str = "#") -> Iterator[None]:
    """Bind a queue that refuses every message routed to it (max length 0, reject-publish), so
    RabbitMQ nacks them: https://www.rabbitmq.com/docs/maxlength#overflow-behaviour."""
    with kombu.Connection(RABBITMQ_URL) as connection:
        queue = kombu.Queue(
            f"test.rejecting.{uuid.uuid4().hex}",
            kombu.Exchange(exchange, "topic", durable=True),
            routing_key=routing_key,
            durable=False,
            queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )(connection.default_channel)
        queue.declare()  # the exchange first, then the queue and its binding
        try:
            yield
        finally:
            queue.delete()
