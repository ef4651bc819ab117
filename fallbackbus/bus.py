"""The bus interface the application sees: ``publish`` events, ``dispatch`` commands.

A bus validates and serializes everything first (so a batch is never half published), then hands
the prepared messages to :meth:`MessageBus.deliver`, which each technology implements. ``fallback``
is any other bus: what one bus cannot deliver, it passes down the chain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from fallbackbus.errors import BusCannotPublish
from fallbackbus.messages import Command, DomainEvent, Message, Outgoing, prepare
from fallbackbus.settings import Settings

MessageOrList = Message | Sequence[Message]


class MessageBus(ABC):
    message_class: ClassVar[type[Message]] = Message

    def __init__(
        self,
        organization: str,
        service: str,
        *,
        fallback: MessageBus | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        for name, value in (("organization", organization), ("service", service)):
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise ValueError(f"{name} must be a non-empty string without spaces, got {value!r}")
        self.organization = organization
        self.service = service
        self.fallback = fallback
        self.max_message_bytes = max_message_bytes or Settings.from_env().max_message_bytes

    def prepare(self, messages: MessageOrList) -> list[Outgoing]:
        """Validate and serialize; raises :class:`InvalidMessage` before anything is sent."""
        return prepare(
            messages,
            kind=self.message_class,
            organization=self.organization,
            service=self.service,
            max_bytes=self.max_message_bytes,
        )

    @abstractmethod
    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        """Publish or store prepared messages; raise :class:`BusCannotPublish` for what was not.

        ``reason`` says why they came here when this bus is another bus's fallback.
        """

    def _to_fallback(self, failed: Sequence[tuple[Outgoing, str]]) -> None:
        """Send what this bus could not deliver down the chain, grouped by reason."""
        by_reason: dict[str, list[Outgoing]] = {}
        for message, why in failed:
            by_reason.setdefault(why, []).append(message)
        # Try every group before raising, so the error names every message that was not stored.
        causes: list[str] = []
        unsent: list[str] = []
        last: BusCannotPublish | None = None
        for why, messages in by_reason.items():
            cause = f"{type(self).__name__}: {why}"
            if self.fallback is None:
                causes.append(cause)
                unsent.extend(m.message_id for m in messages)
                continue
            try:
                self.fallback.deliver(messages, reason=why)
            except BusCannotPublish as exc:
                causes.extend([cause, *exc.causes])
                unsent.extend(exc.message_ids)
                last = exc
        if unsent:
            raise BusCannotPublish(causes, unsent) from last


class DomainEventBus(MessageBus):
    message_class: ClassVar[type[Message]] = DomainEvent

    def publish(self, domain_event: MessageOrList) -> None:
        """Publish one event or a list; returns once every one is confirmed or stored."""
        self.deliver(self.prepare(domain_event))


class CommandBus(MessageBus):
    message_class: ClassVar[type[Message]] = Command

    def dispatch(self, command: MessageOrList) -> None:
        """Dispatch one command or a list; returns once every one is confirmed or stored."""
        self.deliver(self.prepare(command))
