"""Fill a fallback list fast: pre-encoded entries, one LPUSH of many per pipeline round trip."""

from __future__ import annotations

import uuid

import redis

from bench.env import Destination
from bench.workload import new_event
from fallbackbus import DomainEvent
from fallbackbus.envelope import encode
from fallbackbus.messages import prepare

_PER_LPUSH = 1_000
_LPUSH_PER_PIPELINE = 20


def fill(client: redis.Redis, dest: Destination, count: int) -> int:
    """Push ``count`` entries as the Redis bus writes them, each with a fresh message id.

    Returns the size of one entry in bytes (they all have the same size).
    """
    (outgoing,) = prepare(
        new_event(),
        kind=DomainEvent,
        organization=dest.organization,
        service=dest.service,
        max_bytes=1 << 20,
    )
    template = encode(outgoing, reason="bench backlog")
    placeholder = outgoing.message_id.encode()
    pushed = 0
    while pushed < count:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(_LPUSH_PER_PIPELINE):
                size = min(_PER_LPUSH, count - pushed)
                if size <= 0:
                    break
                entries = [
                    template.replace(placeholder, str(uuid.uuid4()).encode()) for _ in range(size)
                ]
                pipe.lpush(dest.fallback_keys.source, *entries)
                pushed += size
            pipe.execute()
    return len(template)
