"""Helpers of the Celery tests: the services' environment, and `celery` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from tests.support.processes import end_process

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def service_env(values: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker or beat: ours, without any ``FALLBACKBUS_`` of the caller's.

    ``celery`` resolves to this virtualenv's, and ``celeryconfig`` is importable from any working
    directory (the image does the same with ``PYTHONPATH=/app``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACKBUS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class CeleryProcess:
    """A ``celery`` command line in its own process group, its output kept in a file.

    ``stop()`` ends the whole group (the worker's pool processes too): SIGTERM, then SIGKILL if it
    has not gone within ``grace`` seconds. Use as a context manager so a failing test still does.
    """

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, name: str
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the output; fail with the output's tail otherwise."""

        def seen_or_exited() -> bool:
            exited = self._process is not None and self._process.poll() is not None
            return exited or text in self.output

        try:
            wait_until(seen_or_exited, timeout, repr(text), interval=0.05)
        except AssertionError:
            problem = f"printed no {text!r} within {timeout:g}s"
        else:
            if text in self.output:
                return
            problem = f"exited before printing {text!r}"
        raise AssertionError(f"{self.argv} {problem}; its output:\n{self.output[-3000:]}")

    def stop(self, grace: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            # SIGTERM: the leader's warm shutdown stops its own pool; then the group is killed.
            end_process(process, signal.SIGTERM, grace, group=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
