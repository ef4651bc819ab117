"""The replay engine: drain one fallback list back to RabbitMQ, auditing every message.

Plain Python (no Celery), so it runs from a task, the CLI or a test. One run:

1. checks the audit database (no republish without an audit row),
2. recovers processing lists of crashed runs whose lease expired,
3. then, batch by batch: claim -> publish -> audit -> delete. Each step only starts once the
   previous one is durable, so a crash anywhere leaves every entry in the source list, in a
   processing list (recovered later), or confirmed *and* audited. At-least-once, never lost.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis as redis_py

from fallbackbus.audit import AuditStore, Outcome, RunReport, SqlAuditStore
from fallbackbus.envelope import (
    PoisonEntry,
    StoredEntry,
    decode,
    encode,
    encode_dead_letter,
    is_ours,
    peek_identity,
    unreadable_id,
)
from fallbackbus.errors import AuditUnavailable, ReplayError
from fallbackbus.rabbitmq.connector import RabbitMqConnector
from fallbackbus.rabbitmq.publisher import RabbitMqPublisher
from fallbackbus.redis import scripts
from fallbackbus.redis.client import redis_from_url
from fallbackbus.redis.keys import ListKeys, stats_field
from fallbackbus.secrets import describe_error
from fallbackbus.settings import Settings

logger = logging.getLogger(__name__)

REPLAYED_HEADER = "x-fallbackbus-replayed"
RUN_HEADER = "x-fallbackbus-run-id"
ATTEMPT_HEADER = "x-fallbackbus-attempt"

COMPLETED = "completed"
STOPPED = "stopped"
SKIPPED = "skipped"


@dataclass
class ReplayReport:
    """What one run did. ``status`` is completed, stopped (``stop_reason`` says why) or skipped."""

    run_id: str
    source_list: str
    status: str = COMPLETED
    stop_reason: str | None = None
    republished: int = 0
    dead_lettered: int = 0
    returned: int = 0
    recovered: int = 0
    duration_seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out


@dataclass
class _Batch:
    """One claimed batch and the fate of each of its entries."""

    raw: list[bytes]  # oldest first, exactly as claimed
    outcomes: list[Outcome] = field(default_factory=list)
    back: list[bytes] = field(default_factory=list)  # to return to the source, oldest first
    dead: list[bytes] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


class Replayer:
    """Drains fallback lists. Safe to run in any number of processes on one list at once."""

    def __init__(
        self,
        *,
        redis: redis_py.Redis,
        publisher: RabbitMqPublisher,
        audit: AuditStore,
        settings: Settings | None = None,
        key_prefix: str | None = None,
    ) -> None:
        self.redis = redis
        self.publisher = publisher
        self.audit = audit
        self.settings = settings or Settings.from_env()
        self.key_prefix = self.settings.redis_key_prefix if key_prefix is None else key_prefix
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._closers: list[Callable[[], None]] = []
        self._claim = redis.register_script(scripts.CLAIM)
        self._recover = redis.register_script(scripts.RECOVER)
        self._expired = redis.register_script(scripts.EXPIRED)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Replayer:
        """A replayer that owns its clients, built from ``FALLBACKBUS_*`` settings."""
        settings = settings or Settings.from_env()
        audit = SqlAuditStore.from_settings(settings)
        replayer = cls(
            redis=redis_from_url(settings=settings),
            publisher=RabbitMqPublisher(RabbitMqConnector(settings=settings)),
            audit=audit,
            settings=settings,
        )
        replayer._closers = [
            replayer.publisher.connector.close,
            replayer.redis.close,
            audit.dispose,
        ]
        return replayer

    def close(self) -> None:
        """Close the clients this replayer created (none when they were handed in)."""
        for close in self._closers:
            close()

    def run(
        self,
        list_name: str,
        *,
        limit: int | None = None,
        batch_size: int | None = None,
        time_budget: float | None = None,
        on_batch: Callable[[ReplayReport], None] | None = None,
    ) -> ReplayReport:
        """Drain up to ``limit`` entries of ``list_name``; returns the run's report.

        ``time_budget`` (seconds) ends the run cleanly between batches, so a task time limit
        never has to cut one in the middle (which would cost a lease wait and duplicates).
        """
        keys = ListKeys(list_name, self.key_prefix)
        limit = limit or self.settings.replay_max_entries
        batch_size = batch_size or self.settings.replay_batch_size
        report = ReplayReport(run_id=uuid.uuid4().hex, source_list=keys.source)
        started = time.monotonic()
        try:
            # No republish without an audit row: if the database is down, claim nothing.
            self.audit.ping()
            self.audit.start_run(report.run_id, keys.source, self.worker, report.started_at)
        except AuditUnavailable as exc:
            self._stop(report, f"audit database unavailable: {exc}")
            return self._end(report, started, recorded=False)
        try:
            report.recovered = self._recover_expired(keys)
            unreachable = self.publisher.unreachable_reason()
            if unreachable is not None:
                # Claiming now would only move entries back and forth: stop before touching any.
                self._stop(report, f"RabbitMQ unavailable: {unreachable}")
            budget_end = started + time_budget if time_budget else float("inf")
            while (
                report.status == COMPLETED
                and self._done(report) < limit
                and time.monotonic() < budget_end
            ):
                want = min(batch_size, limit - self._done(report))
                claimed = self._claim(
                    keys=[keys.source, keys.processing(report.run_id), keys.leases],
                    args=[want, report.run_id, self.settings.replay_lease_seconds],
                )
                if not claimed:
                    break
                claimed.reverse()  # LRANGE gave newest..oldest; work oldest first
                self._process(keys, report, _Batch(raw=claimed))
                if on_batch is not None:
                    on_batch(report)
        except redis_py.RedisError as exc:
            # What was claimed stays in this run's processing list; its lease brings it back.
            self._stop(report, f"Redis failed: {describe_error(exc)}")
        self._release_lease(keys, report)
        return self._end(report, started, recorded=True)

    def _process(self, keys: ListKeys, report: ReplayReport, batch: _Batch) -> None:
        entries: list[tuple[bytes, StoredEntry]] = []
        for raw in batch.raw:
            try:
                entry = decode(raw, max_bytes=self.settings.max_message_bytes)
                self._check_allowed(entry)
            except PoisonEntry as poison:
                self._park(keys, report, batch, raw, poison.reason, attempts=0)
                continue
            if entry.attempts >= self.settings.replay_max_attempts:
                reason = f"gave up after {entry.attempts} attempts: {entry.reason}"
                self._park(keys, report, batch, raw, reason, entry.attempts, entry)
                continue
            entries.append((raw, entry))

        stop_reason = None
        if entries:
            headers = {REPLAYED_HEADER: True, RUN_HEADER: report.run_id}
            result = self.publisher.publish([e.outgoing for _, e in entries], headers)
            failures = {id(m): why for m, why in result.failed}
            if result.failed:
                # Unreachable, nack or return: finish this batch, then stop the run. Retrying
                # at once would only burn the entries' attempts; the next tick tries again.
                first = result.failed[0][1]
                stop_reason = (
                    f"RabbitMQ refused {len(result.failed)} message(s): {first}"
                    if result.broker_reachable
                    else f"RabbitMQ unavailable: {first}"
                )
            for raw, entry in entries:
                why = failures.get(id(entry.outgoing))
                if why is None:
                    self._republished(report, batch, raw, entry)
                elif not result.broker_reachable:
                    # Not an attempt: RabbitMQ never saw it. Back as it was, in order.
                    self._return(report, batch, raw, entry, why, entry.attempts, rewrite=False)
                elif entry.attempts + 1 >= self.settings.replay_max_attempts:
                    reason = f"gave up after {entry.attempts + 1} attempts: {why}"
                    self._park(keys, report, batch, raw, reason, entry.attempts + 1, entry)
                else:
                    self._return(report, batch, raw, entry, why, entry.attempts + 1, rewrite=True)

        try:
            # Audit before delete: once the rows are committed, deleting is safe; if the database
            # fails here, everything goes back to the source and will be replayed (and audited)
            # by a later run.
            self.audit.record(report.run_id, batch.outcomes)
        except AuditUnavailable as exc:
            self._finish_batch(keys, report, back=batch.raw, dead=[], counters=Counter())
            self._undo_counts(report, batch)
            self._stop(report, f"audit database failed mid-run: {exc}")
            return
        self._finish_batch(keys, report, batch.back, batch.dead, batch.counters)
        if stop_reason is not None:
            self._stop(report, stop_reason)

    def _finish_batch(
        self,
        keys: ListKeys,
        report: ReplayReport,
        back: Sequence[bytes],
        dead: Sequence[bytes],
        counters: Counter[str],
    ) -> None:
        # One MULTI: the processing list is emptied, returned entries go back to the oldest end
        # (RPUSH newest-first so the oldest ends up last, at the tail), parked entries go to the
        # dead letters and the counters move, all at once or not at all.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.processing(report.run_id))
            if back:
                pipe.rpush(keys.source, *reversed(back))
            if dead:
                pipe.lpush(keys.dead, *dead)
            for name, count in counters.items():
                pipe.hincrby(keys.stats, name, count)
            pipe.execute()

    def _republished(
        self, report: ReplayReport, batch: _Batch, raw: bytes, entry: StoredEntry
    ) -> None:
        out = entry.outgoing
        report.republished += 1
        batch.outcomes.append(self._outcome(report, entry, "republished", None, entry.attempts + 1))
        self._count(batch, out.organization, out.service, "republished", counted=_counted(entry))

    def _return(
        self,
        report: ReplayReport,
        batch: _Batch,
        raw: bytes,
        entry: StoredEntry,
        why: str,
        attempts: int,
        *,
        rewrite: bool,
    ) -> None:
        report.returned += 1
        batch.outcomes.append(self._outcome(report, entry, "returned", why, attempts))
        if rewrite or not _counted(entry):
            # A foreign (petisco) entry is re-written in our envelope, so it is counted as
            # fell back now, once, like the ones we stored ourselves.
            if not _counted(entry):
                out = entry.outgoing
                batch.counters[stats_field(out.organization, out.service, "fell_back")] += 1
            raw = encode(entry.outgoing, reason=why, attempts=attempts, stored_at=entry.stored_at)
        batch.back.append(raw)

    def _park(
        self,
        keys: ListKeys,
        report: ReplayReport,
        batch: _Batch,
        raw: bytes,
        reason: str,
        attempts: int,
        entry: StoredEntry | None = None,
    ) -> None:
        report.dead_lettered += 1
        ident = peek_identity(raw) if entry is None else {}
        if entry is not None:
            out = entry.outgoing
            outcome = self._outcome(report, entry, "dead_lettered", reason, attempts)
            org, svc = out.organization, out.service
        else:
            org, svc = ident.get("organization", "?"), ident.get("service", "?")
            outcome = Outcome(
                message_id=ident.get("message_id") or unreadable_id(raw),
                status="dead_lettered",
                source_list=keys.source,
                message_type=ident.get("message_type"),
                organization=ident.get("organization"),
                service=ident.get("service"),
                reason=reason,
                attempts=attempts,
            )
        batch.outcomes.append(outcome)
        batch.dead.append(
            encode_dead_letter(raw, reason=reason, source_list=keys.source, run_id=report.run_id)
        )
        counted = _counted(entry) if entry is not None else is_ours(raw)
        self._count(batch, org, svc, "dead_lettered", counted=counted)

    @staticmethod
    def _count(batch: _Batch, org: str, svc: str, counter: str, *, counted: bool) -> None:
        """Move ``counter``; ``counted`` says the entry was already counted as fell back."""
        batch.counters[stats_field(org, svc, counter)] += 1
        if not counted:
            # Written by petisco or by hand: never counted as fell back; count it on first sight
            # so that fell back = republished + dead-lettered + waiting always balances.
            batch.counters[stats_field(org, svc, "fell_back")] += 1

    def _outcome(
        self, report: ReplayReport, entry: StoredEntry, status: str, reason: str | None, n: int
    ) -> Outcome:
        out = entry.outgoing
        return Outcome(
            message_id=out.message_id,
            status=status,
            source_list=report.source_list,
            message_type=out.type,
            organization=out.organization,
            service=out.service,
            routing_key=out.routing_key,
            reason=reason,
            attempts=n,
        )

    def _check_allowed(self, entry: StoredEntry) -> None:
        allowed = self.settings.replay_allowed_services
        out = entry.outgoing
        if allowed and f"{out.organization}.{out.service}" not in allowed:
            raise PoisonEntry(f"service {out.organization}.{out.service} is not in the allow-list")

    def _recover_expired(self, keys: ListKeys) -> int:
        recovered = 0
        for run_id in self._expired(keys=[keys.leases]):
            run = run_id.decode() if isinstance(run_id, bytes) else str(run_id)
            moved = int(
                self._recover(keys=[keys.source, keys.processing(run), keys.leases], args=[run])
            )
            if moved > 0:
                logger.warning(
                    "recovered %d entries of crashed run %s on %s", moved, run, keys.source
                )
                recovered += moved
        return recovered

    def _release_lease(self, keys: ListKeys, report: ReplayReport) -> None:
        try:
            if not self.redis.exists(keys.processing(report.run_id)):
                self.redis.zrem(keys.leases, report.run_id)
        except redis_py.RedisError as exc:
            logger.warning(
                "could not release lease of run %s: %s", report.run_id, describe_error(exc)
            )

    @staticmethod
    def _undo_counts(report: ReplayReport, batch: _Batch) -> None:
        for outcome in batch.outcomes:
            setattr(report, outcome.status, getattr(report, outcome.status) - 1)

    @staticmethod
    def _done(report: ReplayReport) -> int:
        return report.republished + report.dead_lettered + report.returned

    @staticmethod
    def _stop(report: ReplayReport, reason: str) -> None:
        report.status = STOPPED
        report.stop_reason = reason
        logger.warning("replay run %s on %s stopped: %s", report.run_id, report.source_list, reason)

    def _end(self, report: ReplayReport, started: float, *, recorded: bool) -> ReplayReport:
        report.finished_at = datetime.now(UTC)
        report.duration_seconds = time.monotonic() - started
        if recorded:
            try:
                self.audit.finish_run(
                    RunReport(
                        run_id=report.run_id,
                        source_list=report.source_list,
                        status=report.status,
                        stop_reason=report.stop_reason,
                        republished=report.republished,
                        dead_lettered=report.dead_lettered,
                        returned=report.returned,
                        recovered=report.recovered,
                        started_at=report.started_at,
                        finished_at=report.finished_at,
                        duration_seconds=report.duration_seconds,
                        worker=self.worker,
                    )
                )
            except AuditUnavailable as exc:
                logger.warning("could not record the end of run %s: %s", report.run_id, exc)
        return report


def _counted(entry: StoredEntry) -> bool:
    """Stored by a fallbackbus bus (which counted it as fell back), not by petisco or by hand."""
    return entry.stored_at is not None


def replay_list(
    list_name: str,
    *,
    settings: Settings | None = None,
    replayer: Replayer | None = None,
    limit: int | None = None,
    lock_timeout: float | None = None,
    time_budget: float | None = None,
    on_batch: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """One locked run on ``list_name``: what a beat tick and ``fallbackbus replay`` call.

    The lock only keeps overlapping ticks from piling up (correctness does not depend on it: the
    claim is atomic). A tick that finds it taken returns at once with status ``skipped``.
    """
    settings = settings or Settings.from_env()
    owned = replayer is None
    engine = replayer or Replayer.from_settings(settings)
    keys = ListKeys(list_name, engine.key_prefix)
    timeout = lock_timeout or max(60.0, settings.replay_interval * 10)
    try:
        lock = engine.redis.lock(keys.lock, timeout=timeout, blocking=False)
        if not lock.acquire():
            return ReplayReport(
                run_id="",
                source_list=keys.source,
                status=SKIPPED,
                stop_reason="another run holds the lock",
                finished_at=datetime.now(UTC),
            )
        try:
            return engine.run(list_name, limit=limit, time_budget=time_budget, on_batch=on_batch)
        finally:
            try:
                lock.release()
            except redis_py.exceptions.LockError:
                logger.warning("replay lock on %s expired before the run ended", keys.source)
    except redis_py.RedisError as exc:
        raise ReplayError(f"Redis unavailable: {describe_error(exc)}") from exc
    finally:
        if owned:
            engine.close()
