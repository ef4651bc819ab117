"""One row per figure; the printed table and the JSON file of a run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BASELINES = {
    "kombu/msg": "kombu Producer.publish, confirm_publish + mandatory, one message per call",
    "amqp/stream": "py-amqp, streaming confirms: publish the whole batch, then wait for acks",
    "LPUSH": "redis-py LPUSH, one call per message",
    "kombu+LPUSH": "kombu with the same connect timeout (no breaker), then LPUSH on failure",
    "8x kombu/msg": "8 threads, each with its own kombu connection, confirm per message",
    "1 worker": "the 1-worker replay rate of the same backlog size",
    "backlog": "bytes of the backlog's entries: what holding the whole list in memory would take "
    "(a reference, not a client run)",
}


@dataclass
class Row:
    key: str
    """Stable id of the figure (compare runs by it)."""
    figure: str
    unit: str
    value: float | None
    baseline: float | None
    baseline_name: str
    target: str
    passed: bool | None
    """None: informational, no target."""
    ratio: float | None = None
    """fallbackbus / baseline (for times, below 1 means faster)."""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "figure": self.figure,
            "unit": self.unit,
            "fallbackbus": self.value,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "target": self.target,
            "passed": self.passed,
            "notes": self.notes,
        }


def _amount(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def _verdict(row: Row) -> str:
    if row.value is None:
        return "ERROR"
    if row.passed is None:
        return "info"
    return "pass" if row.passed else "FAIL"


def table(rows: list[Row]) -> str:
    header = ("#", "figure", "fallbackbus", "baseline", "ratio", "target", "result")
    lines = [
        (
            str(number),
            row.figure,
            _amount(row.value, row.unit),
            f"{_amount(row.baseline, row.unit)} [{row.baseline_name}]",
            "—" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target,
            _verdict(row),
        )
        for number, row in enumerate(rows, 1)
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [render(header), "-+-".join("-" * width for width in widths)]
    out += [render(cells) for cells in lines]
    used = sorted({row.baseline_name for row in rows if row.baseline_name in BASELINES})
    out += ["", "Baselines:"] + [f"  [{name}] {BASELINES[name]}" for name in used]
    notes = [(number, note) for number, row in enumerate(rows, 1) for note in row.notes]
    if notes:
        out += ["", "Notes:"] + [f"  {number}. {note}" for number, note in notes]
    return "\n".join(out)
