"""Redis buses: LPUSH the petisco envelope onto ``domain.events`` / ``commands``."""

from __future__ import annotations

from collections.abc import Sequence

import redis as redis_py

from fallbackbus.bus import CommandBus, DomainEventBus, MessageBus
from fallbackbus.errors import FallbackUnavailable
from fallbackbus.messages import Outgoing
from fallbackbus.redis.keys import COMMANDS, DOMAIN_EVENTS, ListKeys
from fallbackbus.redis.store import RedisFallbackStore

DIRECT = "published directly to the Redis bus"


class _RedisDelivery(MessageBus):
    default_list: str = DOMAIN_EVENTS

    def __init__(
        self,
        organization: str,
        service: str,
        redis_database: redis_py.Redis,
        *,
        list_name: str | None = None,
        key_prefix: str = "",
        fallback: MessageBus | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        super().__init__(
            organization, service, fallback=fallback, max_message_bytes=max_message_bytes
        )
        self.store = RedisFallbackStore(
            redis_database, ListKeys(list_name or self.default_list, key_prefix)
        )

    @property
    def keys(self) -> ListKeys:
        return self.store.keys

    def deliver(self, messages: Sequence[Outgoing], reason: str | None = None) -> None:
        try:
            self.store.store(messages, reason or DIRECT)
        except FallbackUnavailable as exc:
            self._to_fallback([(m, str(exc)) for m in messages])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.organization!r}, {self.service!r}, {self.keys.source!r})"
        )


class RedisDomainEventBus(_RedisDelivery, DomainEventBus):
    """Stores domain events in the ``domain.events`` list (name and prefix configurable)."""

    default_list = DOMAIN_EVENTS


class RedisCommandBus(_RedisDelivery, CommandBus):
    """Stores commands in the ``commands`` list (name and prefix configurable)."""

    default_list = COMMANDS
