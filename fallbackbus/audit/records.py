"""What the replay engine hands to the audit store: plain frozen dataclasses, no SQLAlchemy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from fallbackbus.audit.errors import InvalidRecord

OutcomeStatus = Literal["republished", "dead_lettered", "returned", "requeued", "purged"]
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = get_args(OutcomeStatus)

RunStatus = Literal["running", "completed", "stopped"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
FINISHED_RUN_STATUSES: tuple[RunStatus, ...] = ("completed", "stopped")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message. ``requeued`` and ``purged`` are admin actions (no run)."""

    message_id: str
    status: str
    source_list: str
    message_type: str | None = None
    organization: str | None = None
    service: str | None = None
    routing_key: str | None = None
    reason: str | None = None
    attempts: int = 0

    def __post_init__(self) -> None:
        # Checked here, where the mistake is made, rather than as an error from a batch insert.
        if self.status not in OUTCOME_STATUSES:
            raise InvalidRecord(
                f"unknown outcome status {self.status!r}; valid: {', '.join(OUTCOME_STATUSES)}"
            )


@dataclass(frozen=True, slots=True)
class RunReport:
    """The end of one replay run: how it ended, its counts and its timing."""

    run_id: str
    source_list: str
    status: str
    stop_reason: str | None
    republished: int
    dead_lettered: int
    returned: int
    recovered: int
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    worker: str

    def __post_init__(self) -> None:
        if self.status not in FINISHED_RUN_STATUSES:
            raise InvalidRecord(
                f"a finished run's status must be one of {', '.join(FINISHED_RUN_STATUSES)}, "
                f"got {self.status!r}"
            )
