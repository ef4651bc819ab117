"""fallbackbus: RabbitMQ buses that never lose a message.

Once ``publish()`` returns, every message is confirmed by RabbitMQ or stored in Redis; the replay
service republishes what was stored and audits every outcome.
"""

from fallbackbus.bus import CommandBus, DomainEventBus, MessageBus
from fallbackbus.errors import (
    AuditUnavailable,
    BrokerUnavailable,
    BusCannotPublish,
    ConfigurationError,
    FallbackBusError,
    FallbackUnavailable,
    InvalidMessage,
    MessageTooLarge,
    ReplayError,
)
from fallbackbus.messages import Command, DomainEvent, Message
from fallbackbus.rabbitmq import RabbitMqCommandBus, RabbitMqConnector, RabbitMqDomainEventBus
from fallbackbus.redis import RedisCommandBus, RedisDomainEventBus
from fallbackbus.settings import Settings

__all__ = [
    "AuditUnavailable",
    "BrokerUnavailable",
    "BusCannotPublish",
    "Command",
    "CommandBus",
    "ConfigurationError",
    "DomainEvent",
    "DomainEventBus",
    "FallbackBusError",
    "FallbackUnavailable",
    "InvalidMessage",
    "Message",
    "MessageBus",
    "MessageTooLarge",
    "RabbitMqCommandBus",
    "RabbitMqConnector",
    "RabbitMqDomainEventBus",
    "RedisCommandBus",
    "RedisDomainEventBus",
    "ReplayError",
    "Settings",
]
