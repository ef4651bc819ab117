"""Hooks for tests that break a dependency at an exact point of a replay run."""

from __future__ import annotations

from collections.abc import Callable

from fallbackbus.replay import ReplayReport


def after_batches(count: int, action: Callable[[], None]) -> Callable[[ReplayReport], None]:
    """An ``on_batch`` hook that calls ``action`` once, after the ``count``-th batch (which is
    published, audited and deleted by then)."""
    seen = 0

    def on_batch(report: ReplayReport) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            action()

    return on_batch
