"""Fixtures of the fault-injection suite, and the scoreboard printed at the end of the run.

Every scenario of issue 6 carries ``@pytest.mark.scenario(number, title)`` and reports its counts
through the ``score`` fixture; ``pytest_terminal_summary`` prints one table of all of them
(scenario, messages, lost, duplicates, result), which is what the issue's closing note pastes.

Isolation: each test gets its own organization (so its own exchange), its own Redis key prefix on
the shared Redis and its own PostgreSQL schema for the audit; all are removed afterwards. Outages
are made with ``FaultProxy`` between the library and the shared services, never by touching them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import kombu
import pytest
import redis
from sqlalchemy import create_engine, text

from fallbackbus.redis import redis_from_url
from tests.faults.helpers import AMQP_URL, PG_URL, REDIS_URL, AuditDatabase, Names
from tests.faults.scoreboard import ScenarioRow, table
from tests.support.consumer import QueueCounter
from tests.support.faultproxy import FaultProxy

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


# -- isolation: names, Redis keys, exchanges ------------------------------------------------


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    """The machine's Redis, through the library's bounded client."""
    client = redis_from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def names(shared_redis: redis.Redis) -> Iterator[Names]:
    token = uuid.uuid4().hex[:10]
    made = Names(organization=f"faults{token}", service="svc", prefix=f"faults:{token}:")
    yield made
    for key in shared_redis.scan_iter(match=f"{made.prefix}*", count=1000):
        shared_redis.delete(key)


@pytest.fixture
def counter_for() -> Iterator[Callable[[str], QueueCounter]]:
    """Factory: a QueueCounter bound (with ``#``) to an exchange; the exchange is deleted after."""
    made: list[QueueCounter] = []

    def make(exchange: str) -> QueueCounter:
        counter = QueueCounter(exchange, AMQP_URL)
        made.append(counter)
        return counter

    yield make
    for counter in made:
        counter.close()
    with kombu.Connection(AMQP_URL) as connection:
        for counter in made:
            counter.exchange(connection.default_channel).delete()


@pytest.fixture
def counter(names: Names, counter_for: Callable[[str], QueueCounter]) -> QueueCounter:
    """Counts what reaches this test's exchange; bound before anything is published."""
    return counter_for(names.exchange)


# -- proxies ---------------------------------------------------------------------------------


@pytest.fixture
def rabbit_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        yield proxy


# -- the audit database ----------------------------------------------------------------------


@pytest.fixture
def audit_db() -> Iterator[AuditDatabase]:
    schema = f"faults_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = AuditDatabase(schema)
    try:
        database.store().upgrade()
        yield database
    finally:
        database.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
