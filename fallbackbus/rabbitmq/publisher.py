"""Publishing with streaming publisher confirms: send a whole batch, then wait once for the acks."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import amqp
from amqp import spec

from fallbackbus.errors import BrokerUnavailable
from fallbackbus.messages import Outgoing
from fallbackbus.rabbitmq.connector import CONNECTION_ERRORS, Lease, RabbitMqConnector
from fallbackbus.secrets import describe_error

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
_POLL_EVERY = 256


@dataclass
class PublishResult:
    """What happened to each message of one ``publish`` call.

    ``failed`` pairs each unconfirmed message with why. ``broker_reachable`` is False when the
    failure was about reaching RabbitMQ (connect error, cut connection, confirm timeout, open
    circuit) rather than RabbitMQ's own answer (nack, return): only the latter counts as an attempt.
    """

    confirmed: list[Outgoing] = field(default_factory=list)
    failed: list[tuple[Outgoing, str]] = field(default_factory=list)
    broker_reachable: bool = True

    @property
    def ok(self) -> bool:
        return not self.failed


class RabbitMqPublisher:
    """The publisher role over py-amqp: confirms and ``mandatory`` always on.

    A message counts as published only when RabbitMQ acked it and did not return it first
    (a return precedes the ack of the same message: https://www.rabbitmq.com/docs/confirms).
    """

    def __init__(self, connector: RabbitMqConnector) -> None:
        self.connector = connector

    def publish(
        self, messages: Sequence[Outgoing], headers: Mapping[str, Any] | None = None
    ) -> PublishResult:
        if not self.connector.breaker.allow():
            reason = f"RabbitMQ skipped (circuit open after: {self.connector.breaker.last_failure})"
            return PublishResult(failed=[(m, reason) for m in messages], broker_reachable=False)
        result = self._attempt(messages, headers)
        if result.broker_reachable or not result.failed:
            self.connector.breaker.succeeded()
        return result

    def unreachable_reason(self) -> str | None:
        """Why RabbitMQ cannot be reached now (open circuit, failed connect), or None if it can."""
        if not self.connector.breaker.allow():
            return f"circuit open after: {self.connector.breaker.last_failure}"
        try:
            lease = self.connector.acquire()
        except BrokerUnavailable as exc:
            self.connector.breaker.failed(str(exc))
            return str(exc)
        self.connector.release(lease)
        self.connector.breaker.succeeded()
        return None

    def _attempt(
        self, messages: Sequence[Outgoing], headers: Mapping[str, Any] | None
    ) -> PublishResult:
        try:
            lease = self.connector.acquire()
        except BrokerUnavailable as exc:
            self.connector.breaker.failed(str(exc))
            return PublishResult(failed=[(m, str(exc)) for m in messages], broker_reachable=False)
        batch = _Batch(messages)
        try:
            self._send(lease, batch, headers)
            batch.wait(lease, self.connector.confirm_timeout)
        except Exception as exc:
            # Whatever went wrong (cut connection, confirm timeout, even a bug of ours), the
            # connection's state is unknown: drop it, and send exactly the unconfirmed messages on.
            if not isinstance(exc, (*CONNECTION_ERRORS, _ConfirmTimeout)):
                logger.exception("unexpected error while publishing to RabbitMQ")
            self.connector.discard(lease)
            reason = describe_error(exc)
            pending = batch.pending_messages()
            if isinstance(exc, amqp.exceptions.ChannelError):
                # RabbitMQ answered and refused (e.g. 406 PRECONDITION_FAILED: the exchange exists
                # with another type; 403 ACCESS_REFUSED): the broker is up, so this is an attempt,
                # and the circuit stays closed.
                return PublishResult(
                    confirmed=batch.confirmed(),
                    failed=batch.refused()
                    + [(m, f"refused by RabbitMQ: {reason}") for m in pending],
                )
            if lease.reused and not batch.any_answer and not isinstance(exc, _ConfirmTimeout):
                # A pooled connection can die while idle (broker restart, proxy cut): retry the
                # unconfirmed messages once on a fresh one before calling the broker unreachable.
                logger.info("pooled RabbitMQ connection was dead (%s); reconnecting once", reason)
                retry = self._attempt(pending, headers)
                retry.confirmed[:0] = batch.confirmed()
                retry.failed[:0] = batch.refused()
                return retry
            self.connector.breaker.failed(reason)
            return PublishResult(
                confirmed=batch.confirmed(),
                failed=batch.refused() + [(m, reason) for m in pending],
                broker_reachable=False,
            )
        self.connector.release(lease)
        return PublishResult(confirmed=batch.confirmed(), failed=batch.refused())

    def _send(self, lease: Lease, batch: _Batch, headers: Mapping[str, Any] | None) -> None:
        self._declare(lease, batch)
        batch.attach(lease)
        channel = lease.channel
        for index, message in batch.unanswered():
            properties: dict[str, Any] = {
                "delivery_mode": 2,  # persistent: survives a broker restart once queued
                "content_type": CONTENT_TYPE,
                "content_encoding": "utf-8",
                "message_id": message.message_id,
                "type": message.type,
                "timestamp": _timestamp(message),
            }
            if headers:
                properties["application_headers"] = dict(headers)
            batch.sent(lease.next_tag, index)
            lease.next_tag += 1
            # basic.publish with mandatory=True: an unroutable message comes back as basic.return
            # instead of vanishing. Sent with send_method rather than basic_publish, which polls
            # the socket before every single message.
            channel.send_method(
                spec.Basic.Publish,
                "Bssbb",
                (0, message.exchange, message.routing_key, True, False),
                amqp.Message(message.body, **properties),
            )
            if lease.next_tag % _POLL_EVERY == 0:
                # Read the confirms that have arrived so far, so a large batch never lets them
                # pile up in the socket buffers while we are still sending.
                batch.poll(lease)

    def _declare(self, lease: Lease, batch: _Batch) -> None:
        """Declare each new exchange on its own, so one RabbitMQ refuses (406: it exists with
        another type; 403: reserved name) costs only its own messages, not the whole batch."""
        for exchange in sorted({m.exchange for m in batch.messages} - lease.declared):
            try:
                # petisco's exchange: topic, durable. Declared once per connection; idempotent.
                lease.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
            except amqp.exceptions.ChannelError as exc:
                batch.refuse_exchange(exchange, f"refused by RabbitMQ: {describe_error(exc)}")
                # RabbitMQ closed the channel with that error: carry on with a fresh one.
                self.connector.reopen_channel(lease)
                continue
            lease.declared.add(exchange)


class _ConfirmTimeout(Exception):
    """RabbitMQ did not confirm every message within the confirm timeout."""


class _Batch:
    """Book-keeping of one streaming-confirm batch: delivery tag -> message, answers so far."""

    def __init__(self, messages: Sequence[Outgoing]) -> None:
        self.messages = list(messages)
        self._tags: list[int] = []  # delivery tags in the order sent (increasing)
        self._index: dict[int, int] = {}  # delivery tag -> position in messages
        self._cursor = 0  # self._tags[:cursor] are all answered
        self._status: list[str | None] = [None] * len(self.messages)
        self._returned: dict[str, list[str]] = {}
        self._open = len(self.messages)
        self.any_answer = False

    def attach(self, lease: Lease) -> None:
        channel = lease.channel
        # The channel outlives this batch, so swap our handlers in place of the last batch's.
        for event, handler in (
            ("basic_ack", self._on_ack),
            ("basic_nack", self._on_nack),
            ("basic_return", self._on_return),
        ):
            old = lease.handlers.get(event)
            if old is not None:
                channel.events[event].discard(old)
            channel.events[event].add(handler)
            lease.handlers[event] = handler

    def sent(self, tag: int, index: int) -> None:
        self._tags.append(tag)
        self._index[tag] = index

    def unanswered(self) -> list[tuple[int, Outgoing]]:
        return [(i, m) for i, m in enumerate(self.messages) if self._status[i] is None]

    def refuse_exchange(self, exchange: str, reason: str) -> None:
        for index, message in enumerate(self.messages):
            if message.exchange == exchange and self._status[index] is None:
                self._status[index] = reason
                self._open -= 1

    def poll(self, lease: Lease) -> None:
        """Handle whatever answers have already arrived, without waiting."""
        with suppress(TimeoutError):
            while True:
                lease.connection.drain_events(timeout=0)

    def wait(self, lease: Lease, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ConfirmTimeout(
                    f"RabbitMQ confirmed {len(self.messages) - self._open} of "
                    f"{len(self.messages)} message(s) within {timeout:g} s"
                )
            try:
                lease.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue

    def _resolve(self, delivery_tag: int, multiple: bool, outcome: str) -> None:
        self.any_answer = True
        if not multiple:
            if delivery_tag in self._index:
                self._settle(self._index[delivery_tag], outcome)
            return
        # multiple=True answers every tag up to and including delivery_tag.
        while self._cursor < len(self._tags) and self._tags[self._cursor] <= delivery_tag:
            self._settle(self._index[self._tags[self._cursor]], outcome)
            self._cursor += 1

    def _settle(self, index: int, outcome: str) -> None:
        if self._status[index] is not None:
            return
        if outcome == "ack":
            returns = self._returned.get(self.messages[index].message_id)
            self._status[index] = returns.pop(0) if returns else "ack"
        else:
            self._status[index] = outcome
        self._open -= 1

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._resolve(delivery_tag, multiple, "ack")

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._resolve(delivery_tag, multiple, "nacked by RabbitMQ")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.any_answer = True
        message_id = message.properties.get("message_id", "")
        reason = f"returned as unroutable by RabbitMQ ({exchange} / {routing_key}: {exc})"
        self._returned.setdefault(message_id, []).append(reason)

    def confirmed(self) -> list[Outgoing]:
        return [m for m, s in zip(self.messages, self._status, strict=True) if s == "ack"]

    def refused(self) -> list[tuple[Outgoing, str]]:
        return [
            (m, s)
            for m, s in zip(self.messages, self._status, strict=True)
            if s is not None and s != "ack"
        ]

    def pending_messages(self) -> list[Outgoing]:
        return [m for m, s in zip(self.messages, self._status, strict=True) if s is None]


def _timestamp(message: Outgoing) -> int:
    """AMQP timestamps are whole seconds since the epoch."""
    when = message.occurred_on.replace(tzinfo=UTC) if message.occurred_on else datetime.now(UTC)
    return int(when.timestamp())
