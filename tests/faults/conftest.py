"""Fixtures of the fault-injection suite, and the scoreboard printed at the end of the run.

Every scenario of issue 6 carries ``@pytest.mark.scenario(number, title)`` and reports its counts
through the ``score`` fixture; ``pytest_terminal_summary`` prints one table of all of them
(scenario, messages, lost, duplicates, result), which is what the issue's closing note pastes.

Isolation (the fixtures of ``tests/conftest.py``): each test gets its own organization (so its own
exchange), its own Redis key prefix on the shared Redis and its own PostgreSQL schema for the
audit; all are removed afterwards. Outages are made with ``FaultProxy`` between the library and
the shared services, never by touching them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults.helpers import AuditDatabase
from tests.faults.scoreboard import ScenarioRow, table

# -- the scoreboard --------------------------------------------------------------------------


_ROWS = pytest.StashKey[list[ScenarioRow]]()
_ROW = pytest.StashKey[ScenarioRow]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "scenario(number, title): a scenario of the fault-injection issue; its counts appear "
        "in the table printed at the end of the run",
    )
    config.stash[_ROWS] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return
    number, title = marker.args
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        title = f"{title} [{callspec.id}]"
    row = ScenarioRow(number=number, title=title, nodeid=item.nodeid)
    item.stash[_ROW] = row
    item.config.stash[_ROWS].append(row)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield  # type: ignore[misc]
    row = item.stash.get(_ROW, None)
    if row is None:
        return report  # type: ignore[return-value]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row.seconds = time.monotonic() - row.started
        if report.skipped:
            row.result = "skipped"
        else:
            row.result = "passed" if report.passed else "FAILED"
    elif report.when == "teardown" and report.failed:
        row.result = "ERROR (teardown)"
    return report  # type: ignore[return-value]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(_ROWS, [])
    if rows:
        terminalreporter.section("fault-injection scenarios")
        for line in table(rows):
            terminalreporter.write_line(line)


@pytest.fixture
def score(request: pytest.FixtureRequest) -> ScenarioRow:
    """The scoreboard row of this scenario test (it must carry ``@pytest.mark.scenario``)."""
    row = request.node.stash.get(_ROW, None)
    if row is None:
        raise RuntimeError(f"{request.node.nodeid} uses `score` without @pytest.mark.scenario")
    return row


# -- the audit database ----------------------------------------------------------------------


@pytest.fixture
def audit_db(pg_url: str) -> Iterator[AuditDatabase]:
    """The test's own PostgreSQL schema, migrated to head."""
    database = AuditDatabase(pg_url)
    try:
        database.store().upgrade()
        yield database
    finally:
        database.dispose()
