"""Timing helpers: rates, latencies, and fallbackbus/baseline rounds taken alternately."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def rate(operation: Callable[[int], object], calls: int, messages_per_call: int = 1) -> float:
    """Messages per second over ``calls`` calls of ``operation(number)``."""
    started = time.perf_counter()
    for number in range(calls):
        operation(number)
    return calls * messages_per_call / (time.perf_counter() - started)


def latencies(operation: Callable[[int], object], calls: int) -> list[float]:
    """Seconds taken by each of ``calls`` calls of ``operation(number)``."""
    taken = []
    for number in range(calls):
        started = time.perf_counter()
        operation(number)
        taken.append(time.perf_counter() - started)
    return taken


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of the values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def alternate(rounds: int, *measures: Callable[[], float]) -> list[float]:
    """The median of ``rounds`` runs of each measure, taking them in turn round after round, so
    a neighbour's load on the shared machine hits every side alike. Medians in ``measures`` order.
    """
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for taken, measure in zip(samples, measures, strict=True):
            taken.append(measure())
    return [statistics.median(taken) for taken in samples]
