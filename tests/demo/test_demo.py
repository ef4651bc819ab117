"""The README's main job, run as a newcomer runs it: it must end with a balanced accounting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_demo_survives_an_outage_and_prints_a_balanced_accounting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--outage", "3", "--rate", "25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "messages fall back to Redis" in output
    assert "accounting balances, every message arrived" in output
    assert "(0 duplicates)" in output or "duplicates)" in output
    # Something really fell back and was republished, or the demo showed nothing.
    republished = next(line for line in output.splitlines() if "republished" in line)
    assert int(republished.split()[-2]) > 0, republished
