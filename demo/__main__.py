"""``make demo``: see the whole system work, end to end, on the local services.

1. Start a Celery worker with embedded beat (replay every 2 s) on the local Redis and RabbitMQ,
   with the audit in a SQLite file (or PostgreSQL with ``--postgres``).
2. Publish a stream of events and commands through an in-process TCP proxy to RabbitMQ.
3. Cut RabbitMQ off at the proxy for a while: messages fall back to Redis, replay runs stop.
4. Restore it: beat's replay drains the lists back to RabbitMQ.
5. Print the audit summary and the accounting (fell back = republished + dead-lettered + waiting).

Everything lives under its own Redis key prefix and exchange, and is cleaned up on exit
(Ctrl-C included); no process is left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kombu
from rich.console import Console
from rich.table import Table

from fallbackbus import (
    Command,
    DomainEvent,
    RabbitMqCommandBus,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisCommandBus,
    RedisDomainEventBus,
    Settings,
)
from fallbackbus.admin import accounting, audit_queries
from fallbackbus.redis import ListKeys, redis_from_url
from fallbackbus.testing.faultproxy import FaultProxy

ORGANIZATION, SERVICE = "acme", "demo"
PREFIX = "fallbackbus-demo:"
QUEUE = "fallbackbus-demo.consumer"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "fallbackbus_demo"
console = Console()


class OrderPlaced(DomainEvent):
    order_id: int
    amount_cents: int


class ShipOrder(Command):
    order_id: int


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help=f"audit in PostgreSQL ({PG_URL})")
    parser.add_argument("--outage", type=float, default=8.0, help="seconds RabbitMQ is cut off")
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second")
    args = parser.parse_args()
    base = Settings.from_env()
    rabbit = base.rabbitmq_url.split(";")[0]
    host, port = _host_port(rabbit)
    workdir = Path(tempfile.mkdtemp(prefix="fallbackbus-demo-"))
    balanced = False
    try:
        with FaultProxy(host, port) as proxy:
            settings = base.with_(
                rabbitmq_url=proxy.url_for(rabbit),
                audit_db_url=_audit_url(args.postgres, workdir),
                redis_key_prefix=PREFIX,
                replay_interval=2.0,
                connect_timeout=1.0,
                breaker_cooldown=1.0,
            )
            _reset(settings)
            with _consumer(rabbit) as received, _worker(settings, workdir):
                published = _story(settings, proxy, args.outage, args.rate, received)
                balanced = _report(settings, received, published)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopping the worker and cleaning up[/]")
        return 130
    finally:
        _cleanup(base, rabbit, args.postgres)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if balanced else 1


def _story(
    settings: Settings, proxy: FaultProxy, outage: float, rate: float, received: list[str]
) -> int:
    """Publish through an outage and wait for the replay; returns how many were published."""
    redis = redis_from_url(settings=settings)
    connector = RabbitMqConnector(settings=settings)
    events = RabbitMqDomainEventBus(
        ORGANIZATION,
        SERVICE,
        connector,
        fallback=RedisDomainEventBus(ORGANIZATION, SERVICE, redis, key_prefix=PREFIX),
    )
    commands = RabbitMqCommandBus(
        ORGANIZATION,
        SERVICE,
        connector,
        fallback=RedisCommandBus(ORGANIZATION, SERVICE, redis, key_prefix=PREFIX),
    )
    stop = threading.Event()
    published = [0]

    def publish() -> None:
        order = 0
        while not stop.is_set():
            order += 1
            events.publish(OrderPlaced(order_id=order, amount_cents=order * 100))
            if order % 4 == 0:
                commands.dispatch(ShipOrder(order_id=order))
                published[0] += 1
            published[0] += 1
            time.sleep(1 / rate)

    publisher = threading.Thread(target=publish, name="demo-publisher", daemon=True)
    publisher.start()
    lists = [ListKeys(name, PREFIX).source for name in settings.replay_lists]
    _phase("RabbitMQ up: publishing straight to RabbitMQ", 4.0, redis, lists, published, received)
    proxy.refuse()
    _phase(
        f"RabbitMQ cut off for {outage:g} s: messages fall back to Redis",
        outage,
        redis,
        lists,
        published,
        received,
    )
    proxy.pass_through()
    stop.set()
    publisher.join()
    console.print("[bold green]RabbitMQ restored[/]: publishing stopped; waiting for beat's replay")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _line(redis, lists, published, received)
        if sum(redis.llen(key) for key in lists) == 0 and len(received) >= published[0]:
            break
        time.sleep(1)
    connector.close()
    return published[0]


def _phase(
    title: str,
    seconds: float,
    redis: object,
    lists: list[str],
    published: list[int],
    received: list[str],
) -> None:
    console.print(f"[bold]{title}[/]")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1)
        _line(redis, lists, published, received)


def _line(redis: object, lists: list[str], published: list[int], received: list[str]) -> None:
    waiting = {key.removeprefix(PREFIX): redis.llen(key) for key in lists}  # type: ignore[attr-defined]
    shown = ", ".join(f"{name} {count}" for name, count in waiting.items())
    console.print(
        f"  published {published[0]:5d} | consumed {len(received):5d} | in Redis: {shown}"
    )


def _report(settings: Settings, received: list[str], published: int) -> bool:
    """Print the audit summary and the accounting; True if it balances and nothing is missing."""
    with audit_queries(settings) as queries:
        counts = queries.outcome_counts()
        runs = queries.runs(limit=1000)
    table = Table(title="Audit summary")
    table.add_column("outcome")
    table.add_column("messages", justify="right")
    for status, count in counts.items():
        table.add_row(status, str(count))
    console.print(table)
    stopped = sum(1 for run in runs if run.status == "stopped")
    console.print(f"replay runs: {len(runs)} ({stopped} stopped while RabbitMQ was down)")
    balances = accounting(settings)
    table = Table(title="Accounting: fell back = republished + dead-lettered + purged + waiting")
    for column in (
        "list",
        "service",
        "fell back",
        "republished",
        "dead",
        "purged",
        "waiting",
        "ok",
    ):
        table.add_column(column, justify="left" if column in ("list", "service") else "right")
    for b in balances:
        table.add_row(
            b.list_key.removeprefix(PREFIX),
            f"{b.organization}.{b.service}",
            str(b.fell_back),
            str(b.republished),
            str(b.dead_lettered),
            str(b.purged),
            str(b.waiting),
            "[green]yes[/]" if b.balanced else "[red]NO[/]",
        )
    console.print(table)
    unique = len(set(received))
    console.print(
        f"consumer received {len(received)} messages, {unique} distinct ids "
        f"({len(received) - unique} duplicates)"
    )
    ok = all(b.balanced for b in balances) and unique == published
    console.print(
        "[bold green]accounting balances, every message arrived[/]"
        if ok
        else "[bold red]accounting does NOT balance or messages are missing[/]"
    )
    return ok


@contextmanager
def _worker(settings: Settings, workdir: Path) -> Iterator[None]:
    env = {**os.environ, **_env(settings)}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "-B",
        "--loglevel",
        "WARNING",
        "--concurrency",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--schedule",
        str(workdir / "celerybeat-schedule"),
    ]
    console.print("[bold]starting a Celery worker with beat[/] (replay every 2 s)")
    log = (workdir / "worker.log").open("w")
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        yield
    finally:
        _kill_group(process)
        log.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def _consumer(url: str) -> Iterator[list[str]]:
    """A consumer on the demo exchange, so messages are routable and we can count them."""
    received: list[str] = []
    stop = threading.Event()
    exchange = kombu.Exchange(f"{ORGANIZATION}.{SERVICE}", "topic", durable=True)
    queue = kombu.Queue(QUEUE, exchange, routing_key="#", durable=False, auto_delete=False)
    with kombu.Connection(url) as conn:
        queue(conn.default_channel).declare()

    def consume() -> None:
        with (
            kombu.Connection(url) as conn,
            conn.Consumer(queue, accept=["json"], callbacks=[on_message]),
        ):
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    continue

    def on_message(body: object, message: kombu.Message) -> None:
        received.append(str(message.properties.get("message_id")))
        message.ack()

    thread = threading.Thread(target=consume, name="demo-consumer", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(timeout=5)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "FALLBACKBUS_RABBITMQ_URL": settings.rabbitmq_url,
        "FALLBACKBUS_REDIS_URL": settings.redis_url,
        "FALLBACKBUS_AUDIT_DB_URL": settings.audit_db_url,
        "FALLBACKBUS_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "FALLBACKBUS_REPLAY_INTERVAL": str(settings.replay_interval),
        "FALLBACKBUS_CONNECT_TIMEOUT": str(settings.connect_timeout),
        "FALLBACKBUS_BREAKER_COOLDOWN": str(settings.breaker_cooldown),
    }


def _audit_url(postgres: bool, workdir: Path) -> str:
    if not postgres:
        return f"sqlite:///{workdir / 'audit.db'}"
    url = os.environ.get("FALLBACKBUS_AUDIT_DB_URL", PG_URL)
    if not url.startswith("postgresql"):
        url = PG_URL
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{PG_SCHEMA}"


def _reset(settings: Settings) -> None:
    """Start from nothing: no demo keys in Redis, a fresh demo schema in PostgreSQL."""
    redis = redis_from_url(settings=settings)
    for key in redis.scan_iter(f"{PREFIX}*"):
        redis.delete(key)
    if settings.audit_db_url.startswith("postgresql"):
        _pg(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE; CREATE SCHEMA {PG_SCHEMA}")


def _cleanup(settings: Settings, rabbit: str, postgres: bool) -> None:
    redis = redis_from_url(settings=settings)
    for key in redis.scan_iter(f"{PREFIX}*"):
        redis.delete(key)
    with kombu.Connection(rabbit) as conn:
        channel = conn.default_channel
        kombu.Queue(QUEUE)(channel).delete()
        kombu.Exchange(f"{ORGANIZATION}.{SERVICE}")(channel).delete()
    if postgres:
        _pg(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def _pg(sql: str) -> None:
    import sqlalchemy

    url = os.environ.get("FALLBACKBUS_AUDIT_DB_URL", PG_URL)
    engine = sqlalchemy.create_engine(url if url.startswith("postgresql") else PG_URL)
    with engine.begin() as connection:
        connection.exec_driver_sql(sql)
    engine.dispose()


def _host_port(url: str) -> tuple[str, int]:
    parsed = kombu.Connection(url)
    return parsed.hostname or "127.0.0.1", int(parsed.port or 5672)


if __name__ == "__main__":
    sys.exit(main())
