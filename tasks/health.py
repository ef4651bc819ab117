"""Health check for beat, run by its container: ``python -m tasks.health [SCHEDULE_FILE]``.

Beat answers no ping, so it is judged by what it leaves behind: ``celeryconfig`` makes it write
its schedule file after every tick, so a file older than a few intervals means beat has stopped
ticking. (The worker's check is ``celery -A tasks inspect ping``.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fallbackbus.settings import Settings

MISSED_TICKS = 3
"""Ticks beat may miss (a slow broker, a busy host) before it counts as unhealthy."""


def beat_is_ticking(schedule: Path, interval: float) -> bool:
    """Whether the schedule file at ``schedule`` was written within the last few intervals."""
    # The dbm module behind shelve decides the suffix: none, ``.db``, or ``.dat``/``.dir``.
    written = [path.stat().st_mtime for path in schedule.parent.glob(f"{schedule.name}*")]
    age = time.time() - max(written, default=0.0)
    return age < MISSED_TICKS * interval


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.health")
    parser.add_argument("schedule", nargs="?", type=Path, default=Path("celerybeat-schedule"))
    args = parser.parse_args(argv)
    interval = Settings.from_env().replay_interval
    if beat_is_ticking(args.schedule, interval):
        return 0
    print(f"beat has not written {args.schedule} in {MISSED_TICKS} intervals", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
