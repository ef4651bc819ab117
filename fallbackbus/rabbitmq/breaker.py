"""A circuit breaker so that a broker outage costs callers one bounded wait, not one per publish."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed -> (failure) -> open for ``cooldown`` s -> one probe -> closed or open again.

    While open, :meth:`allow` answers False at once, so publishes go straight to the fallback in
    microseconds instead of each waiting for a connect timeout. After the cool-down exactly one
    caller is let through to probe; the others keep using the fallback until it answers.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._probing = False
        self._pid = os.getpid()
        self.last_failure: str | None = None

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        if self._pid != os.getpid():
            self.reset_after_fork()
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = None
            self._probing = False
            self.last_failure = None

    def failed(self, reason: str) -> None:
        with self._lock:
            self._open_until = self._clock() + self.cooldown
            self._probing = False
            self.last_failure = reason

    def reset_after_fork(self) -> None:
        """In a forked child: a lock or a probe held by another thread of the parent is not ours."""
        self._lock = threading.Lock()
        self._probing = False
        self._pid = os.getpid()
