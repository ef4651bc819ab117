"""The table of scenario counts printed at the end of a run (see ``conftest.py``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.support.accounting import Ledger


@dataclass
class ScenarioRow:
    """One line of the end-of-run table: what one scenario test counted, and how it ended."""

    number: int
    title: str
    nodeid: str
    messages: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    note: str = ""
    result: str = "not run"
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def count(
        self,
        *,
        messages: int | None = None,
        lost: int | None = None,
        duplicates: int | None = None,
        note: str | None = None,
    ) -> None:
        """Record the counts; call it *before* asserting, so a failure still shows them."""
        if messages is not None:
            self.messages = messages
        if lost is not None:
            self.lost = lost
        if duplicates is not None:
            self.duplicates = duplicates
        if note is not None:
            self.note = note

    def count_ledger(self, ledger: Ledger, messages: int, note: str) -> None:
        """Record ``messages`` and the ledger's lost and duplicated ids (before asserting)."""
        self.count(
            messages=messages,
            lost=len(ledger.lost()),
            duplicates=ledger.duplicate_count(),
            note=note,
        )


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def table(rows: Sequence[ScenarioRow]) -> list[str]:
    """The rows as aligned text lines, in scenario order, counts right-aligned."""
    header = ("scenario", "messages", "lost", "duplicates", "result", "time", "notes")
    lines = [
        (
            f"{r.number}. {r.title}",
            _cell(r.messages),
            _cell(r.lost),
            _cell(r.duplicates),
            r.result,
            f"{r.seconds:.1f}s",
            r.note,
        )
        for r in sorted(rows, key=lambda r: r.number)
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    right = {1, 2, 3, 5}

    def fmt(line: tuple[str, ...]) -> str:
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(line)
        ]
        return " | ".join(cells).rstrip()

    return [fmt(header), "-+-".join("-" * w for w in widths), *(fmt(line) for line in lines)]
