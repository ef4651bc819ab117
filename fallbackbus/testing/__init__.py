"""Helpers for the tests of applications that use fallbackbus.

``InMemoryDomainEventBus`` / ``InMemoryCommandBus`` record what would have been published, with
the real validation and serialization, so a test can assert on the exact wire body and routing
key without RabbitMQ. ``unavailable=True`` makes one behave like a dead broker, to test
``fallback=`` chains.
"""

from __future__ import annotations

from collections.abc import Sequence

from fallbackbus.bus import CommandBus, DomainEventBus, MessageBus
from fallbackbus.messages import Outgoing


class _InMemoryDelivery(MessageBus):
    def __init__(
        self,
        organization: str = "acme",
        service: str = "service",
        *,
        fallback: MessageBus | None = None,
        unavailable: bool = False,
    ) -> None:
        super().__init__(organization, service, fallback=fallback)
        self.unavailable = unavailable
        self.delivered: list[Outgoing] = []
        self.reasons: list[str | None] = []

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        if self.unavailable:
            self._to_fallback([(m, "in-memory bus set unavailable") for m in messages])
            return
        self.delivered.extend(messages)
        self.reasons.extend([reason] * len(messages))

    @property
    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.delivered]


class InMemoryDomainEventBus(_InMemoryDelivery, DomainEventBus):
    """Records published domain events instead of sending them."""


class InMemoryCommandBus(_InMemoryDelivery, CommandBus):
    """Records dispatched commands instead of sending them."""


__all__ = ["InMemoryCommandBus", "InMemoryDomainEventBus"]
