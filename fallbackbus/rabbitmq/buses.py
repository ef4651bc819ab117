"""RabbitMQ buses: publish with confirms; whatever is not confirmed goes to ``fallback``."""

from __future__ import annotations

from collections.abc import Sequence

from fallbackbus.bus import CommandBus, DomainEventBus, MessageBus
from fallbackbus.messages import Outgoing
from fallbackbus.rabbitmq.connector import RabbitMqConnector
from fallbackbus.rabbitmq.publisher import RabbitMqPublisher


class _RabbitMqDelivery(MessageBus):
    def __init__(
        self,
        organization: str,
        service: str,
        connector: RabbitMqConnector | None = None,
        *,
        fallback: MessageBus | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        super().__init__(
            organization, service, fallback=fallback, max_message_bytes=max_message_bytes
        )
        self.connector = connector or RabbitMqConnector()
        self.publisher = RabbitMqPublisher(self.connector)

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        result = self.publisher.publish(messages)
        if result.failed:
            self._to_fallback(result.failed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.organization!r}, {self.service!r}, "
            f"{self.connector!r}, fallback={self.fallback!r})"
        )


class RabbitMqDomainEventBus(_RabbitMqDelivery, DomainEventBus):
    """Publishes domain events to the ``{organization}.{service}`` topic exchange."""


class RabbitMqCommandBus(_RabbitMqDelivery, CommandBus):
    """Dispatches commands to the ``{organization}.{service}`` topic exchange."""
