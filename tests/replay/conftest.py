"""Fixtures for the replay tests: real Redis, RabbitMQ and an audit database, nothing shared.

Every test gets its own organization (so its own exchange ``{org}.svc``, bound to a
``QueueCounter`` *before* anything is replayed), its own Redis key prefix and its own audit
database (a SQLite file, or a PostgreSQL schema selected through ``search_path``): the fixtures of
``tests/conftest.py``, which remove them afterwards. Outages are made with ``FaultProxy``; the
shared services are never touched.

Every message is counted by id: a test calls ``tally.record(...)`` and the counts (messages,
lost, duplicates) are printed as a table at the end of the run.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fallbackbus import DomainEvent, RabbitMqConnector, RedisDomainEventBus, Settings
from fallbackbus.audit import AuditQueries, OutcomeRow, SqlAuditStore
from fallbackbus.envelope import decode_dead_letter
from fallbackbus.rabbitmq.publisher import RabbitMqPublisher
from fallbackbus.redis.keys import ListKeys
from fallbackbus.replay import Replayer, ReplayReport
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter
from tests.support.processes import end_process
from tests.support.services import RABBITMQ_URL

SERVICE = "svc"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Short bounded waits, so outage tests end fast; the circuit breaker never skips a test's run.
CONNECT_TIMEOUT = 1.0
CONFIRM_TIMEOUT = 1.5


class UserCreated(DomainEvent):
    index: int
    name: str = ""


# -- counting ------------------------------------------------------------------------------------


@dataclass
class TallyRow:
    test: str
    messages: int
    lost: int
    duplicates: int


_TALLY: list[TallyRow] = []


@dataclass
class Tally:
    test: str

    def record(self, messages: int, lost: int, duplicates: int) -> None:
        _TALLY.append(TallyRow(self.test, messages, lost, duplicates))

    def ledger(self, ledger: Ledger) -> None:
        self.record(len(set(ledger.sent)), len(ledger.lost()), ledger.duplicate_count())


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    return Tally(request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLY:
        return
    terminalreporter.section("replay: messages counted by id")
    width = max(len(row.test) for row in _TALLY)
    terminalreporter.write_line(f"{'test':<{width}}  messages  lost  duplicates")
    for row in _TALLY:
        terminalreporter.write_line(
            f"{row.test:<{width}}  {row.messages:>8}  {row.lost:>4}  {row.duplicates:>10}"
        )


# -- audit databases -----------------------------------------------------------------------------


@pytest.fixture
def make_audit() -> Iterator[Callable[[str], SqlAuditStore]]:
    """``make_audit(url)``: a migrated audit store, disposed after the test."""
    stores: list[SqlAuditStore] = []

    def make(url: str, *, upgrade: bool = True) -> SqlAuditStore:
        store = SqlAuditStore(url, connect_timeout=CONNECT_TIMEOUT)
        stores.append(store)
        if upgrade:
            store.upgrade()
        return store

    yield make
    for store in stores:
        store.dispose()


@pytest.fixture
def sqlite_audit(make_audit: Callable[[str], SqlAuditStore], sqlite_url: str) -> SqlAuditStore:
    return make_audit(sqlite_url)


@pytest.fixture
def pg_audit(make_audit: Callable[[str], SqlAuditStore], pg_url: str) -> SqlAuditStore:
    return make_audit(pg_url)


def outcomes(store: SqlAuditStore, **filters: Any) -> list[OutcomeRow]:
    """Every outcome row matching ``filters``, oldest first."""
    rows: list[OutcomeRow] = []
    queries = AuditQueries(store)
    while True:
        page = queries.outcomes(limit=10_000, offset=len(rows), newest_first=False, **filters)
        rows.extend(page)
        if len(page) < 10_000:
            return rows


def republished(store: SqlAuditStore) -> Counter[str]:
    """How many 'republished' audit rows each message id has."""
    return Counter(row.message_id for row in outcomes(store) if row.status == "republished")


# -- replay --------------------------------------------------------------------------------------


def connector(url: str = RABBITMQ_URL) -> RabbitMqConnector:
    return RabbitMqConnector(
        url,
        connect_timeout=CONNECT_TIMEOUT,
        confirm_timeout=CONFIRM_TIMEOUT,
        breaker_cooldown=0,
    )


def settings(**overrides: Any) -> Settings:
    return Settings(connect_timeout=CONNECT_TIMEOUT, confirm_timeout=CONFIRM_TIMEOUT, **overrides)


@pytest.fixture
def make_replayer(redis_client: redis.Redis, key_prefix: str) -> Iterator[Callable[..., Replayer]]:
    """``make_replayer(audit, rabbitmq_url=..., **settings)``: a replayer on this test's keys."""
    connectors: list[RabbitMqConnector] = []

    def make(audit: SqlAuditStore, rabbitmq_url: str = RABBITMQ_URL, **overrides: Any) -> Replayer:
        rabbit = connector(rabbitmq_url)
        connectors.append(rabbit)
        return Replayer(
            redis=redis_client,
            publisher=RabbitMqPublisher(rabbit),
            audit=audit,
            settings=settings(**overrides),
            key_prefix=key_prefix,
        )

    yield make
    for rabbit in connectors:
        rabbit.close()


# -- backlogs ------------------------------------------------------------------------------------


@dataclass
class Backlog:
    """One fallback list of this test and helpers to read it (oldest first, like replay)."""

    client: redis.Redis
    keys: ListKeys
    ids: list[str] = field(default_factory=list)
    """Every message id written to the list by ``add``, oldest first."""

    def add(
        self, count: int, organization: str, service: str = SERVICE, chunk: int = 1000
    ) -> list[str]:
        """Store ``count`` events the way the library does when RabbitMQ is down."""
        bus = RedisDomainEventBus(
            organization,
            service,
            self.client,
            list_name=self.keys.name,
            key_prefix=self.keys.prefix,
        )
        added: list[str] = []
        for start in range(0, count, chunk):
            events = [
                UserCreated(index=len(self.ids) + i, name="Ada")
                for i in range(min(chunk, count - start))
            ]
            bus.publish(events)
            added.extend(event.message_id for event in events)
            self.ids.extend(event.message_id for event in events)
        return added

    def push_raw(self, *entries: bytes | str) -> None:
        """LPUSH entries as they are (oldest first), e.g. petisco's or poison ones."""
        if entries:
            self.client.lpush(self.keys.source, *entries)

    def entries(self) -> list[bytes]:
        """The source list, oldest first."""
        return list(reversed(self.client.lrange(self.keys.source, 0, -1)))

    def processing_lists(self) -> dict[str, list[bytes]]:
        """Every processing list of the source, each oldest first."""
        return {
            key.decode(): list(reversed(self.client.lrange(key, 0, -1)))
            for key in self.client.scan_iter(self.keys.processing_pattern, count=1000)
        }

    def waiting(self) -> int:
        return self.client.llen(self.keys.source) + sum(
            len(entries) for entries in self.processing_lists().values()
        )

    def dead_letters(self) -> list[tuple[bytes, str]]:
        """``(original entry, reason)`` of every parked entry, oldest first."""
        parked = reversed(self.client.lrange(self.keys.dead, 0, -1))
        return [(letter.original, letter.reason) for letter in map(decode_dead_letter, parked)]

    def stats(self) -> Counter[str]:
        """The list's counters summed over every service: fell_back, republished, ..."""
        totals: Counter[str] = Counter()
        for name, value in self.client.hgetall(self.keys.stats).items():
            totals[name.decode().rsplit("|", 1)[-1]] += int(value)
        return totals

    def assert_counters_balance(self) -> None:
        """fell back = republished + dead-lettered + still waiting (source and processing)."""
        stats = self.stats()
        waiting = self.waiting()
        assert stats["fell_back"] == stats["republished"] + stats["dead_lettered"] + waiting, (
            f"counters do not balance: {dict(stats)}, waiting {waiting}"
        )

    def lease_expired(self) -> bool:
        now = float(self.client.time()[0])
        scores = [
            score for _, score in self.client.zrange(self.keys.leases, 0, -1, withscores=True)
        ]
        return all(score < now for score in scores)

    def wait_for_leases_to_expire(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.lease_expired():
            assert time.monotonic() < deadline, "leases did not expire"
            time.sleep(0.1)


@pytest.fixture
def make_backlog(redis_client: redis.Redis, key_prefix: str) -> Callable[[str], Backlog]:
    def make(list_name: str = "domain.events") -> Backlog:
        return Backlog(redis_client, ListKeys(list_name, key_prefix))

    return make


@pytest.fixture
def backlog(make_backlog: Callable[[str], Backlog]) -> Backlog:
    return make_backlog("domain.events")


def message_span(entry: bytes) -> bytes:
    """The raw bytes of an entry's ``message`` value, read independently of the engine."""
    text_ = entry.decode()
    decoder = json.JSONDecoder()
    index = 1
    while True:
        key, index = decoder.raw_decode(text_, text_.index('"', index))
        start = text_.index(":", index) + 1
        while text_[start] in " \t\r\n":
            start += 1
        _, end = decoder.raw_decode(text_, start)
        if key == "message":
            return text_[start:end].encode()
        index = end


def entry_ids(entries: Sequence[bytes]) -> list[str]:
    """The message ids of stored entries (our envelope or petisco's), in the given order."""
    return [json.loads(raw)["message"]["data"]["id"] for raw in entries]


def received_ids(counter: QueueCounter) -> list[str]:
    """Message ids in the order the queue delivered them."""
    return [properties["message_id"] for _, _, properties, _ in counter.messages]


def ledger_for(
    ids: Sequence[str], counter: QueueCounter, backlog: Backlog, dead: Sequence[str] = ()
) -> Ledger:
    """Sent ids against: delivered, still in the source list, dead-lettered."""
    ledger = Ledger(ids)
    ledger.add_received(counter.ids)
    ledger.add_fallback(backlog.client, backlog.keys.source, *backlog.processing_lists())
    ledger.add_dead_lettered(dead)
    return ledger


@pytest.fixture
def account(counter: QueueCounter, backlog: Backlog, tally: Tally) -> Callable[..., Ledger]:
    """``account(ids)``: the ledger of ``ids`` against ``counter`` and ``backlog``, tallied, with
    nothing lost and (unless ``allow_duplicates``) nothing delivered twice; returns the ledger."""

    def check(
        ids: Sequence[str], *, allow_duplicates: bool = False, backlog: Backlog = backlog
    ) -> Ledger:
        ledger = ledger_for(ids, counter, backlog)
        tally.ledger(ledger)
        ledger.assert_nothing_lost(allow_duplicates=allow_duplicates)
        return ledger

    return check


def assert_stopped(report: ReplayReport, because: str) -> None:
    """The run stopped and its reason names ``because`` (e.g. the service that failed)."""
    assert report.status == "stopped"
    assert report.stop_reason is not None
    assert because in report.stop_reason


# -- child processes (crashes and concurrent drains) ---------------------------------------------


class Child:
    """A replay run in another Python process (``tests/replay/_child.py``), to kill or race."""

    def __init__(self, **spec: Any) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.replay._child", json.dumps(spec)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str, timeout: float = 30.0) -> str:
        """Wait for a stdout line starting with ``line``; returns the rest of it."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            if not ready:
                self.kill()
                raise AssertionError(f"child did not print {line!r} in {timeout} s")
            got = self.process.stdout.readline()
            if not got:
                self.process.wait()
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"child exited before {line!r}:\n{stderr[-3000:]}")
            if got.startswith(line):
                return got[len(line) :].strip()

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no finally blocks, no clean-up, like an OOM kill or a lost host."""
        end_process(self.process)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    """``children(**spec)`` starts a child; every child still alive is killed afterwards."""
    started: list[Child] = []

    def start(**spec: Any) -> Child:
        child = Child(**spec)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
