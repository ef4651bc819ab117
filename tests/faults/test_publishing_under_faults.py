"""Publishing while the network and the servers fail: scenarios 1, 4 and 6 of the fault suite.

The promise under test: once ``publish()`` returns, each message is confirmed by RabbitMQ or
stored in Redis. ``BusCannotPublish.message_ids`` names what was *not* stored; every other id of
the call counts as acknowledged and must be found later.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import redis

from fallbackbus import (
    BusCannotPublish,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisDomainEventBus,
)
from fallbackbus.rabbitmq import RabbitMqPublisher
from fallbackbus.replay import Replayer
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tests.faults.helpers import (
    AuditDatabase,
    UserCreated,
    census,
    collect,
    entry_id,
    events,
    replay_until_empty,
)
from tests.faults.scoreboard import ScenarioRow
from tests.support.consumer import QueueCounter, draining
from tests.support.servers import PrivateRedis
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names, strict_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Outcomes:
    """What callers were told, per message id, by many publishing threads."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    refusals: list[BusCannotPublish] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)
    slowest_call: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, bus: RabbitMqDomainEventBus, batch: Sequence[UserCreated]) -> None:
        ids = [e.message_id for e in batch]
        started = time.monotonic()
        try:
            bus.publish(list(batch) if len(batch) > 1 else batch[0])
        except BusCannotPublish as exc:
            with self.lock:
                unsent = set(exc.message_ids)
                self.refused.extend(unsent)
                # The ids of the call that the error does not name were confirmed or stored.
                self.acknowledged.extend(i for i in ids if i not in unsent)
                self.refusals.append(exc)
        except BaseException as exc:
            with self.lock:
                self.unexpected.append(exc)
        else:
            with self.lock:
                self.acknowledged.extend(ids)
        finally:
            elapsed = time.monotonic() - started
            with self.lock:
                self.slowest_call = max(self.slowest_call, elapsed)

    @property
    def messages(self) -> int:
        return len(self.acknowledged) + len(self.refused)


def publish_from_threads(
    bus: RabbitMqDomainEventBus,
    outcomes: Outcomes,
    batch_sizes: Sequence[int],
    per_thread: int,
    keep_going: Callable[[], bool] = lambda: True,
    on_progress: Callable[[int], None] = lambda n: None,
) -> None:
    """One thread per entry of ``batch_sizes``, each publishing ``per_thread`` messages in
    batches of that size (1 = one ``publish`` per message), or until ``keep_going`` is False."""

    def work(thread: int, size: int) -> None:
        first = thread * per_thread
        for start in range(first, first + per_thread, size):
            if not keep_going():
                return
            batch = events(min(size, first + per_thread - start), start)
            outcomes.publish(bus, batch)
            on_progress(len(batch))

    threads = [
        threading.Thread(target=work, args=(n, size), name=f"publisher-{n}")
        for n, size in enumerate(batch_sizes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.scenario(1, "10,000 messages, 4 threads, RabbitMQ link cut 3x, then replay")
def test_ten_thousand_messages_from_four_threads_survive_three_link_cuts_and_replay(
    names: Names,
    redis_client: redis.Redis,
    rabbitmq_proxy: FaultProxy,
    counter: QueueCounter,
    audit_db: AuditDatabase,
    score: ScenarioRow,
) -> None:
    total, batch_sizes = 10_000, (1, 1, 5, 25)
    connector = RabbitMqConnector(
        rabbitmq_proxy.url_for(RABBITMQ_URL),
        connect_timeout=1,
        confirm_timeout=2,
        breaker_cooldown=0.1,
    )
    bus = RabbitMqDomainEventBus(
        names.organization,
        names.service,
        connector,
        fallback=RedisDomainEventBus(
            names.organization, names.service, redis_client, key_prefix=names.prefix
        ),
    )
    outcomes = Outcomes()
    progress = 0
    progress_lock = threading.Condition()
    cuts: list[int] = []

    def advance(n: int) -> None:
        nonlocal progress
        with progress_lock:
            progress += n
            progress_lock.notify_all()

    def chaos() -> None:
        # Cut 1 resets every open connection and lets new ones through at once (confirms in
        # flight are lost); cuts 2 and 3 also keep the link down for a moment.
        for number, (threshold, down_for) in enumerate([(2000, 0.0), (4500, 0.3), (7000, 0.3)]):
            with progress_lock:
                progress_lock.wait_for(lambda t=threshold: progress >= t, timeout=60)
                at = progress
            if at >= total:
                return
            if number == 0:
                rabbitmq_proxy.cut()
            else:
                rabbitmq_proxy.refuse()
                time.sleep(down_for)
                rabbitmq_proxy.pass_through()
            cuts.append(at)

    with draining(counter):
        chaos_thread = threading.Thread(target=chaos, name="chaos")
        chaos_thread.start()
        publish_from_threads(
            bus, outcomes, batch_sizes, total // len(batch_sizes), on_progress=advance
        )
        chaos_thread.join()
        fell_back = redis_client.llen(names.keys().source)
        replayer = Replayer(
            redis=redis_client,
            publisher=RabbitMqPublisher(RabbitMqConnector(RABBITMQ_URL)),
            audit=audit_db.store(),
            settings=Settings.from_env({}),
            key_prefix=names.prefix,
        )
        replay_until_empty(replayer, redis_client, names.keys())
    collect(counter, set(outcomes.acknowledged))

    ledger = census(outcomes.acknowledged, counter.ids, redis_client, names.keys())
    score.count_ledger(
        ledger,
        messages=total,
        note=f"{fell_back:,} fell back to Redis during the cuts, all replayed",
    )
    assert not outcomes.unexpected, outcomes.unexpected[:3]
    assert not outcomes.refused, outcomes.refusals[:3]
    assert len(cuts) == 3, f"cuts happened at {cuts}: publishing ended before all three"
    assert fell_back > 0, "the cuts sent nothing to the fallback: the test did not test it"
    ledger.assert_nothing_lost()
    assert set(counter.ids) == set(outcomes.acknowledged), ledger.summary()
    assert sum(ledger.fallback.values()) == 0, ledger.summary()


@pytest.fixture
def both_proxied(
    names: Names, rabbitmq_proxy: FaultProxy, redis_proxy: FaultProxy
) -> Iterator[RabbitMqDomainEventBus]:
    """A bus whose RabbitMQ and Redis fallback both go through fault proxies."""
    fallback_client = strict_redis(redis_proxy.url_for(REDIS_URL), timeout=1.0)
    connector = RabbitMqConnector(
        rabbitmq_proxy.url_for(RABBITMQ_URL),
        connect_timeout=0.5,
        confirm_timeout=1,
        breaker_cooldown=0.05,
    )
    yield RabbitMqDomainEventBus(
        names.organization,
        names.service,
        connector,
        fallback=RedisDomainEventBus(
            names.organization, names.service, fallback_client, key_prefix=names.prefix
        ),
    )
    connector.close()
    fallback_client.close()


FLAPPING_SECONDS = 4.0


@pytest.mark.scenario(4, "RabbitMQ and Redis both down, then both flapping")
def test_with_rabbitmq_and_redis_down_every_publish_raises_and_no_acknowledged_id_is_missing(
    names: Names,
    redis_client: redis.Redis,
    rabbitmq_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    both_proxied: RabbitMqDomainEventBus,
    counter: QueueCounter,
    score: ScenarioRow,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)

    # Phase 1: both refuse connections. Every call must raise, naming both causes and every id.
    rabbitmq_proxy.refuse()
    redis_proxy.refuse()
    down = Outcomes()
    publish_from_threads(both_proxied, down, batch_sizes=(1, 1, 10, 25), per_thread=50)

    # Phase 2: for a few seconds, every 10-80 ms one of the links passes, refuses or is cut.
    rabbitmq_proxy.pass_through()
    redis_proxy.pass_through()
    flapping = Outcomes()
    stop = threading.Event()

    def chaos() -> None:
        deadline = time.monotonic() + FLAPPING_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.01, 0.08))
            proxy = rng.choice([rabbitmq_proxy, redis_proxy])
            rng.choice([proxy.pass_through, proxy.pass_through, proxy.refuse, proxy.cut])()
        stop.set()

    chaos_thread = threading.Thread(target=chaos, name="chaos")
    with draining(counter):
        chaos_thread.start()
        try:
            publish_from_threads(
                both_proxied,
                flapping,
                batch_sizes=(1, 1, 5, 20),
                per_thread=1_000_000,
                keep_going=lambda: not stop.is_set(),
            )
        finally:
            stop.set()
            chaos_thread.join()
            rabbitmq_proxy.pass_through()
            redis_proxy.pass_through()

    in_redis = census((), {}, redis_client, names.keys()).fallback.keys()
    collect(counter, set(flapping.acknowledged) - in_redis)
    ledger = census(flapping.acknowledged, counter.ids, redis_client, names.keys())
    refused_but_delivered = len(set(flapping.refused) & set(ledger.found))
    score.count_ledger(
        ledger,
        messages=down.messages + flapping.messages,
        note=(
            f"down: {len(down.refused)}/{down.messages} raised; flapping: "
            f"{len(flapping.acknowledged):,} acknowledged, {len(flapping.refused):,} raised "
            f"({refused_but_delivered} of those arrived anyway); seed {seed}"
        ),
    )
    assert not down.unexpected, down.unexpected[:3]
    assert not flapping.unexpected, flapping.unexpected[:3]
    assert down.acknowledged == [], "a publish returned while RabbitMQ and Redis were both down"
    assert len(down.refused) == down.messages == 200
    for exc in down.refusals:
        assert [c.split(":")[0] for c in exc.causes] == [
            "RabbitMqDomainEventBus",
            "RedisDomainEventBus",
        ], exc.causes
    assert down.slowest_call < 3.0, f"a refused publish took {down.slowest_call:.1f} s"
    assert flapping.refused, f"nothing raised while flapping: the faults missed (seed {seed})"
    ledger.assert_nothing_lost()


@pytest.mark.scenario(6, "private Redis (AOF, fsync always) SIGKILLed mid-fallback")
def test_entries_acknowledged_by_an_aof_redis_survive_its_sigkill_and_restart(
    names: Names, rabbitmq_proxy: FaultProxy, score: ScenarioRow
) -> None:
    rabbitmq_proxy.refuse()  # RabbitMQ is down all along: every message goes to the fallback
    kills = 3
    with PrivateRedis(appendonly=True, appendfsync="always") as server:
        client = strict_redis(server.url, timeout=1.0)
        bus = RabbitMqDomainEventBus(
            names.organization,
            names.service,
            RabbitMqConnector(rabbitmq_proxy.url_for(RABBITMQ_URL), connect_timeout=0.5),
            fallback=RedisDomainEventBus(
                names.organization, names.service, client, key_prefix=names.prefix
            ),
        )
        outcomes = Outcomes()
        stop = threading.Event()
        publishers = threading.Thread(
            target=publish_from_threads,
            kwargs={
                "bus": bus,
                "outcomes": outcomes,
                "batch_sizes": (1, 10),
                "per_thread": 1_000_000,
                "keep_going": lambda: not stop.is_set(),
            },
        )
        publishers.start()
        try:
            for _ in range(kills):
                time.sleep(0.4)
                server.kill()
                time.sleep(0.2)
                server.start()
        finally:
            time.sleep(0.3)
            stop.set()
            publishers.join()
        # And once more with nothing in flight: the last acknowledged entries are on disk too.
        server.kill()
        server.start()

        stored = [entry_id(raw) for raw in client.lrange(names.keys().source, 0, -1)]
        client.close()

    acknowledged = set(outcomes.acknowledged)
    lost = acknowledged - set(stored)
    duplicates = len(stored) - len(set(stored))
    score.count(
        messages=len(acknowledged),
        lost=len(lost),
        duplicates=duplicates,
        note=(
            f"{kills + 1} SIGKILLs; {len(outcomes.refused):,} messages refused (raised) while "
            f"Redis was down; {len(set(stored) - acknowledged)} stored although refused"
        ),
    )
    assert not outcomes.unexpected, outcomes.unexpected[:3]
    assert outcomes.refused, "no publish hit a dead Redis: the kills missed the traffic"
    assert len(acknowledged) > 1000
    assert not lost, f"{len(lost)} acknowledged entries lost, e.g. {sorted(lost)[:5]}"
