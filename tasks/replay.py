"""Replay tasks: each one is a single locked run of ``fallbackbus.replay.replay_list``.

Beat schedules them (see ``celeryconfig.beat_schedule``); they can also be sent by hand, e.g.
``celery -A tasks call fallbackbus.replay.list --args='["events"]'`` for petisco's list.
"""

from __future__ import annotations

from typing import Any

from fallbackbus.redis.keys import COMMANDS, DOMAIN_EVENTS
from fallbackbus.replay import replay_list
from tasks.app import app

LOCK_GRACE_SECONDS = 30.0
"""How long the run lock outlives the hard time limit: the worker kills a run before its lock can
expire, so two locked runs of one list never overlap."""


@app.task(name="fallbackbus.replay.list")
def replay(list_name: str, limit: int | None = None) -> dict[str, Any]:
    """Replay up to ``limit`` entries (default FALLBACKBUS_REPLAY_MAX_ENTRIES) of ``list_name``."""
    return _run(list_name, limit)


@app.task(name="fallbackbus.replay.domain_events")
def replay_domain_events(limit: int | None = None) -> dict[str, Any]:
    """Replay the ``domain.events`` list."""
    return _run(DOMAIN_EVENTS, limit)


@app.task(name="fallbackbus.replay.commands")
def replay_commands(limit: int | None = None) -> dict[str, Any]:
    """Replay the ``commands`` list."""
    return _run(COMMANDS, limit)


def _run(list_name: object, limit: object) -> dict[str, Any]:
    # Arguments arrive as JSON from beat or from `celery call`: check them before any I/O.
    if not isinstance(list_name, str) or not list_name.strip():
        raise ValueError(f"list_name must be a non-empty string, got {list_name!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive integer or null, got {limit!r}")
    lock_timeout = float(app.conf.task_time_limit) + LOCK_GRACE_SECONDS
    # End between batches well before the soft limit would interrupt one mid-flight.
    time_budget = float(app.conf.task_soft_time_limit) * 0.8
    report = replay_list(
        list_name.strip(), limit=limit, lock_timeout=lock_timeout, time_budget=time_budget
    )
    return report.as_dict()
