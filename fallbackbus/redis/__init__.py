"""Redis side of fallbackbus: the fallback buses and the store they write with."""

from fallbackbus.redis.buses import RedisCommandBus, RedisDomainEventBus
from fallbackbus.redis.client import redis_from_url
from fallbackbus.redis.keys import ListKeys
from fallbackbus.redis.store import RedisFallbackStore

__all__ = [
    "ListKeys",
    "RedisCommandBus",
    "RedisDomainEventBus",
    "RedisFallbackStore",
    "redis_from_url",
]
