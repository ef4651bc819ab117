"""Who used the two cores during a figure: the machine as a whole and each shared service.

Read-only: it looks at ``/proc`` through psutil and never touches the services themselves.
Processes are sampled in a thread, so a PostgreSQL backend that lives and dies within the
interval (one per replay worker) is still counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

SERVICES = {"beam.smp": "RabbitMQ", "redis-server": "Redis", "postgres": "PostgreSQL"}
SAMPLE_EVERY = 0.2


@dataclass(frozen=True)
class CpuUse:
    seconds: float
    cores: int
    busy: float
    """Fraction of all cores busy over the interval, 0..1."""
    services: dict[str, float]
    """CPU seconds each service used."""

    def cores_used(self, workers_cpu: float) -> dict[str, float]:
        """Cores used on average by the workers, each service and everything else, largest
        first. "other processes" is whatever else ran on the machine (other users included)."""
        used = {"replay workers": workers_cpu, **self.services}
        busy_seconds = self.busy * self.cores * self.seconds
        used["other processes"] = max(0.0, busy_seconds - sum(used.values()))
        ranked = sorted(used.items(), key=lambda item: -item[1])
        return {name: seconds / self.seconds for name, seconds in ranked}

    def describe(self, workers_cpu: float) -> str:
        parts = ", ".join(
            f"{name} {cores:.2f}" for name, cores in self.cores_used(workers_cpu).items()
        )
        return f"machine {self.busy:.0%} busy ({self.cores} cores); cores used: {parts}"


class CpuMeter:
    """Use as a context manager around the interval; read :attr:`use` afterwards."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.use: CpuUse | None = None

    def _sample(self, first: bool) -> None:
        for process in psutil.process_iter(["name", "cpu_times"]):
            service = SERVICES.get(process.info["name"] or "")
            times = process.info["cpu_times"]
            if service is None or times is None:
                continue
            used = times.user + times.system
            if first:
                self._first[process.pid] = used
            self._last[process.pid] = (service, used)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample(first=False)

    def __enter__(self) -> CpuMeter:
        self._sample(first=True)
        self._machine = psutil.cpu_times()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        seconds = time.monotonic() - self._started
        machine = psutil.cpu_times()
        total = sum(machine) - sum(self._machine)
        idle = (machine.idle + machine.iowait) - (self._machine.idle + self._machine.iowait)
        services = dict.fromkeys(SERVICES.values(), 0.0)
        for pid, (service, used) in self._last.items():
            services[service] += used - self._first.get(pid, 0.0)
        self.use = CpuUse(
            seconds=seconds,
            cores=psutil.cpu_count() or 1,
            busy=1 - idle / total if total > 0 else 0.0,
            services=services,
        )
