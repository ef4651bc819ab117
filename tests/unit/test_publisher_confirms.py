"""Confirm book-keeping against a scripted fake channel: exactly the unconfirmed messages fall back.

The fake stands in for py-amqp's connection and channel: it numbers publishes per channel from 1
(as RabbitMQ does after ``confirm.select``) and answers each with what the test scripted.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from amqp import spec

from fallbackbus import DomainEvent, DomainEventBus, RabbitMqConnector, RabbitMqDomainEventBus
from fallbackbus.messages import Outgoing
from fallbackbus.rabbitmq.connector import Lease

# what the broker does with the message of a given delivery tag
Answer = str  # "ack" | "nack" | "return+ack" | "silent"


class UserCreated(DomainEvent):
    user_id: str


class RecordingFallback(DomainEventBus):
    def __init__(self) -> None:
        super().__init__("acme", "petisco")
        self.stored: list[tuple[str, str | None]] = []

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        self.stored.extend((m.message_id, reason) for m in messages)

    @property
    def ids(self) -> list[str]:
        return [message_id for message_id, _ in self.stored]


class FakeChannel:
    def __init__(self) -> None:
        self.events: defaultdict[str, set[Callable[..., None]]] = defaultdict(set)
        self.published: list[tuple[int, Any, str]] = []
        self._tags = itertools.count(1)

    def exchange_declare(self, exchange: str, kind: str, **kwargs: Any) -> None:
        assert kind == "topic"
        assert kwargs["durable"] is True

    def send_method(self, sig: Any, format: str, args: tuple[Any, ...], content: Any) -> None:
        """py-amqp's AbstractChannel.send_method, as the publisher sends basic.publish."""
        assert sig == spec.Basic.Publish
        _ticket, _exchange, routing_key, mandatory, immediate = args
        assert mandatory is True
        assert immediate is False
        self.published.append((next(self._tags), content, routing_key))

    def fire(self, event: str, *args: Any) -> None:
        for handler in list(self.events[event]):
            handler(*args)


class FakeConnection:
    """Answers published messages on ``drain_events``; ``cut_after`` answers then raises."""

    def __init__(
        self,
        answer: Callable[[int], Answer] = lambda tag: "ack",
        cut_after: int | None = None,
    ) -> None:
        self.channel = FakeChannel()
        self.answer = answer
        self.cut_after = cut_after
        self.answered = 0
        self.collected = False

    def drain_events(self, timeout: float) -> None:
        channel = self.channel
        pending = channel.published[self.answered :]
        if self.cut_after is not None and self.answered >= self.cut_after:
            raise ConnectionResetError("connection reset by peer")
        if not pending or all(self.answer(tag) == "silent" for tag, _, _ in pending):
            raise TimeoutError
        for tag, message, routing_key in pending:
            if self.cut_after is not None and self.answered >= self.cut_after:
                break
            self.answered += 1
            answer = self.answer(tag)
            if answer == "silent":
                continue
            if answer == "return+ack":
                channel.fire(
                    "basic_return", Exception("NO_ROUTE"), "acme.petisco", routing_key, message
                )
                answer = "ack"
            channel.fire(f"basic_{answer}", tag, False)

    def collect(self) -> None:
        self.collected = True


def lease(connection: FakeConnection) -> Lease:
    return Lease(connection=connection, channel=connection.channel, url="amqp://fake//")  # type: ignore[arg-type]


def make_bus(
    monkeypatch: pytest.MonkeyPatch, *connections: FakeConnection, confirm_timeout: float = 0.05
) -> tuple[RabbitMqDomainEventBus, RecordingFallback]:
    """A RabbitMQ bus whose connector hands out the given fake connections, in order."""
    connector = RabbitMqConnector(
        "amqp://guest:guest@127.0.0.1:1//", confirm_timeout=confirm_timeout
    )
    fresh = iter(connections)
    monkeypatch.setattr(connector, "connect", lambda: lease(next(fresh)))
    fallback = RecordingFallback()
    return RabbitMqDomainEventBus("acme", "petisco", connector, fallback=fallback), fallback


def events(count: int) -> list[UserCreated]:
    return [UserCreated(user_id=str(i)) for i in range(count)]


def test_a_batch_acked_in_full_sends_nothing_to_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection()
    bus, fallback = make_bus(monkeypatch, connection)

    bus.publish(events(5))

    assert fallback.stored == []
    assert [tag for tag, _, _ in connection.channel.published] == [1, 2, 3, 4, 5]


def test_every_message_carries_the_amqp_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = FakeConnection()
    bus, _ = make_bus(monkeypatch, connection)
    event = UserCreated(user_id="1")

    bus.publish(event)

    [(_, message, routing_key)] = connection.channel.published
    assert routing_key == "acme.petisco.1.event.user_created"
    assert message.body == event.format_json().encode()
    assert message.properties["delivery_mode"] == 2
    assert message.properties["content_type"] == "application/json"
    assert message.properties["message_id"] == event.message_id
    assert message.properties["type"] == "user.created"
    assert isinstance(message.properties["timestamp"], int)


def test_exactly_the_nacked_messages_go_to_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    bus, fallback = make_bus(
        monkeypatch, FakeConnection(lambda tag: "nack" if tag % 3 == 0 else "ack")
    )
    batch = events(9)

    bus.publish(batch)

    assert fallback.ids == [batch[i].message_id for i in (2, 5, 8)]
    assert {reason for _, reason in fallback.stored} == {"nacked by RabbitMQ"}


def test_a_returned_message_goes_to_the_fallback_even_though_it_was_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus, fallback = make_bus(
        monkeypatch, FakeConnection(lambda tag: "return+ack" if tag == 2 else "ack")
    )
    batch = events(3)

    bus.publish(batch)

    [(message_id, reason)] = fallback.stored
    assert message_id == batch[1].message_id
    assert reason is not None
    assert reason.startswith("returned as unroutable by RabbitMQ")


def test_one_multiple_ack_confirms_every_message_up_to_its_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection()

    def ack_all_at_once(timeout: float) -> None:
        connection.channel.fire("basic_ack", len(connection.channel.published), True)

    monkeypatch.setattr(connection, "drain_events", ack_all_at_once)
    bus, fallback = make_bus(monkeypatch, connection)

    bus.publish(events(4))

    assert fallback.stored == []


def test_delivery_tags_continue_across_batches_on_the_same_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection(lambda tag: "nack" if tag == 4 else "ack")
    bus, fallback = make_bus(monkeypatch, connection)
    first, second = events(3), events(3)

    bus.publish(first)
    bus.publish(second)

    assert fallback.ids == [second[0].message_id]  # tag 4 is the second batch's first message


def test_a_connection_cut_mid_batch_sends_exactly_the_unconfirmed_to_the_fallback_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection(cut_after=4)
    bus, fallback = make_bus(monkeypatch, connection)
    batch = events(10)

    bus.publish(batch)

    assert fallback.ids == [e.message_id for e in batch[4:]]
    assert all("ConnectionResetError" in (reason or "") for _, reason in fallback.stored)
    assert connection.collected
    assert bus.connector.breaker.is_open


def test_a_confirm_timeout_sends_the_unanswered_to_the_fallback_and_drops_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection(lambda tag: "silent" if tag > 2 else "ack")
    bus, fallback = make_bus(monkeypatch, connection, confirm_timeout=0.05)
    batch = events(5)

    bus.publish(batch)

    assert fallback.ids == [e.message_id for e in batch[2:]]
    assert all("confirmed 2 of 5" in (reason or "") for _, reason in fallback.stored)
    assert connection.collected
    assert bus.connector._idle == []


def test_a_pooled_connection_that_died_while_idle_is_replaced_and_nothing_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = FakeConnection()
    fresh = FakeConnection()
    bus, fallback = make_bus(monkeypatch, stale, fresh)
    bus.publish(events(1))  # the connection goes back to the pool
    stale.cut_after = stale.answered  # ... and dies there

    batch = events(3)
    bus.publish(batch)

    assert fallback.stored == []
    assert stale.collected
    assert [m.properties["message_id"] for _, m, _ in fresh.channel.published] == [
        e.message_id for e in batch
    ]
    assert not bus.connector.breaker.is_open
