"""What the fault scenarios share: messages, backlogs, the census of every id, bounded waits and
replay worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import redis
from sqlalchemy import make_url, select

from fallbackbus import DomainEvent, RedisDomainEventBus
from fallbackbus.admin import accounting
from fallbackbus.audit import SqlAuditStore
from fallbackbus.audit.models import OutcomeRecord, RunRecord
from fallbackbus.envelope import decode_dead_letter, peek_identity
from fallbackbus.redis import ListKeys
from fallbackbus.replay import COMPLETED, Replayer
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter
from tests.support.processes import end_process
from tests.support.services import REDIS_URL, Names

REPO = Path(__file__).resolve().parents[2]

_T = TypeVar("_T")


class AuditDatabase:
    """The audit stores of one private PostgreSQL schema (``private_url``), and reads of it."""

    def __init__(self, private_url: str) -> None:
        self.private_url = private_url
        self._stores: list[SqlAuditStore] = []
        self._reader: SqlAuditStore | None = None

    def url(self, proxy: FaultProxy | None = None, password: str | None = None) -> str:
        """The schema's URL, optionally through ``proxy`` and with a password in it."""
        url = make_url(self.private_url)
        if proxy is not None:
            url = url.set(host=proxy.listen_host, port=proxy.port)
        if password is not None:
            url = url.set(password=password)
        return url.render_as_string(hide_password=False)

    def store(self, url: str | None = None, connect_timeout: float = 2.0) -> SqlAuditStore:
        store = SqlAuditStore(url or self.url(), connect_timeout=connect_timeout)
        self._stores.append(store)
        return store

    @property
    def reader(self) -> SqlAuditStore:
        """A store on the direct URL, for the test's own reads whatever the proxies do."""
        if self._reader is None:
            self._reader = self.store()
        return self._reader

    def outcomes(self, run_id: str | None = None) -> list[tuple[str, str, str | None]]:
        """Every outcome row (of one run, if given) as (message_id, status, reason)."""
        query = select(OutcomeRecord.message_id, OutcomeRecord.status, OutcomeRecord.reason)
        if run_id is not None:
            query = query.where(OutcomeRecord.run_id == run_id)
        with self.reader.engine.connect() as connection:
            return [(r[0], r[1], r[2]) for r in connection.execute(query)]

    def runs(self) -> list[dict[str, Any]]:
        with self.reader.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(select(RunRecord))]

    def ids_with(self, status: str) -> list[str]:
        return [mid for mid, s, _ in self.outcomes() if s == status]

    def dispose(self) -> None:
        for store in self._stores:
            store.dispose()


class UserCreated(DomainEvent):
    user_id: str
    sequence: int


def events(count: int, start: int = 0) -> list[UserCreated]:
    return [UserCreated(user_id=f"user-{n}", sequence=n) for n in range(start, start + count)]


def fill_backlog(
    client: redis.Redis, names: Names, count: int, service: str = "", chunk: int = 1000
) -> list[str]:
    """Store ``count`` events of ``service`` (default: the test's) through the Redis bus (the real
    fallback write) in the test's ``domain.events``; ids oldest first."""
    bus = RedisDomainEventBus(
        names.organization, service or names.service, client, key_prefix=names.prefix
    )
    ids: list[str] = []
    for start in range(0, count, chunk):
        batch = events(min(chunk, count - start), start)
        bus.publish(batch)
        ids.extend(e.message_id for e in batch)
    return ids


def entry_id(raw: bytes) -> str | None:
    return peek_identity(raw).get("message_id")


def waiting_keys(client: redis.Redis, keys: ListKeys) -> list[str]:
    """The source list and every processing list of it: where an unfinished entry can be."""
    processing = sorted(k.decode() for k in client.scan_iter(match=keys.processing_pattern))
    return [keys.source, *processing]


def dead_letter_ids(client: redis.Redis, keys: ListKeys) -> list[str]:
    ids = []
    for raw in client.lrange(keys.dead, 0, -1):
        mid = entry_id(decode_dead_letter(raw).original)
        ids.append(mid if mid is not None else "<unreadable dead letter>")
    return ids


def census(
    sent: Iterable[str],
    received: Iterable[str] | dict[str, int],
    client: redis.Redis,
    keys: ListKeys,
) -> Ledger:
    """A ledger of every sent id: delivered, still waiting in Redis, or dead-lettered."""
    ledger = Ledger(sent)
    ledger.add_received(received)
    ledger.add_fallback(client, *waiting_keys(client, keys))
    ledger.add_dead_lettered(dead_letter_ids(client, keys))
    return ledger


def assert_counters_balance(prefix: str, *list_names: str) -> None:
    """The library's own accounting: fell_back = republished + dead_lettered + purged + waiting."""
    settings = Settings.from_env(
        {}, redis_url=REDIS_URL, redis_key_prefix=prefix, replay_lists=list_names
    )
    unbalanced = [b.as_dict() for b in accounting(settings) if not b.balanced]
    assert not unbalanced, f"Redis counters do not balance: {unbalanced}"


def run_bounded(
    action: Callable[[], _T], bound: float, unblock: Callable[[], None]
) -> tuple[_T | None, float, BaseException | None]:
    """Run ``action`` in a thread for at most ``bound`` seconds.

    Returns (result, seconds it took, exception). If it is still running at the bound, ``unblock``
    is called (e.g. reset the proxy's connections) so the thread ends and nothing leaks into the
    next test, and the time reported is the bound: the caller's assertion then fails.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = action()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="bounded", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        unblock()
        thread.join(30)
    return box.get("result"), elapsed, box.get("error")


class WorkerProcess:
    """``python -m tests.faults.replay_worker`` in its own process, output kept in files."""

    def __init__(self, directory: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.replay_worker", *args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finally blocks, sockets closed by the kernel."""
        end_process(self.process)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} still running after {timeout} s\n{self.output()}"
            ) from None

    def reports(self) -> list[dict[str, Any]]:
        """The run reports the worker printed (a killed worker may have cut its last line)."""
        out = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def output(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"--- {self.name} stderr (tail) ---\n{err}"


def collect(
    counter: QueueCounter, wanted: set[str], timeout: float = 60.0, settle: float = 0.3
) -> None:
    """Consume until every id of ``wanted`` has arrived (or ``timeout``), then any stragglers
    (duplicates) until the queue has been quiet for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    while (missing := len(wanted - counter.ids.keys())) and time.monotonic() < deadline:
        counter.drain(counter.received + missing, timeout=min(1.0, deadline - time.monotonic()))
    counter.drain(None, idle=settle)


def replay_until_empty(
    replayer: Replayer, client: redis.Redis, keys: ListKeys, batch_size: int = 500
) -> None:
    """Run the replay on ``keys`` until its source list is empty; every run must complete."""
    for _ in range(20):
        report = replayer.run(keys.name, batch_size=batch_size)
        assert report.status == COMPLETED, report
        if client.llen(keys.source) == 0:
            return
    raise AssertionError(f"{keys.source} did not drain in 20 runs")
