"""Every figure of the issue, each measured next to its raw-client baseline in the same run."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kombu.utils.url import parse_url
from sqlalchemy import func, select

from bench.backlog import fill
from bench.baselines import (
    AmqpStreamingPublisher,
    KombuConfirmPublisher,
    kombu_publish_or_lpush,
    lpush_one,
)
from bench.cpu import CpuMeter, CpuUse
from bench.env import Environment
from bench.measure import alternate, latencies, percentile, rate
from bench.replay_worker import WorkerResult, WorkerSpec, run_workers
from bench.report import Row
from bench.sizes import Sizes
from bench.workload import new_event
from fallbackbus.audit import SqlAuditStore
from fallbackbus.audit.models import OutcomeRecord
from fallbackbus.rabbitmq import RabbitMqDomainEventBus
from fallbackbus.redis.keys import DOMAIN_EVENTS
from fallbackbus.testing.faultproxy import FaultProxy

WARM_UP = 20
MB = 1_000_000
HUNG_GRACE = 0.2
HUNG_P99_LIMIT_MS = 5.0
GROWS = 1.05
"""A worker count "grows" the rate when it is at least this much above 1 worker."""
SATURATED = 0.90
"""Machine busy fraction above which the cores, not fallbackbus, bound the rate."""


@dataclass
class Context:
    env: Environment
    sizes: Sizes
    progress: Callable[[str], None]

    def kombu_samples(self) -> list[float]:
        """``rounds`` fresh measurements of the kombu confirm-per-message rate.

        Taken right next to the figure they compare with, because on a shared machine the rate
        a minute earlier says little about the load now.
        """
        self.progress("  baseline: kombu confirm per message")
        with self.env.destination("kombu") as dest:
            publisher = KombuConfirmPublisher(self.env.services.rabbitmq_url, dest)
            try:
                rate(publisher.publish_one, WARM_UP)
                return [
                    rate(publisher.publish_one, self.sizes.single) for _ in range(self.sizes.rounds)
                ]
            finally:
                publisher.close()


def _publish_one(bus: RabbitMqDomainEventBus) -> Callable[[int], None]:
    def publish(number: int) -> None:
        bus.publish(new_event(number))

    return publish


def _fell_back_note(count: int) -> list[str]:
    if not count:
        return []
    return [
        f"{count:,} message(s) fell back to Redis while RabbitMQ was up: this figure is not a "
        "RabbitMQ publish rate; see the library's log"
    ]


def single_publish(ctx: Context) -> list[Row]:
    sizes, env = ctx.sizes, ctx.env
    with env.destination("single") as dest, env.bus(dest) as bus:
        kombu = KombuConfirmPublisher(env.services.rabbitmq_url, dest)
        try:
            rate(_publish_one(bus), WARM_UP)
            rate(kombu.publish_one, WARM_UP)
            theirs, ours = alternate(
                sizes.rounds,
                lambda: rate(kombu.publish_one, sizes.single),
                lambda: rate(_publish_one(bus), sizes.single),
            )
        finally:
            kombu.close()
        fell_back = env.fallen_back(dest)
    return [
        Row(
            key="single",
            figure="single publish",
            unit="msg/s",
            value=ours,
            baseline=theirs,
            baseline_name="kombu/msg",
            target=">= 0.85x kombu/msg",
            passed=ours >= 0.85 * theirs and not fell_back,
            notes=_fell_back_note(fell_back),
        )
    ]


def batch_publish(ctx: Context) -> list[Row]:
    sizes, env = ctx.sizes, ctx.env
    size = sizes.batch_size

    def ours_batch(number: int) -> None:
        bus.publish([new_event(i) for i in range(size)])

    with env.destination("batch") as dest, env.bus(dest) as bus:
        stream = AmqpStreamingPublisher(env.services.rabbitmq_url, dest)
        kombu = KombuConfirmPublisher(env.services.rabbitmq_url, dest)
        try:
            ours_batch(0)
            stream.publish_batch(size)
            rate(kombu.publish_one, WARM_UP)
            per_message, streamed, ours = alternate(
                sizes.rounds,
                lambda: rate(kombu.publish_one, sizes.single),
                lambda: rate(lambda _: stream.publish_batch(size), sizes.batches, size),
                lambda: rate(ours_batch, sizes.batches, size),
            )
        finally:
            stream.close()
            kombu.close()
        fell_back = env.fallen_back(dest)
    figure = f"{size:,}-message batch publish"
    return [
        Row(
            key="batch",
            figure=figure,
            unit="msg/s",
            value=ours,
            baseline=per_message,
            baseline_name="kombu/msg",
            target=">= 4x kombu/msg",
            passed=ours >= 4 * per_message and not fell_back,
            notes=[
                f"raw py-amqp streaming reached {streamed / per_message:.2f}x kombu/msg "
                "in the same rounds",
                *_fell_back_note(fell_back),
            ],
        ),
        Row(
            key="batch-vs-stream",
            figure=f"{figure} vs raw streaming",
            unit="msg/s",
            value=ours,
            baseline=streamed,
            baseline_name="amqp/stream",
            target="info: library overhead",
            passed=None,
        ),
    ]


def _amqp_address(url: str) -> tuple[str, int]:
    parts = parse_url(url)
    return parts["hostname"] or "localhost", int(parts["port"] or 5672)


def publish_while_refused(ctx: Context) -> list[Row]:
    sizes, env = ctx.sizes, ctx.env
    with FaultProxy(*_amqp_address(env.services.rabbitmq_url)) as proxy:
        proxy.refuse()
        url = proxy.url_for(env.services.rabbitmq_url)
        with env.destination("refused") as dest, env.bus(dest, url) as bus:
            raw_key = f"{dest.key_prefix}raw-lpush"
            rate(_publish_one(bus), WARM_UP)
            rate(lambda n: lpush_one(env.redis, raw_key, dest, n), WARM_UP)
            theirs, ours = alternate(
                sizes.rounds,
                lambda: rate(lambda n: lpush_one(env.redis, raw_key, dest, n), sizes.fallback),
                lambda: rate(_publish_one(bus), sizes.fallback),
            )
            stored = env.fallen_back(dest)
    expected = WARM_UP + sizes.rounds * sizes.fallback
    notes = ["per message, fallbackbus runs one Lua script (LPUSH + HINCRBY of its counter)"]
    if stored != expected:
        notes.append(f"Redis holds {stored:,} entries, expected {expected:,}")
    return [
        Row(
            key="refused",
            figure="publish while RabbitMQ refuses (to Redis)",
            unit="msg/s",
            value=ours,
            baseline=theirs,
            baseline_name="LPUSH",
            target=">= 0.5x LPUSH",
            passed=ours >= 0.5 * theirs and stored == expected,
            notes=notes,
        )
    ]


def hung_broker(ctx: Context) -> list[Row]:
    sizes, env = ctx.sizes, ctx.env
    timeout = sizes.hung_connect_timeout
    with FaultProxy(*_amqp_address(env.services.rabbitmq_url)) as proxy:
        proxy.hang()  # accepts TCP connections, never answers a byte
        url = proxy.url_for(env.services.rabbitmq_url)
        with env.destination("hung") as dest, env.bus(dest, url, connect_timeout=timeout) as bus:
            first = latencies(_publish_one(bus), 1)[0]
            following = latencies(_publish_one(bus), sizes.hung_next)
            stored = env.fallen_back(dest)
            raw_key = f"{dest.key_prefix}raw-lpush"
            theirs = [
                kombu_publish_or_lpush(url, dest, timeout, env.redis, raw_key)
                for _ in range(1 + sizes.hung_baseline_samples)
            ]
    expected = 1 + sizes.hung_next
    stored_ok = stored == expected
    p99 = percentile(following, 0.99) * 1000
    limit = timeout + HUNG_GRACE
    notes = [
        f"connect timeout {timeout:g} s; baseline: {len(theirs)} kombu publish(es) in a row, "
        "each paying the whole timeout (no circuit breaker)",
        f"next {sizes.hung_next:,}: p50 {percentile(following, 0.5) * 1000:.2f} ms, "
        f"max {max(following) * 1000:.2f} ms; Redis holds {stored:,} of {expected:,}",
    ]
    return [
        Row(
            key="hung-first",
            figure="hung broker: first publish",
            unit="s",
            value=first,
            baseline=theirs[0],
            baseline_name="kombu+LPUSH",
            target=f"<= {limit:.1f} s (timeout + {HUNG_GRACE:g} s)",
            passed=first <= limit and stored_ok,
        ),
        Row(
            key="hung-next",
            figure=f"hung broker: next {sizes.hung_next:,} publishes, p99",
            unit="ms",
            value=p99,
            baseline=percentile(theirs[1:], 0.99) * 1000,
            baseline_name="kombu+LPUSH",
            target=f"<= {HUNG_P99_LIMIT_MS:g} ms",
            passed=p99 <= HUNG_P99_LIMIT_MS and stored_ok,
            notes=notes,
        ),
    ]


@dataclass(frozen=True)
class _Replayed:
    results: list[WorkerResult]
    backlog: int
    entry_bytes: int
    audited: int
    left: int
    cpu: CpuUse | None

    @property
    def republished(self) -> int:
        return sum(r.republished for r in self.results)

    @property
    def rate(self) -> float:
        started = min(r.started for r in self.results)
        finished = max(r.finished for r in self.results)
        return self.republished / (finished - started)

    def problems(self) -> list[str]:
        """Anything that makes the rate not a rate of complete, audited replays."""
        found = [
            f"a worker ended {r.status}: {r.stop_reason}" for r in self.results if r.stop_reason
        ]
        if self.republished != self.backlog:
            found.append(f"republished {self.republished:,} of {self.backlog:,}")
        if self.audited != self.backlog:
            found.append(f"{self.audited:,} audit rows for {self.backlog:,} entries")
        if self.left:
            found.append(f"{self.left:,} entries left in the list")
        return found


def _replay(ctx: Context, figure: str, backlog: int, workers: int = 1) -> _Replayed:
    env = ctx.env
    with env.destination(figure) as dest, env.audit_database() as audit_url:
        ctx.progress(f"  filling a {backlog:,}-entry backlog")
        entry_bytes = fill(env.redis, dest, backlog)
        spec = WorkerSpec(
            rabbitmq_url=env.services.rabbitmq_url,
            redis_url=env.services.redis_url,
            audit_url=audit_url,
            key_prefix=dest.key_prefix,
            list_name=DOMAIN_EVENTS,
            limit=backlog,
        )
        ctx.progress(f"  replaying with {workers} worker process(es)")
        meter = CpuMeter()
        results = run_workers([spec] * workers, during=meter)
        store = SqlAuditStore(audit_url)
        try:
            with store.transaction("count outcomes") as connection:
                audited = connection.execute(
                    select(func.count()).select_from(OutcomeRecord)
                ).scalar_one()
        finally:
            store.dispose()
        left = env.fallen_back(dest)
    return _Replayed(results, backlog, entry_bytes, audited, left, meter.use)


def _replay_between_kombu(
    ctx: Context, figure: str, backlog: int, workers: int = 1
) -> tuple[_Replayed, float]:
    """A replay, and the median kombu confirm-per-message rate measured before and after it."""
    before = ctx.kombu_samples()
    replayed = _replay(ctx, figure, backlog, workers)
    return replayed, statistics.median(before + ctx.kombu_samples())


def replay_rate(ctx: Context) -> list[Row]:
    replayed, kombu = _replay_between_kombu(ctx, "replay", ctx.sizes.replay_backlog)
    problems = replayed.problems()
    return [
        Row(
            key="replay",
            figure=f"replay {replayed.backlog:,} entries, PostgreSQL audit",
            unit="msg/s",
            value=replayed.rate,
            baseline=kombu,
            baseline_name="kombu/msg",
            target=">= 2x kombu/msg",
            passed=replayed.rate >= 2 * kombu and not problems,
            notes=[f"batch size {replayed.results[0].batch_size}", *problems],
        )
    ]


def replay_memory(ctx: Context) -> list[Row]:
    replayed = _replay(ctx, "rss", ctx.sizes.rss_backlog)
    (worker,) = replayed.results
    growth = worker.rss_growth / MB
    problems = replayed.problems()
    return [
        Row(
            key="replay-rss",
            figure=f"replay {replayed.backlog:,} entries: peak RSS growth",
            unit="MB",
            value=growth,
            baseline=replayed.backlog * replayed.entry_bytes / MB,
            baseline_name="backlog",
            target="<= 100 MB",
            passed=growth <= 100 and not problems,
            notes=[
                f"RSS {worker.rss_start / MB:.1f} MB before the run, peak "
                f"{worker.rss_peak / MB:.1f} MB; replayed at {replayed.rate:,.0f} msg/s",
                *problems,
            ],
        )
    ]


def replay_workers(ctx: Context) -> list[Row]:
    backlog = ctx.sizes.workers_backlog
    rows: list[Row] = []
    single: float | None = None
    for count in ctx.sizes.worker_counts:
        if single is None:
            replayed, kombu = _replay_between_kombu(ctx, f"workers{count}", backlog, count)
        else:
            replayed = _replay(ctx, f"workers{count}", backlog, count)
        problems = replayed.problems()
        workers_cpu = sum(r.cpu_seconds for r in replayed.results)
        split = "/".join(f"{r.republished:,}" for r in replayed.results)
        notes = [*problems, f"entries per worker: {split}"]
        if replayed.cpu is not None:
            notes.append(replayed.cpu.describe(workers_cpu))
        figure = f"replay {backlog:,} entries, {count} worker{'s' if count > 1 else ''}"
        if single is None:
            single = replayed.rate
            rows.append(
                Row(
                    key=f"replay-workers-{count}",
                    figure=figure,
                    unit="msg/s",
                    value=replayed.rate,
                    baseline=kombu,
                    baseline_name="kombu/msg",
                    target="info: the base of scaling",
                    passed=None if not problems else False,
                    notes=notes,
                )
            )
            continue
        grows = replayed.rate >= GROWS * single
        cpu = replayed.cpu
        saturated = cpu is not None and cpu.busy >= SATURATED
        if cpu is not None and saturated:
            top = list(cpu.cores_used(workers_cpu).items())[:2]
            notes.append(
                f"bound: CPU, all {cpu.cores} cores busy; the largest users were "
                + " and ".join(f"{name} ({cores:.2f} cores)" for name, cores in top)
            )
        rows.append(
            Row(
                key=f"replay-workers-{count}",
                figure=figure,
                unit="msg/s",
                value=replayed.rate,
                baseline=single,
                baseline_name="1 worker",
                target="grows, or bound named",
                passed=(grows or saturated) and not problems,
                notes=notes,
            )
        )
    return rows


def _in_threads(count: int, work: Callable[[int], object]) -> tuple[float, list[BaseException]]:
    """Run ``work(thread_number)`` in ``count`` threads released together; (seconds, errors)."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(number: int) -> None:
        barrier.wait()
        try:
            work(number)
        except BaseException as exc:  # collected and reported, never lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, errors


def threads_one_bus(ctx: Context) -> list[Row]:
    sizes, env = ctx.sizes, ctx.env
    count, each = sizes.threads, sizes.thread_publishes
    errors: list[BaseException] = []

    with env.destination("threads") as dest, env.bus(dest) as bus:
        publishers = [KombuConfirmPublisher(env.services.rabbitmq_url, dest) for _ in range(count)]

        def ours() -> float:
            seconds, failed = _in_threads(count, lambda _: rate(_publish_one(bus), each))
            errors.extend(failed)
            return count * each / seconds

        def theirs() -> float:
            seconds, failed = _in_threads(count, lambda n: rate(publishers[n].publish_one, each))
            if failed:
                raise failed[0]
            return count * each / seconds

        try:
            _in_threads(count, lambda _: rate(_publish_one(bus), 1))  # one pooled connection each
            theirs_rate, ours_rate = alternate(sizes.rounds, theirs, ours)
        finally:
            for publisher in publishers:
                publisher.close()
        fell_back = env.fallen_back(dest)
        queued = env.queued(dest)
    expected = count + 2 * sizes.rounds * count * each
    notes = [f"{len(errors)} error(s): {errors[0]!r}"] if errors else []
    notes += _fell_back_note(fell_back)
    if queued + fell_back != expected:
        notes.append(f"{queued:,} queued + {fell_back:,} in Redis, expected {expected:,}")
    return [
        Row(
            key="threads",
            figure=f"{count} threads publishing through one bus",
            unit="msg/s",
            value=ours_rate,
            baseline=theirs_rate,
            baseline_name="8x kombu/msg",
            target="no errors, none lost",
            passed=not errors and queued + fell_back == expected,
            notes=notes,
        )
    ]


@dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[[Context], list[Row]]
    description: str


BENCHMARKS = (
    Benchmark("single", single_publish, "one message per publish call"),
    Benchmark("batch", batch_publish, "batches with streaming confirms"),
    Benchmark("refused", publish_while_refused, "RabbitMQ refuses connections: to Redis"),
    Benchmark("hung", hung_broker, "RabbitMQ accepts and never answers"),
    Benchmark("replay", replay_rate, "replay a backlog with PostgreSQL audit"),
    Benchmark("replay-rss", replay_memory, "peak memory of a large replay"),
    Benchmark("replay-workers", replay_workers, "1, 2 and 4 replay worker processes"),
    Benchmark("threads", threads_one_bus, "8 threads through one bus"),
)


def expected_keys(sizes: Sizes) -> list[str]:
    """The key of every row a full run of ``BENCHMARKS`` produces with ``sizes``."""
    workers = [f"replay-workers-{count}" for count in sizes.worker_counts]
    return [
        "single",
        "batch",
        "batch-vs-stream",
        "refused",
        "hung-first",
        "hung-next",
        "replay",
        "replay-rss",
        *workers,
        "threads",
    ]
