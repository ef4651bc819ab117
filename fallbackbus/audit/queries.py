"""What operators ask the audit trail: a Python API the CLI also uses.

Time windows are half-open, ``since <= t < until``, so consecutive windows never count a row
twice. Every datetime must be timezone-aware; every datetime returned is UTC-aware.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Executable, func, select
from sqlalchemy.orm import InstrumentedAttribute

from fallbackbus.audit.errors import InvalidQuery
from fallbackbus.audit.models import OutcomeRecord, RunRecord, aware_utc
from fallbackbus.audit.records import OUTCOME_STATUSES
from fallbackbus.audit.store import SqlAuditStore


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One row of ``fallbackbus_outcomes``."""

    id: int
    run_id: str | None
    message_id: str
    message_type: str | None
    organization: str | None
    service: str | None
    source_list: str
    routing_key: str | None
    status: str
    reason: str | None
    attempts: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of ``fallbackbus_runs``; ``finished_at`` is ``None`` while it is running."""

    run_id: str
    source_list: str
    worker: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    stop_reason: str | None
    republished: int
    dead_lettered: int
    returned: int
    recovered: int
    duration_seconds: float | None


class TypeCount(NamedTuple):
    message_type: str | None
    status: str
    total: int


_TOTAL = func.count().label("total")

ServiceKey = tuple[str | None, str | None]
"""``(organization, service)``; ``None`` where a poison entry did not say."""


class AuditQueries:
    """Read-only questions about the audit trail kept by ``store``."""

    def __init__(self, store: SqlAuditStore) -> None:
        self._store = store

    def outcomes(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        statuses: Sequence[str] = (),
        message_type: str | None = None,
        organization: str | None = None,
        service: str | None = None,
        message_id: str | None = None,
        run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[OutcomeRow]:
        """Outcomes matching every filter given, one page of ``limit`` rows from ``offset``."""
        _check_page(limit, offset)
        conditions = _window(OutcomeRecord.recorded_at, since, until)
        if statuses:
            conditions.append(OutcomeRecord.status.in_(_checked_statuses(statuses)))
        equal_to = (
            (OutcomeRecord.message_type, message_type),
            (OutcomeRecord.organization, organization),
            (OutcomeRecord.service, service),
            (OutcomeRecord.message_id, message_id),
            (OutcomeRecord.run_id, run_id),
        )
        conditions.extend(column == value for column, value in equal_to if value is not None)
        # ``id`` breaks ties between rows of one batch (same ``recorded_at``) so pages are stable.
        order = (
            (OutcomeRecord.recorded_at.desc(), OutcomeRecord.id.desc())
            if newest_first
            else (OutcomeRecord.recorded_at.asc(), OutcomeRecord.id.asc())
        )
        query = (
            select(OutcomeRecord.__table__)
            .where(*conditions)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        return [OutcomeRow(**row) for row in self._rows("query outcomes", query)]

    def outcome_counts(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, int]:
        """How many outcomes of each status; every status is a key, zero included."""
        query = (
            select(OutcomeRecord.status, _TOTAL)
            .where(*_window(OutcomeRecord.recorded_at, since, until))
            .group_by(OutcomeRecord.status)
        )
        counts: dict[str, int] = dict.fromkeys(OUTCOME_STATUSES, 0)
        for row in self._rows("count outcomes", query):
            counts[row["status"]] = row["total"]
        return counts

    def counts_by_type(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[TypeCount]:
        """``(message_type, status, count)`` per pair seen, by type then status (unknown last)."""
        query = (
            select(OutcomeRecord.message_type, OutcomeRecord.status, _TOTAL)
            .where(*_window(OutcomeRecord.recorded_at, since, until))
            .group_by(OutcomeRecord.message_type, OutcomeRecord.status)
        )
        counts = [
            TypeCount(row["message_type"], row["status"], row["total"])
            for row in self._rows("count outcomes by type", query)
        ]
        # Sorted here: SQLite and PostgreSQL disagree on where NULLs sort.
        return sorted(
            counts, key=lambda c: (c.message_type is None, c.message_type or "", c.status)
        )

    def totals_by_service(self) -> dict[ServiceKey, dict[str, int]]:
        """All-time outcome counts per ``(organization, service)``; every status is a key.

        For the accounting check: what fell back = republished + dead-lettered + still waiting.
        """
        query = select(
            OutcomeRecord.organization, OutcomeRecord.service, OutcomeRecord.status, _TOTAL
        ).group_by(OutcomeRecord.organization, OutcomeRecord.service, OutcomeRecord.status)
        totals: dict[ServiceKey, dict[str, int]] = {}
        for row in self._rows("count outcomes by service", query):
            key = (row["organization"], row["service"])
            totals.setdefault(key, dict.fromkeys(OUTCOME_STATUSES, 0))[row["status"]] = row["total"]
        return totals

    def runs(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRow]:
        """Runs started in the window, newest first."""
        _check_page(limit, offset)
        query = (
            select(RunRecord.__table__)
            .where(*_window(RunRecord.started_at, since, until))
            .order_by(RunRecord.started_at.desc(), RunRecord.run_id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [RunRow(**row) for row in self._rows("query runs", query)]

    def run(self, run_id: str) -> RunRow | None:
        query = select(RunRecord.__table__).where(RunRecord.run_id == run_id)
        rows = self._rows(f"query run {run_id}", query)
        return RunRow(**rows[0]) if rows else None

    def _rows(self, action: str, query: Executable) -> list[dict[str, Any]]:
        with self._store.transaction(action) as connection:
            return [dict(row) for row in connection.execute(query).mappings()]


def _window(
    column: InstrumentedAttribute[datetime], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= aware_utc(since, "since", InvalidQuery))
    if until is not None:
        conditions.append(column < aware_utc(until, "until", InvalidQuery))
    return conditions


def _checked_statuses(statuses: Sequence[str]) -> list[str]:
    # A lone string is a Sequence[str] too; take it as one status, not as its letters.
    wanted = [statuses] if isinstance(statuses, str) else list(statuses)
    unknown = [status for status in wanted if status not in OUTCOME_STATUSES]
    if unknown:
        raise InvalidQuery(
            f"unknown status {', '.join(map(repr, unknown))}; "
            f"valid statuses: {', '.join(OUTCOME_STATUSES)}"
        )
    return wanted


def _check_page(limit: int, offset: int) -> None:
    if limit < 1:
        raise InvalidQuery(f"limit must be at least 1, got {limit}")
    if offset < 0:
        raise InvalidQuery(f"offset must be 0 or more, got {offset}")
