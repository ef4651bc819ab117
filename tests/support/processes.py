"""Ending the processes a test starts, whatever state they are in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def end_process(
    process: subprocess.Popen[Any],
    sig: signal.Signals = signal.SIGKILL,
    grace: float = 10.0,
    *,
    group: bool = False,
) -> None:
    """Send ``sig`` unless it has exited, give it ``grace`` seconds, SIGKILL whatever is left, reap.

    The default, SIGKILL, runs no ``finally`` block and no clean-up: what an OOM kill or a lost
    host does. With ``group`` the SIGKILL goes to the whole process group the process leads
    (started with ``start_new_session=True``), e.g. a Celery worker's pool.
    """
    if process.poll() is None:
        process.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    if group:
        # A group id is never reused while a member lives, so this reaches only what is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    elif process.poll() is None:
        process.kill()
    process.wait()
