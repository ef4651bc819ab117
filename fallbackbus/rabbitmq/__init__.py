"""RabbitMQ side of fallbackbus: connector, confirming publisher and buses."""

from fallbackbus.rabbitmq.buses import RabbitMqCommandBus, RabbitMqDomainEventBus
from fallbackbus.rabbitmq.connector import RabbitMqConnector
from fallbackbus.rabbitmq.publisher import PublishResult, RabbitMqPublisher

__all__ = [
    "PublishResult",
    "RabbitMqCommandBus",
    "RabbitMqConnector",
    "RabbitMqDomainEventBus",
    "RabbitMqPublisher",
]
