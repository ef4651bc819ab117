"""Fixtures for the command-line tests: the worlds of ``tests/admin`` and a runner for them.

``cli("status", "--format", "json")`` runs ``fallbackbus`` in-process (typer's ``CliRunner``)
against the test's world, configured only through ``FALLBACKBUS_*`` variables as an operator's
shell would be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fallbackbus.cli import app
from tests.admin.conftest import PASSWORD, World, world

__all__ = ["world"]  # a fixture shared with tests/admin


@dataclass
class Cli:
    world: World
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None, **settings: str) -> Result:
        """Run ``fallbackbus *args``; ``settings`` override ``FALLBACKBUS_<NAME>`` variables."""
        return self.runner.invoke(app, list(args), input=input, env=self.world.environ(**settings))

    def json(self, *args: str, **settings: str) -> Any:
        """Run with ``--format json``, check it succeeded, and parse what it printed."""
        result = self(*args, "--format", "json", **settings)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli(world: World) -> Cli:
    return Cli(world, CliRunner())


def table_rows(output: str, first_column: str) -> list[list[str]]:
    """The rows of a printed table whose first cell is ``first_column``, split on 2+ spaces."""
    rows = []
    for line in output.splitlines():
        cells = [cell for cell in line.strip().split("  ") if cell.strip()]
        if cells and cells[0].strip() == first_column:
            rows.append([cell.strip() for cell in cells])
    return rows


def assert_one_line_error(result: Result, *expected: str) -> str:
    """The command failed with exactly one line on stderr, no traceback, no password."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fallbackbus: error: "), lines[0]
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]
