"""Buses validate a whole call before anything is sent, and pass failures down the chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from fallbackbus import (
    BusCannotPublish,
    Command,
    CommandBus,
    DomainEvent,
    DomainEventBus,
    FallbackBusError,
    InvalidMessage,
    MessageTooLarge,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
)
from fallbackbus.messages import Outgoing


class UserCreated(DomainEvent):
    user_id: str
    name: str


class BlobAttached(DomainEvent):
    blob: object


class CreateUser(Command):
    user_id: str


class RecordingEventBus(DomainEventBus):
    """Records every ``deliver`` call: what would have been sent, and why."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("acme", "petisco", **kwargs)
        self.deliveries: list[tuple[list[Outgoing], str | None]] = []

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        self.deliveries.append((list(messages), reason))

    @property
    def delivered_ids(self) -> list[str]:
        return [m.message_id for batch, _ in self.deliveries for m in batch]


class RecordingCommandBus(CommandBus):
    def __init__(self) -> None:
        super().__init__("acme", "petisco")
        self.deliveries: list[list[Outgoing]] = []

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        self.deliveries.append(list(messages))


class RefusingBus(DomainEventBus):
    """Delivers nothing: every message fails with the reason ``why``."""

    def __init__(self, why: str = "down", **kwargs: Any) -> None:
        super().__init__("acme", "petisco", **kwargs)
        self.why = why

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        self._to_fallback([(m, self.why) for m in messages])


class HalfRefusing(DomainEventBus):
    """Even positions come back as returned, odd ones as nacked."""

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        self._to_fallback([(m, "nacked" if i % 2 else "returned") for i, m in enumerate(messages)])


def events(count: int) -> list[UserCreated]:
    return [UserCreated(user_id=str(i), name="Ada") for i in range(count)]


def test_a_valid_batch_is_delivered_once_in_order_with_no_reason() -> None:
    bus = RecordingEventBus()
    batch = events(3)

    bus.publish(batch)

    assert len(bus.deliveries) == 1
    assert bus.delivered_ids == [e.message_id for e in batch]
    assert bus.deliveries[0][1] is None


def test_a_single_event_and_a_tuple_are_accepted() -> None:
    bus = RecordingEventBus()
    single, *pair = events(3)

    bus.publish(single)
    bus.publish(tuple(pair))

    assert bus.delivered_ids == [single.message_id, *(e.message_id for e in pair)]


@pytest.mark.parametrize("not_a_message", [None, "user created", {"user_id": "1"}, 42])
def test_publishing_something_that_is_not_a_message_raises_and_sends_nothing(
    not_a_message: Any,
) -> None:
    bus = RecordingEventBus()

    with pytest.raises(InvalidMessage, match=r"item 0 is a .*, not a DomainEvent"):
        bus.publish(not_a_message)

    assert bus.deliveries == []


def test_a_command_published_on_an_event_bus_is_refused() -> None:
    bus = RecordingEventBus()

    with pytest.raises(InvalidMessage, match="item 0 is a CreateUser, not a DomainEvent"):
        bus.publish(CreateUser(user_id="1"))

    assert bus.deliveries == []


def test_an_event_dispatched_on_a_command_bus_is_refused() -> None:
    bus = RecordingCommandBus()

    with pytest.raises(InvalidMessage, match="item 1 is a UserCreated, not a Command"):
        bus.dispatch([CreateUser(user_id="1"), UserCreated(user_id="1", name="a")])

    assert bus.deliveries == []


def test_a_list_mixing_messages_and_other_things_sends_nothing_not_even_the_valid_ones() -> None:
    bus = RecordingEventBus()

    with pytest.raises(InvalidMessage, match="item 2 is a str"):
        bus.publish([*events(2), "oops", *events(2)])  # type: ignore[list-item]

    assert bus.deliveries == []


@pytest.mark.parametrize("empty", [[], ()])
def test_an_empty_list_raises_a_clear_error(empty: list[Any] | tuple[Any, ...]) -> None:
    bus = RecordingEventBus()

    with pytest.raises(InvalidMessage, match="nothing to publish: the list is empty"):
        bus.publish(empty)

    assert bus.deliveries == []


def test_an_unserializable_attribute_late_in_a_batch_sends_nothing_and_names_the_field() -> None:
    bus = RecordingEventBus()

    with pytest.raises(InvalidMessage, match=r"BlobAttached\.blob: a object cannot be serialized"):
        bus.publish([*events(2), BlobAttached(blob=object())])

    assert bus.deliveries == []


def test_a_message_over_the_size_limit_sends_nothing_and_says_how_big_it_is() -> None:
    bus = RecordingEventBus(max_message_bytes=400)
    big = UserCreated(user_id="1", name="x" * 500)

    with pytest.raises(MessageTooLarge, match=rf"UserCreated {big.message_id} is \d+ bytes"):
        bus.publish([*events(2), big])

    assert bus.deliveries == []


def test_the_size_limit_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FALLBACKBUS_MAX_MESSAGE_BYTES", "300")

    with pytest.raises(MessageTooLarge, match="over the limit of 300"):
        RecordingEventBus().publish(UserCreated(user_id="1", name="x" * 300))


def test_bad_input_errors_share_the_one_exception_root() -> None:
    assert issubclass(InvalidMessage, FallbackBusError)
    assert issubclass(MessageTooLarge, InvalidMessage)
    assert issubclass(BusCannotPublish, FallbackBusError)


@pytest.mark.parametrize(("organization", "service"), [("", "svc"), ("acme", "my svc")])
def test_a_bus_needs_a_non_empty_organization_and_service_without_spaces(
    organization: str, service: str
) -> None:
    with pytest.raises(ValueError, match="must be a non-empty string without spaces"):
        HalfRefusing(organization, service)


def test_bad_input_on_a_rabbitmq_bus_never_touches_the_broker_nor_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector = RabbitMqConnector("amqp://guest:guest@127.0.0.1:1//")
    fallback = RecordingEventBus()
    bus = RabbitMqDomainEventBus("acme", "petisco", connector, fallback=fallback)

    def no_connection() -> None:
        raise AssertionError("a connection was requested for invalid input")

    monkeypatch.setattr(connector, "acquire", no_connection)

    with pytest.raises(InvalidMessage):
        bus.publish([*events(2), BlobAttached(blob=object())])

    assert fallback.deliveries == []


def test_an_open_circuit_sends_the_batch_straight_to_the_fallback_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connector = RabbitMqConnector("amqp://guest:guest@127.0.0.1:1//", breaker_cooldown=60)
    connector.breaker.failed("cannot connect to RabbitMQ: refused")
    fallback = RecordingEventBus()
    bus = RabbitMqDomainEventBus("acme", "petisco", connector, fallback=fallback)

    def no_connection() -> None:
        raise AssertionError("the circuit is open: no connection may be attempted")

    monkeypatch.setattr(connector, "acquire", no_connection)
    batch = events(3)

    bus.publish(batch)

    assert fallback.delivered_ids == [e.message_id for e in batch]
    [(_, reason)] = fallback.deliveries
    assert reason is not None
    assert "circuit open" in reason
    assert "refused" in reason


def test_what_a_bus_cannot_deliver_goes_to_its_fallback_grouped_by_reason() -> None:
    fallback = RecordingEventBus()
    batch = events(5)
    HalfRefusing("acme", "petisco", fallback=fallback).publish(batch)

    by_reason = {reason: [m.message_id for m in ms] for ms, reason in fallback.deliveries}
    assert by_reason == {
        "returned": [batch[0].message_id, batch[2].message_id, batch[4].message_id],
        "nacked": [batch[1].message_id, batch[3].message_id],
    }


def test_a_bus_without_fallback_raises_bus_cannot_publish_with_the_ids() -> None:
    batch = events(2)

    with pytest.raises(BusCannotPublish) as caught:
        RefusingBus("broker down").publish(batch)

    assert caught.value.causes == ["RefusingBus: broker down"]
    assert caught.value.message_ids == [e.message_id for e in batch]


def test_when_the_fallback_fails_too_the_error_names_both_causes_in_chain_order() -> None:
    inner = RefusingBus("Redis refused the connection")
    outer = RefusingBus("RabbitMQ refused the connection", fallback=inner)
    batch = events(2)

    with pytest.raises(BusCannotPublish) as caught:
        outer.publish(batch)

    text = str(caught.value)
    assert text.startswith("2 message(s) could not be published nor stored: ")
    assert text.index("RabbitMQ refused") < text.index("Redis refused")
    assert caught.value.causes == [
        "RefusingBus: RabbitMQ refused the connection",
        "RefusingBus: Redis refused the connection",
    ]
    assert caught.value.message_ids == [e.message_id for e in batch]


def test_when_the_fallback_fails_messages_refused_for_different_reasons_are_all_reported() -> None:
    # Returned and nacked messages of one batch reach the fallback as two groups; if the fallback
    # is down, the caller must learn about both groups, not only the first one tried.
    batch = events(4)

    with pytest.raises(BusCannotPublish) as caught:
        HalfRefusing("acme", "petisco", fallback=RefusingBus("Redis down")).publish(batch)

    assert sorted(caught.value.message_ids) == sorted(e.message_id for e in batch)


def test_bus_cannot_publish_text_names_every_cause_and_the_count() -> None:
    error = BusCannotPublish(
        ["RabbitMqDomainEventBus: cannot connect", "RedisDomainEventBus: connection refused"],
        ["a", "b", "c"],
    )

    assert str(error) == (
        "3 message(s) could not be published nor stored: "
        "RabbitMqDomainEventBus: cannot connect; RedisDomainEventBus: connection refused"
    )
