"""A replay run in its own process, driven by a test through stdin/stdout.

``python -m tests.replay._child '<json spec>'``. The spec names the keys, the audit database and
what to do:

- ``stall``: ``"publish"`` stops the run inside its ``stall_on``-th publish call, after the claim
  and before anything is sent; ``"record"`` stops it inside its ``stall_on``-th audit write, after
  RabbitMQ confirmed the batch and before the entries are deleted. Either way the child prints
  ``STALLED`` and sleeps until the test SIGKILLs it.
- ``wait_for_go``: print ``READY`` once connected, then wait for a line on stdin before running,
  so that several children start draining at the same moment.
- ``measure_memory``: sample the resident set size after every batch.

At the end it prints ``REPORT <json>`` (and ``MEMORY <json>`` when measuring).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import redis

from fallbackbus.audit import SqlAuditStore
from fallbackbus.rabbitmq.publisher import RabbitMqPublisher
from fallbackbus.replay import Replayer, ReplayReport
from tests.replay.conftest import connector, settings
from tests.support.services import RABBITMQ_URL, REDIS_URL


def say(line: str) -> None:
    print(line, flush=True)


def stall_on_call(call: Callable[..., Any], nth: int) -> Callable[..., Any]:
    calls = 0

    def stalling(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            say("STALLED")
            while True:
                time.sleep(60)
        return call(*args, **kwargs)

    return stalling


def main(spec: dict[str, Any]) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    audit = SqlAuditStore(spec["audit_url"])
    publisher = RabbitMqPublisher(connector(spec.get("rabbitmq_url", RABBITMQ_URL)))
    replayer = Replayer(
        redis=client,
        publisher=publisher,
        audit=audit,
        settings=settings(replay_lease_seconds=spec.get("lease_seconds", 300.0)),
        key_prefix=spec["prefix"],
    )
    if spec.get("stall") == "publish":
        publisher.publish = stall_on_call(publisher.publish, spec["stall_on"])  # type: ignore[method-assign]
    elif spec.get("stall") == "record":
        audit.record = stall_on_call(audit.record, spec["stall_on"])  # type: ignore[method-assign]

    process = psutil.Process()
    samples: list[int] = []

    def on_batch(report: ReplayReport) -> None:
        if spec.get("measure_memory"):
            samples.append(process.memory_info().rss)

    if spec.get("wait_for_go"):
        audit.ping()
        client.ping()
        say("READY")
        sys.stdin.readline()
    before = process.memory_info().rss
    report = replayer.run(
        spec.get("list_name", "domain.events"),
        limit=spec.get("limit"),
        batch_size=spec.get("batch_size"),
        on_batch=on_batch,
    )
    if spec.get("measure_memory"):
        say("MEMORY " + json.dumps({"before": before, "samples": samples}))
    say("REPORT " + json.dumps(report.as_dict()))
    replayer.publisher.connector.close()
    audit.dispose()
    client.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
