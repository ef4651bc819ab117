"""Domain events and commands, and their petisco-compatible wire format.

A message's body is UTF-8 JSON, byte-compatible with petisco::

    {"data": {"id": ..., "type": "user.created", "type_message": "domain_event", "version": 1,
              "occurred_on": "2026-01-01 10:00:00.000000", "attributes": {...}, "meta": {...}}}

and its routing key is ``{organization}.{service}.{version}.{event|command}.{snake_name}``.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from fallbackbus.errors import InvalidMessage, MessageTooLarge

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
KIND_DOMAIN_EVENT = "domain_event"
KIND_COMMAND = "command"
# routing-key word per ``type_message``, as petisco builds it
ROUTING_WORD = {KIND_DOMAIN_EVENT: "event", KIND_COMMAND: "command"}

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def snake_name(class_name: str) -> str:
    """``UserCreated`` -> ``user_created``; petisco's rule, so ``HTTPDone`` -> ``h_t_t_p_done``."""
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


def routing_key(organization: str, service: str, version: int, kind: str, dotted_type: str) -> str:
    """The petisco routing key of a message, from its dotted type name (``user.created``)."""
    try:
        word = ROUTING_WORD[kind]
    except KeyError:
        raise InvalidMessage(f"unknown message kind {kind!r}") from None
    return f"{organization}.{service}.{version}.{word}.{dotted_type.replace('.', '_')}"


def exchange_name(organization: str, service: str) -> str:
    return f"{organization}.{service}"


class Message(BaseModel):
    """Base of :class:`DomainEvent` and :class:`Command`: typed fields are its attributes.

    ``message_version`` (class variable) sets the version written on the wire; default 1.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    message_version: ClassVar[int] = 1
    message_kind: ClassVar[str] = "message"

    _message_id: str = PrivateAttr(default_factory=lambda: str(uuid.uuid4()))
    _occurred_on: datetime = PrivateAttr(
        default_factory=lambda: datetime.now(UTC).replace(tzinfo=None)
    )
    _meta: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def message_id(self) -> str:
        return self._message_id

    @property
    def occurred_on(self) -> datetime:
        """When the message was created, naive UTC (petisco's convention)."""
        return self._occurred_on

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    @classmethod
    def message_name(cls) -> str:
        """The dotted type name written in ``data.type``: ``UserCreated`` -> ``user.created``."""
        return _dotted_name(cls)

    def update_meta(self, meta: Mapping[str, Any]) -> Self:
        """Merge ``meta`` into the message's meta (petisco's name); returns the message."""
        if not isinstance(meta, Mapping):
            raise InvalidMessage(f"meta must be a mapping, got {type(meta).__name__}")
        self._meta = {**self._meta, **meta}
        return self

    def format(self) -> dict[str, Any]:
        """The petisco body as a dict; raises :class:`InvalidMessage` naming a bad field."""
        cls = type(self)
        # Plain JSON values are taken as they are; only the others go through _to_wire. This
        # runs on every publish, so it avoids per-field work that most messages do not need.
        attributes = {
            name: value
            if type(value) in _JSON_SCALARS
            else _to_wire(value, f"{cls.__name__}.{name}")
            for name, value in self.__dict__.items()
        }
        private = self.__pydantic_private__ or {}  # one lookup, not one __getattr__ per field
        meta = private["_meta"]
        return {
            "data": {
                "id": private["_message_id"],
                "type": _dotted_name(cls),
                "type_message": self.message_kind,
                "version": self.message_version,
                "occurred_on": private["_occurred_on"].strftime(TIME_FORMAT),
                "attributes": attributes,
                "meta": _to_wire(meta, f"{cls.__name__}.meta") if meta else {},
            }
        }

    def format_json(self) -> str:
        # json.dumps defaults (", " / ": ", ASCII escapes) are what petisco writes.
        return json.dumps(self.format())

    @classmethod
    def from_format(cls, body: Mapping[str, Any] | str | bytes) -> Self:
        """Rebuild a message from its body; ``from_format(m.format_json()) == m``."""
        try:
            raw = body if isinstance(body, Mapping) else json.loads(body)
            data = raw["data"]
            attributes = data.get("attributes") or {}
            message = cls.model_validate(attributes)
            message._message_id = str(uuid.UUID(str(data["id"])))
            message._occurred_on = datetime.strptime(str(data["occurred_on"]), TIME_FORMAT)
            message._meta = dict(data.get("meta") or {})
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise InvalidMessage(f"cannot read a {cls.__name__} from this body: {exc}") from exc
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or type(other) is not type(self):
            return False
        return self.format() == other.format()

    def __hash__(self) -> int:
        return hash(self._message_id)


class DomainEvent(Message):
    """Something that happened; published to ``{org}.{service}.{version}.event.{name}``."""

    message_kind: ClassVar[str] = KIND_DOMAIN_EVENT


class Command(Message):
    """Something to do; dispatched to ``{org}.{service}.{version}.command.{name}``."""

    message_kind: ClassVar[str] = KIND_COMMAND


# AMQP 0-9-1 "shortstr": exchange names and routing keys are at most 255 bytes.
MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready for the wire: what publishers publish and fallback stores keep.

    Built once per ``publish()`` (so bad input fails before anything is sent) or, on replay,
    from a stored entry, in which case ``body`` is the stored body byte for byte.
    """

    message_id: str
    type: str
    kind: str
    version: int
    organization: str
    service: str
    body: bytes
    occurred_on: datetime | None = None

    @property
    def exchange(self) -> str:
        return exchange_name(self.organization, self.service)

    @property
    def routing_key(self) -> str:
        return routing_key(self.organization, self.service, self.version, self.kind, self.type)

    def check_names(self) -> None:
        """Raise :class:`InvalidMessage` if RabbitMQ can never take the exchange or routing key."""
        for what, name in (("exchange", self.exchange), ("routing key", self.routing_key)):
            if len(name.encode()) > MAX_NAME_BYTES:
                raise InvalidMessage(
                    f"{what} of message {self.message_id} is {len(name.encode())} bytes, "
                    f"over AMQP's limit of {MAX_NAME_BYTES}"
                )


def prepare(
    messages: Message | Sequence[Message],
    *,
    kind: type[Message],
    organization: str,
    service: str,
    max_bytes: int,
) -> list[Outgoing]:
    """Validate and serialize a publish call's input, all of it, before anything is sent."""
    items = messages if isinstance(messages, list | tuple) else [messages]
    if not items:
        raise InvalidMessage("nothing to publish: the list is empty")
    prepared = []
    checked: set[tuple[str, int]] = set()
    for position, message in enumerate(items):
        if not isinstance(message, kind):
            raise InvalidMessage(
                f"item {position} is a {type(message).__name__}, not a {kind.__name__}"
            )
        data = message.format()["data"]
        # json.dumps defaults (", " / ": ", ASCII escapes) are what petisco writes.
        body = json.dumps({"data": data}).encode()
        if len(body) > max_bytes:
            raise MessageTooLarge(
                f"{type(message).__name__} {data['id']} is {len(body)} bytes, "
                f"over the limit of {max_bytes}"
            )
        outgoing = Outgoing(
            message_id=data["id"],
            type=data["type"],
            kind=data["type_message"],
            version=data["version"],
            organization=organization,
            service=service,
            body=body,
            occurred_on=message.occurred_on,
        )
        if (outgoing.type, outgoing.version) not in checked:  # same type, same names
            outgoing.check_names()
            checked.add((outgoing.type, outgoing.version))
        prepared.append(outgoing)
    return prepared


_JSON_SCALARS = (str, int, bool, type(None))


@functools.cache
def _dotted_name(cls: type[Message]) -> str:
    return snake_name(cls.__name__).replace("_", ".")


def _to_wire(value: Any, path: str) -> Any:
    """Convert an attribute to JSON-ready data the way petisco's consumers expect it."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidMessage(f"{path}: {value!r} cannot be written as JSON")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime(TIME_FORMAT)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return _to_wire(value.value, path)
    if isinstance(value, BaseModel):
        return {k: _to_wire(getattr(value, k), f"{path}.{k}") for k in type(value).model_fields}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(f"{path}: key {key!r} is not a string")
            out[key] = _to_wire(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_to_wire(item, f"{path}[{i}]") for i, item in enumerate(items)]
    raise InvalidMessage(f"{path}: a {type(value).__name__} cannot be serialized")
