"""Messages serialize byte for byte as petisco does, and read back into equal messages."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from fallbackbus import Command, DomainEvent, InvalidMessage, MessageTooLarge
from fallbackbus.messages import Message, Outgoing, prepare, snake_name

FIXED_ID = uuid.UUID("5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11")
FIXED_TIME = datetime(2026, 1, 1, 10, 0, 0, 123456)


class UserCreated(DomainEvent):
    user_id: str
    name: str


class UserRenamed(DomainEvent):
    message_version: ClassVar[int] = 2

    user_id: str
    name: str


class CreateUser(Command):
    user_id: str


def prepare_for_acme(
    messages: Message | Sequence[Message],
    kind: type[Message] = DomainEvent,
    service: str = "petisco",
) -> list[Outgoing]:
    """``prepare`` as organization ``acme`` publishes, well under any size limit."""
    return prepare(messages, kind=kind, organization="acme", service=service, max_bytes=10_000)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str
    since: datetime


class Unserializable:
    """Not JSON, not a model, not a known scalar."""


class ProfileUpdated(DomainEvent):
    at: datetime
    birthday: date
    ref: uuid.UUID
    balance: Decimal
    address: Address
    color: Color
    tags: set[str]
    scores: list[float]
    pair: tuple[int, int]
    extra: dict[str, Any]
    note: str | None = None


class BlobAttached(DomainEvent):
    blob: Unserializable


class PayloadAttached(DomainEvent):
    payload: dict[Any, Any]


def fixed(message: DomainEvent | Command) -> Any:
    """Pin the id and time so the expected wire bytes can be written out literally."""
    message._message_id = str(FIXED_ID)
    message._occurred_on = FIXED_TIME
    return message


def profile() -> ProfileUpdated:
    return ProfileUpdated(
        at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        birthday=date(1990, 5, 17),
        ref=uuid.UUID(int=7),
        balance=Decimal("10.10"),
        address=Address(city="Barcelona", since=datetime(2020, 2, 3, 4, 5, 6, 7)),
        color=Color.RED,
        tags={"b", "a"},
        scores=[1.5, 2.0],
        pair=(1, 2),
        extra={"nested": {"ok": True, "n": None}},
    )


def test_a_domain_event_serializes_to_exactly_the_petisco_json_bytes() -> None:
    event = fixed(UserCreated(user_id="1", name="Ada"))

    assert event.format_json() == (
        '{"data": {"id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11", "type": "user.created", '
        '"type_message": "domain_event", "version": 1, '
        '"occurred_on": "2026-01-01 10:00:00.123456", '
        '"attributes": {"user_id": "1", "name": "Ada"}, "meta": {}}}'
    )


def test_a_command_serializes_with_type_message_command() -> None:
    command = fixed(CreateUser(user_id="9"))

    assert command.format_json() == (
        '{"data": {"id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11", "type": "create.user", '
        '"type_message": "command", "version": 1, '
        '"occurred_on": "2026-01-01 10:00:00.123456", '
        '"attributes": {"user_id": "9"}, "meta": {}}}'
    )


def test_non_ascii_text_is_written_with_ascii_escapes_as_petisco_json_dumps_does() -> None:
    event = fixed(UserCreated(user_id="1", name="Adà"))

    assert '"name": "Ad\\u00e0"' in event.format_json()


def test_meta_given_with_update_meta_is_merged_into_the_body() -> None:
    event = fixed(UserCreated(user_id="1", name="Ada"))

    event.update_meta({"trace": "a"}).update_meta({"user": "b"})

    assert event.format()["data"]["meta"] == {"trace": "a", "user": "b"}


def test_meta_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="mapping"):
        UserCreated(user_id="1", name="Ada").update_meta(["not", "a", "dict"])  # type: ignore[arg-type]


def test_the_routing_key_is_organization_service_version_word_snake_name() -> None:
    [event] = prepare_for_acme(UserCreated(user_id="1", name="Ada"))
    [command] = prepare_for_acme(CreateUser(user_id="1"), kind=Command)

    assert event.routing_key == "acme.petisco.1.event.user_created"
    assert event.exchange == "acme.petisco"
    assert event.type == "user.created"
    assert command.routing_key == "acme.petisco.1.command.create_user"


def test_a_version_declared_with_message_version_goes_into_the_body_and_the_routing_key() -> None:
    [renamed] = prepare_for_acme(UserRenamed(user_id="1", name="Bo"))

    assert json.loads(renamed.body)["data"]["version"] == 2
    assert renamed.routing_key == "acme.petisco.2.event.user_renamed"


def test_class_names_become_snake_case_with_petisco_rule_for_acronyms() -> None:
    assert snake_name("UserCreated") == "user_created"
    assert snake_name("HTTPDone") == "h_t_t_p_done"


def test_a_new_message_gets_a_fresh_uuid_and_naive_utc_occurred_on() -> None:
    first, second = UserCreated(user_id="1", name="a"), UserCreated(user_id="1", name="a")

    assert uuid.UUID(first.message_id).version == 4
    assert first.message_id != second.message_id
    assert first.occurred_on.tzinfo is None
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(now - first.occurred_on) < timedelta(seconds=5)


def test_from_format_of_format_json_gives_back_an_equal_message() -> None:
    event = UserCreated(user_id="1", name="Ada").update_meta({"trace": "x"})

    again = UserCreated.from_format(event.format_json())

    assert again == event
    assert again.message_id == event.message_id
    assert again.occurred_on == event.occurred_on
    assert again.meta == {"trace": "x"}
    assert hash(again) == hash(event)


def test_from_format_accepts_a_dict_bytes_and_str_body() -> None:
    event = fixed(UserCreated(user_id="1", name="Ada"))

    for body in (event.format(), event.format_json(), event.format_json().encode()):
        assert UserCreated.from_format(body) == event


def test_messages_with_different_ids_or_types_are_not_equal() -> None:
    event = UserCreated(user_id="1", name="Ada")

    assert event != UserCreated(user_id="1", name="Ada")
    assert event != UserRenamed.from_format(event.format_json())
    assert event != "not a message"


def test_datetimes_uuids_decimals_dates_enums_sets_and_nested_models_serialize() -> None:
    attributes = profile().format()["data"]["attributes"]

    assert attributes == {
        "at": "2026-01-01 10:00:00.000000",  # aware datetimes are written as naive UTC
        "birthday": "1990-05-17",
        "ref": "00000000-0000-0000-0000-000000000007",
        "balance": "10.10",
        "address": {"city": "Barcelona", "since": "2020-02-03 04:05:06.000007"},
        "color": "red",
        "tags": ["a", "b"],
        "scores": [1.5, 2.0],
        "pair": [1, 2],
        "extra": {"nested": {"ok": True, "n": None}},
        "note": None,
    }


def test_a_message_with_rich_attributes_round_trips() -> None:
    event = profile()

    again = ProfileUpdated.from_format(event.format_json())

    assert again == event
    assert again.balance == Decimal("10.10")
    assert again.ref == uuid.UUID(int=7)
    assert again.color is Color.RED
    assert again.address.city == "Barcelona"
    assert again.tags == {"a", "b"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (BlobAttached(blob=Unserializable()), "BlobAttached.blob"),
        (
            PayloadAttached(payload={"inner": {"bad": object()}}),
            "PayloadAttached.payload.inner.bad",
        ),
        (PayloadAttached(payload={"items": [1, object()]}), "PayloadAttached.payload.items[1]"),
        (PayloadAttached(payload={"x": float("nan")}), "PayloadAttached.payload.x"),
        (PayloadAttached(payload={"x": float("inf")}), "PayloadAttached.payload.x"),
        (PayloadAttached(payload={1: "int key"}), "PayloadAttached.payload"),
    ],
)
def test_an_attribute_that_cannot_be_serialized_raises_invalid_message_naming_the_field(
    message: DomainEvent, field: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        message.format_json()

    assert str(caught.value).startswith(field + ":")


def test_unserializable_meta_raises_invalid_message_naming_meta() -> None:
    event = UserCreated(user_id="1", name="Ada").update_meta({"when": object()})

    with pytest.raises(InvalidMessage, match=r"^UserCreated\.meta\.when:"):
        event.format_json()


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"no_data": {}}',
        '{"data": {"id": "not-a-uuid", "occurred_on": "2026-01-01 10:00:00.000000"}}',
        '{"data": {"id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11", "occurred_on": "yesterday",'
        ' "attributes": {"user_id": "1", "name": "a"}}}',
        '{"data": {"id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11",'
        ' "occurred_on": "2026-01-01 10:00:00.000000", "attributes": {"user_id": "1"}}}',
    ],
)
def test_from_format_of_a_bad_body_raises_invalid_message(body: str) -> None:
    with pytest.raises(InvalidMessage, match="cannot read a UserCreated"):
        UserCreated.from_format(body)


def test_prepare_keeps_order_and_serializes_each_body_once() -> None:
    events = [fixed(UserCreated(user_id=str(i), name="a")) for i in range(3)]
    events[1]._message_id = str(uuid.UUID(int=1))
    events[2]._message_id = str(uuid.UUID(int=2))

    prepared = prepare_for_acme(events)

    assert [p.message_id for p in prepared] == [e.message_id for e in events]
    assert [p.body for p in prepared] == [e.format_json().encode() for e in events]
    assert all(p.occurred_on == FIXED_TIME for p in prepared)


def test_a_routing_key_over_amqps_255_bytes_is_refused_before_anything_is_sent() -> None:
    # "acme." + service + ".1.event.user_created" is exactly 255 bytes with this service
    ok_service = "s" * (255 - len("acme..1.event.user_created"))
    too_long = ok_service + "s"

    prepare_for_acme(UserCreated(user_id="1", name="a"), service=ok_service)
    with pytest.raises(InvalidMessage, match=r"routing key of message .* is 256 bytes"):
        prepare_for_acme(UserCreated(user_id="1", name="a"), service=too_long)


def test_a_message_exactly_at_the_size_limit_passes_and_one_byte_over_fails() -> None:
    event = UserCreated(user_id="1", name="Ada")
    size = len(event.format_json().encode())

    prepare(event, kind=DomainEvent, organization="a", service="b", max_bytes=size)
    with pytest.raises(MessageTooLarge, match=f"{size} bytes, over the limit of {size - 1}"):
        prepare(event, kind=DomainEvent, organization="a", service="b", max_bytes=size - 1)
