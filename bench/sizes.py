"""How much work each figure does: the full run, and a tiny one for the smoke test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    rounds: int
    """Alternating fallbackbus/baseline rounds per throughput comparison; the median is kept."""
    single: int
    """Messages per round, one publish call each."""
    batch_size: int
    batches: int
    """Batches per round."""
    fallback: int
    """Publishes per round while RabbitMQ refuses connections."""
    hung_connect_timeout: float
    hung_next: int
    hung_baseline_samples: int
    """Each baseline sample waits a whole connect timeout, so only a few are taken."""
    replay_backlog: int
    rss_backlog: int
    workers_backlog: int
    worker_counts: tuple[int, ...]
    threads: int
    thread_publishes: int
    """Messages per thread."""


FULL = Sizes(
    rounds=3,
    single=2_000,
    batch_size=1_000,
    batches=10,
    fallback=5_000,
    hung_connect_timeout=1.0,
    hung_next=1_000,
    hung_baseline_samples=3,
    replay_backlog=100_000,
    rss_backlog=1_000_000,
    workers_backlog=50_000,
    worker_counts=(1, 2, 4),
    threads=8,
    thread_publishes=500,
)

QUICK = Sizes(
    rounds=1,
    single=20,
    batch_size=50,
    batches=2,
    fallback=50,
    hung_connect_timeout=0.2,
    hung_next=50,
    hung_baseline_samples=1,
    replay_backlog=200,
    rss_backlog=500,
    workers_backlog=200,
    worker_counts=(1, 2),
    threads=8,
    thread_publishes=5,
)
