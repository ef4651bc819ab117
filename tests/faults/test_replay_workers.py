"""Replay worker processes killed and racing: scenarios 2 and 3 of the fault suite.

Workers are real processes (``tests.faults.replay_worker``) built from settings the way a Celery
task builds them, draining a backlog stored through the real Redis bus, against the machine's
RabbitMQ, Redis and PostgreSQL. Every id is then counted in the queue bound to the exchange.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.helpers import (
    AuditDatabase,
    WorkerProcess,
    assert_counters_balance,
    census,
    collect,
    fill_backlog,
    waiting_keys,
)
from tests.faults.scoreboard import ScenarioRow
from tests.support.consumer import QueueCounter, draining
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def worker_args(names: Names, audit_db: AuditDatabase, batch_size: int, lease: float) -> list[str]:
    return [
        "--prefix",
        names.prefix,
        "--redis-url",
        REDIS_URL,
        "--amqp-url",
        RABBITMQ_URL,
        "--audit-url",
        audit_db.url(),
        "--batch-size",
        str(batch_size),
        "--lease-seconds",
        str(lease),
    ]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str, list[str]], WorkerProcess]]:
    """Start replay worker processes; any still alive when the test ends is killed."""
    started: list[WorkerProcess] = []

    def start(name: str, args: list[str]) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, name, args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def wait_for_progress(client: redis.Redis, key: str, below: int, worker: WorkerProcess) -> None:
    """Wait until the worker has claimed something (the source got shorter than ``below``)."""
    deadline = time.monotonic() + 30
    while client.llen(key) >= below:
        if worker.process.poll() is not None:
            raise AssertionError(f"{worker.name} exited early\n{worker.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{worker.name} made no progress in 30 s\n{worker.output()}")
        time.sleep(0.005)


@pytest.mark.scenario(2, "replay worker SIGKILLed 5x during a 50,000-entry drain")
def test_a_replay_worker_killed_five_times_mid_drain_loses_nothing_and_repeats_at_most_a_batch(
    names: Names,
    redis_client: redis.Redis,
    counter: QueueCounter,
    audit_db: AuditDatabase,
    spawn: Callable[[str, list[str]], WorkerProcess],
    score: ScenarioRow,
) -> None:
    total, batch_size, kills = 50_000, 500, 5
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    sent = fill_backlog(redis_client, names, total)
    source = names.keys().source
    args = worker_args(names, audit_db, batch_size, lease=1.0)

    stranded = []  # entries left in a processing list by each kill
    with draining(counter):
        for n in range(kills):
            worker = spawn(f"worker-{n}", args)
            wait_for_progress(redis_client, source, redis_client.llen(source), worker)
            # Anywhere from mid-claim to mid-delete of the first few batches.
            time.sleep(rng.uniform(0.0, 0.6))
            worker.kill()
            processing = waiting_keys(redis_client, names.keys())[1:]
            stranded.append(sum(redis_client.llen(key) for key in processing))
        last = spawn("worker-final", args)
        assert last.wait(timeout=120) == 0, last.output()
    collect(counter, set(sent))
    ledger = census(sent, counter.ids, redis_client, names.keys())
    score.count_ledger(
        ledger,
        messages=total,
        note=(
            f"bound {kills} x {batch_size}; claimed-but-unfinished entries left by each kill: "
            f"{stranded}; seed {seed}"
        ),
    )
    ledger.assert_nothing_lost()
    assert ledger.duplicate_count() <= kills * batch_size, ledger.summary()
    assert sum(ledger.fallback.values()) == 0, "entries left in Redis after the final run"
    assert [r["status"] for r in last.reports()][-1:] == ["completed"], last.output()
    assert set(audit_db.ids_with("republished")) == set(sent), "a message without an audit row"
    assert any(stranded), "no kill landed inside a batch: the recovery path was not exercised"
    assert_counters_balance(names.prefix, "domain.events")


@pytest.mark.scenario(3, "4 replay processes drain one backlog at once, 5,000 stored meanwhile")
def test_four_replay_processes_draining_one_growing_backlog_at_once_lose_and_repeat_nothing(
    names: Names,
    redis_client: redis.Redis,
    counter: QueueCounter,
    audit_db: AuditDatabase,
    spawn: Callable[[str, list[str]], WorkerProcess],
    score: ScenarioRow,
) -> None:
    backlog, live, batch_size, processes = 20_000, 5_000, 100, 4
    sent = fill_backlog(redis_client, names, backlog)
    go = f"{names.prefix}go"
    args = [*worker_args(names, audit_db, batch_size, lease=60.0), "--go-key", go]
    workers = [spawn(f"worker-{n}", args) for n in range(processes)]
    with draining(counter):
        time.sleep(1.0)  # let every process import and connect, then start them all at once
        redis_client.set(go, "1")
        # Meanwhile the application keeps falling back: LPUSHes race the claims on one list.
        sent += fill_backlog(redis_client, names, live, chunk=50)
        for worker in workers:
            assert worker.wait(timeout=120) == 0, worker.output()
    collect(counter, set(sent))
    ledger = census(sent, counter.ids, redis_client, names.keys())
    shares = [sum(r["republished"] for r in w.reports()) for w in workers]
    audited = audit_db.ids_with("republished")
    score.count_ledger(
        ledger,
        messages=len(sent),
        note=f"republished per process: {', '.join(f'{s:,}' for s in shares)}",
    )
    ledger.assert_nothing_lost(allow_duplicates=False)
    assert sum(ledger.fallback.values()) == 0, "entries left in Redis after every drain ended"
    assert sum(shares) == len(sent), shares
    assert sum(1 for share in shares if share) >= 2, f"the drains did not overlap: {shares}"
    assert sorted(audited) == sorted(sent), "not exactly one republished row per message"
    assert_counters_balance(names.prefix, "domain.events")
