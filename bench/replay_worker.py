"""Replay workers in processes of their own, so their memory and CPU are theirs alone.

The parent starts each worker with a JSON spec; the worker connects everything, reports ``ready``
with its resident memory, waits for ``go`` on stdin (so several workers start together), drains
the list with :class:`fallbackbus.replay.Replayer` and prints one JSON line of results.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from fallbackbus import RabbitMqConnector, Settings
from fallbackbus.audit import SqlAuditStore
from fallbackbus.rabbitmq import RabbitMqPublisher
from fallbackbus.replay import Replayer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EVERY = 0.02


@dataclass(frozen=True)
class WorkerSpec:
    rabbitmq_url: str
    redis_url: str
    audit_url: str
    key_prefix: str
    list_name: str
    limit: int


@dataclass(frozen=True)
class WorkerResult:
    status: str
    stop_reason: str | None
    republished: int
    dead_lettered: int
    returned: int
    started: float
    """``time.monotonic()`` when ``run()`` was called (system-wide clock on Linux)."""
    finished: float
    rss_start: int
    rss_peak: int
    """The larger of the sampled peak and ``ru_maxrss``, in bytes."""
    cpu_seconds: float
    batch_size: int

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_start


def run_workers(
    specs: list[WorkerSpec],
    during: AbstractContextManager[object] | None = None,
    timeout: float = 1_800.0,
) -> list[WorkerResult]:
    """Start one process per spec, release them together, and return their results.

    ``during`` is entered when the workers are released and left once they have all finished.
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.replay_worker", json.dumps(asdict(spec))],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"replay worker exited before it was ready: {process.wait()}")
        outputs = []
        with during or nullcontext():
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            for process in processes:
                out, _ = process.communicate(timeout=timeout)
                if process.returncode != 0:
                    raise RuntimeError(f"replay worker failed: exit status {process.returncode}")
                outputs.append(out)
        return [WorkerResult(**json.loads(out)) for out in outputs]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class _PeakRss:
    """Samples this process's resident memory in a thread and keeps the highest value."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _work(spec: WorkerSpec) -> dict[str, Any]:
    settings = Settings.from_env()
    client = redis.Redis.from_url(spec.redis_url)
    connector = RabbitMqConnector(spec.rabbitmq_url, settings=settings)
    audit = SqlAuditStore(spec.audit_url)
    replayer = Replayer(
        redis=client,
        publisher=RabbitMqPublisher(connector),
        audit=audit,
        settings=settings,
        key_prefix=spec.key_prefix,
    )
    # Open every connection before measuring, so the figures are about the run, not set-up.
    connector.release(connector.acquire())
    audit.ping()
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = _cpu_seconds()
    with _PeakRss() as memory:
        rss_start = memory.peak
        started = time.monotonic()
        report = replayer.run(spec.list_name, limit=spec.limit)
        finished = time.monotonic()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    cpu = _cpu_seconds() - cpu
    connector.close()
    audit.dispose()
    client.close()
    return asdict(
        WorkerResult(
            status=report.status,
            stop_reason=report.stop_reason,
            republished=report.republished,
            dead_lettered=report.dead_lettered,
            returned=report.returned,
            started=started,
            finished=finished,
            rss_start=rss_start,
            rss_peak=max(memory.peak, max_rss),
            cpu_seconds=cpu,
            batch_size=settings.replay_batch_size,
        )
    )


if __name__ == "__main__":
    print(json.dumps(_work(WorkerSpec(**json.loads(sys.argv[1])))), flush=True)
