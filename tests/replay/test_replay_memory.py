"""Memory stays flat however long the list is: a sanity check, not the benchmark (``bench/``
measures the peak on 1,000,000 entries)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable

import pytest

from fallbackbus.messages import Outgoing
from fallbackbus.redis.store import RedisFallbackStore
from tests.replay.conftest import SERVICE, Backlog, Child, Tally, ledger_for
from tests.support.consumer import QueueCounter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Each entry below is 370 bytes: 100,000 of them are 35 MB of JSON in Redis. Held at once, as a
# list of bytes (what LRANGE of the whole list returns), they add 41 MB to a process's resident
# set; decoded with json.loads, 290 MB. A drain in batches adds about 8 MB over the whole run
# (measured: RSS before the run to its peak; the first batch's connections and caches included).
# The bound sits between the two: 25 MB, half the 50 MB this test allowed for 200,000 entries.
ENTRIES = 100_000
BATCH = 1000
MAX_GROWTH = 25 * 1024 * 1024


def small_events(organization: str, start: int, count: int) -> list[Outgoing]:
    """Ready-made petisco bodies: a 100,000-entry backlog is written in seconds, not minutes."""
    events = []
    for index in range(start, start + count):
        message_id = str(uuid.uuid4())
        body = json.dumps(
            {
                "data": {
                    "id": message_id,
                    "type": "user.created",
                    "type_message": "domain_event",
                    "version": 1,
                    "occurred_on": "2024-05-01 10:00:00.000000",
                    "attributes": {"index": index},
                    "meta": {},
                }
            }
        )
        events.append(
            Outgoing(
                message_id=message_id,
                type="user.created",
                kind="domain_event",
                version=1,
                organization=organization,
                service=SERVICE,
                body=body.encode(),
            )
        )
    return events


def test_draining_100000_entries_in_batches_keeps_the_resident_memory_flat(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    sqlite_url: str,
    sqlite_audit: object,
    children: Callable[..., Child],
    key_prefix: str,
    tally: Tally,
) -> None:
    # Given 100,000 small entries stored the way the buses store them
    store = RedisFallbackStore(backlog.client, backlog.keys)
    ids: list[str] = []
    for start in range(0, ENTRIES, 10_000):
        events = small_events(organization, start, 10_000)
        store.store(events, reason="RabbitMQ was down")
        ids += [event.message_id for event in events]

    # When a fresh process drains them in batches of 1,000, counted by id as they arrive
    consume = threading.Thread(target=counter.drain, kwargs={"expected": ENTRIES, "timeout": 240})
    consume.start()
    run = children(
        prefix=key_prefix,
        audit_url=sqlite_url,
        batch_size=BATCH,
        limit=ENTRIES,
        measure_memory=True,
    )
    memory = json.loads(run.expect("MEMORY", timeout=240))
    report = json.loads(run.expect("REPORT"))
    consume.join()

    # Then every entry went out once, and the resident set grew by less than 25 MB from before
    # the run (or after its first batch, if lower) to its peak: the 35 MB backlog was never
    # loaded at once, neither up front nor bit by bit
    samples = memory["samples"]
    growth = max(samples) - min(memory["before"], samples[0])
    ledger = ledger_for(ids, counter, backlog)
    tally.ledger(ledger)
    assert (report["status"], report["republished"]) == ("completed", ENTRIES)
    assert len(samples) == ENTRIES // BATCH
    assert growth < MAX_GROWTH, f"RSS grew {growth / 2**20:.1f} MB while draining"
    ledger.assert_nothing_lost(allow_duplicates=False)
