"""The benchmark suite runs end to end at tiny sizes, so it never rots.

A smoke run, not a timed test: it checks that every figure is measured and reported with numbers,
never whether a target is met (that is what the full ``python -m bench`` run is for).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.cli import main
from bench.figures import expected_keys
from bench.sizes import QUICK

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_a_quick_run_prints_and_saves_every_figure_with_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"

    main(["--quick", "--json", str(path)])  # its exit status says whether targets were met

    printed = capsys.readouterr().out
    rows = json.loads(path.read_text())["rows"]
    assert [row["key"] for row in rows] == expected_keys(QUICK)
    for row in rows:
        numbers = {name: row[name] for name in ("fallbackbus", "baseline", "ratio")}
        assert all(_is_number(value) for value in numbers.values()), (row["key"], numbers)
        assert row["figure"] in printed
