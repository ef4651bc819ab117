"""Replay while its dependencies fail: scenarios 5 (audit database down) and 7 (hung broker).

The replay engine runs in-process here, so the test can break a dependency at an exact point of a
run (``on_batch`` fires after a batch is published, audited and deleted), then check the state of
every entry before letting the list drain.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from fallbackbus import RabbitMqConnector
from fallbackbus.rabbitmq import RabbitMqPublisher
from fallbackbus.replay import STOPPED, Replayer
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tests.faults.helpers import (
    AuditDatabase,
    census,
    collect,
    entry_id,
    fill_backlog,
    replay_until_empty,
    run_bounded,
    waiting_keys,
)
from tests.faults.scoreboard import ScenarioRow
from tests.support.consumer import QueueCounter
from tests.support.replay import after_batches
from tests.support.services import RABBITMQ_URL, Names

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ids_in_redis(client: redis.Redis, names: Names) -> set[str]:
    return {
        entry_id(raw) or "?"
        for key in waiting_keys(client, names.keys())
        for raw in client.lrange(key, 0, -1)
    }


@pytest.mark.scenario(5, "audit PostgreSQL down mid-run (via proxy), 3 outages + 1 at start")
def test_an_audit_database_outage_stops_the_run_and_nothing_leaves_redis_unaudited(
    names: Names,
    redis_client: redis.Redis,
    counter: QueueCounter,
    audit_db: AuditDatabase,
    postgres_proxy: FaultProxy,
    score: ScenarioRow,
) -> None:
    total, batch_size, outages = 3000, 100, 3
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    sent = fill_backlog(redis_client, names, total)
    replayer = Replayer(
        redis=redis_client,
        publisher=RabbitMqPublisher(RabbitMqConnector(RABBITMQ_URL)),
        audit=audit_db.store(audit_db.url(postgres_proxy), connect_timeout=1),
        settings=Settings.from_env({}),
        key_prefix=names.prefix,
    )

    # Down before the run starts: nothing may be claimed, so nothing is published.
    postgres_proxy.refuse()
    report = replayer.run("domain.events", batch_size=batch_size)
    postgres_proxy.pass_through()
    assert report.status == STOPPED, report
    assert report.republished == 0, report
    assert redis_client.llen(names.keys().source) == total
    counter.drain(None, idle=0.3)
    assert counter.received == 0, "published although the audit database was down"

    # Down after 1-3 batches of a run, three times.
    unaudited_violations: list[str] = []
    for _ in range(outages):
        report = replayer.run(
            "domain.events",
            batch_size=batch_size,
            on_batch=after_batches(rng.randint(1, 3), postgres_proxy.refuse),
        )
        assert report.status == STOPPED, report
        assert "audit" in (report.stop_reason or ""), report
        # Every id is either audited (so it may be gone from Redis) or still in Redis.
        accounted = ids_in_redis(redis_client, names) | set(audit_db.ids_with("republished"))
        unaudited_violations.extend(mid for mid in sent if mid not in accounted)
        postgres_proxy.pass_through()
        counter.drain(None, idle=0.1)

    replay_until_empty(replayer, redis_client, names.keys(), batch_size)
    collect(counter, set(sent))
    ledger = census(sent, counter.ids, redis_client, names.keys())
    audited = audit_db.ids_with("republished")
    score.count_ledger(
        ledger,
        messages=total,
        note=(
            f"bound {outages} x {batch_size} (a batch published but not audited is replayed); "
            f"{len(audited):,} republished rows; seed {seed}"
        ),
    )
    assert not unaudited_violations, (
        f"deleted from Redis without an audit row: {unaudited_violations[:5]}"
    )
    ledger.assert_nothing_lost()
    assert ledger.duplicate_count() <= outages * batch_size, ledger.summary()
    assert sorted(audited) == sorted(sent), "not exactly one republished row per message"
    assert set(audited) <= set(counter.ids), "audited as republished but never received"


HANG_BOUND = 4.0  # seconds: connect timeout 1 s + confirm timeout 1 s + 2 s of slack


@pytest.mark.scenario(7, "hung broker during replay")
@pytest.mark.parametrize(
    ("when", "second_service"),
    [
        pytest.param("before the run", None, id="hung-before-run"),
        pytest.param("after batch 1", None, id="hung-after-batch-1"),
        # The next batch needs exchange.declare, a synchronous call on the hung connection.
        pytest.param("after batch 1", "other", id="hung-before-a-new-exchange"),
    ],
)
def test_a_hung_broker_ends_the_run_within_its_timeouts_with_entries_back_in_order(
    when: str,
    second_service: str | None,
    names: Names,
    redis_client: redis.Redis,
    counter_for: Callable[[str], QueueCounter],
    audit_db: AuditDatabase,
    rabbitmq_proxy: FaultProxy,
    score: ScenarioRow,
) -> None:
    batch_size, first, rest = 200, 200, 1800
    # One counter per exchange, each with the ids it must receive.
    expected: dict[str, set[str]] = {names.service: set(), second_service or names.service: set()}
    counters = {service: counter_for(f"{names.organization}.{service}") for service in expected}
    sent: list[str] = []
    for service, count in [(names.service, first), (second_service or names.service, rest)]:
        ids = fill_backlog(redis_client, names, count, service)
        expected[service].update(ids)
        sent += ids
    source = names.keys().source
    original = redis_client.lrange(source, 0, -1)  # newest first, as LPUSHed
    replayer = Replayer(
        redis=redis_client,
        publisher=RabbitMqPublisher(
            RabbitMqConnector(
                rabbitmq_proxy.url_for(RABBITMQ_URL),
                connect_timeout=1,
                confirm_timeout=1,
                breaker_cooldown=0,
            )
        ),
        audit=audit_db.store(),
        settings=Settings.from_env({}),
        key_prefix=names.prefix,
    )

    if when == "before the run":
        rabbitmq_proxy.hang()
        on_batch = None
        expected_left = original
    else:
        on_batch = after_batches(1, rabbitmq_proxy.hang)
        expected_left = original[:-batch_size]  # the oldest batch went out before the hang
    report, elapsed, error = run_bounded(
        lambda: replayer.run("domain.events", batch_size=batch_size, on_batch=on_batch),
        bound=HANG_BOUND,
        unblock=rabbitmq_proxy.cut,
    )
    left = redis_client.lrange(source, 0, -1)

    rabbitmq_proxy.pass_through()
    replay_until_empty(replayer, redis_client, names.keys(), batch_size)
    for service, one in counters.items():
        collect(one, expected[service], timeout=10)
    received = sum((one.ids for one in counters.values()), Counter[str]())
    ledger = census(sent, received, redis_client, names.keys())
    score.count_ledger(
        ledger,
        messages=len(sent),
        note=f"run ended after {elapsed:.1f} s (bound {HANG_BOUND} s)",
    )
    assert error is None, error
    assert report is not None
    assert report.status == STOPPED, report
    assert left == expected_left, "entries not back in their original order"
    ledger.assert_nothing_lost(allow_duplicates=False)
    run = next(r for r in audit_db.runs() if r["run_id"] == report.run_id)
    assert run["status"] == STOPPED, run
    assert run["stop_reason"], run
    assert elapsed < HANG_BOUND, f"the run took {elapsed:.1f} s with a hung broker"
