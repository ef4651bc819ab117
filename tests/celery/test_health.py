"""Beat's health check: healthy while its schedule file keeps being written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tasks.health import beat_is_ticking, main


@pytest.mark.parametrize("suffix", ["", ".db", ".dat"])
def test_a_schedule_file_written_within_three_intervals_means_beat_is_ticking(
    tmp_path: Path, suffix: str
) -> None:
    (tmp_path / f"celerybeat-schedule{suffix}").write_bytes(b"")

    assert beat_is_ticking(tmp_path / "celerybeat-schedule", interval=30)


def test_a_schedule_file_older_than_three_intervals_means_beat_has_stopped(
    tmp_path: Path,
) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    schedule.write_bytes(b"")
    written = time.time() - 91
    os.utime(schedule, (written, written))

    assert not beat_is_ticking(schedule, interval=30)
    assert beat_is_ticking(schedule, interval=31)


def test_no_schedule_file_at_all_is_unhealthy_and_the_command_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FALLBACKBUS_REPLAY_INTERVAL", raising=False)

    assert main([str(tmp_path / "celerybeat-schedule")]) == 1
    assert "has not written" in capsys.readouterr().err
