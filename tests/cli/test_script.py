"""The installed ``fallbackbus`` console script, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.admin.conftest import PASSWORD, World, closed_port_url

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).with_name("fallbackbus")


def run(world: World, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACKBUS_")}
    env.update(world.environ(**settings))
    executable = str(SCRIPT) if SCRIPT.exists() else shutil.which("fallbackbus")
    assert executable is not None, "the fallbackbus console script is not installed"
    return subprocess.run(
        [executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_installed_script_reports_status_as_json(world: World) -> None:
    world.fall_back(2)

    done = run(world, "status", "--format", "json")

    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["lists"][0]["waiting"] == 2
    assert status["problems"] == []
    assert done.stderr == ""


def test_the_installed_script_checks_the_accounting_as_a_table(world: World) -> None:
    world.fall_back(1)

    done = run(world, "accounting")

    assert done.returncode == 0, done.stderr
    assert world.keys().source in done.stdout
    assert "yes" in done.stdout


def test_the_installed_script_exits_3_in_one_line_when_redis_is_unreachable(world: World) -> None:
    done = run(world, "dead-letters", "list", redis_url=closed_port_url("redis", "/0"))

    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("fallbackbus: error: Redis at redis://user:***@127.0.0.1:")
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
