"""Fixtures for the audit tests: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL tests (marked ``integration``) talk to the real server at ``FALLBACKBUS_TEST_PG_URL``
(default: the local ``test`` database). Each test gets its own schema (``private_schema``), so tests
never see each other's rows or touch the real audit tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fallbackbus.audit import AuditQueries, SqlAuditStore
from tests.support.postgres import private_schema


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]
)
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """The URL of an empty database of the parametrized kind."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    with private_schema() as url:
        yield url


@pytest.fixture
def empty_store(db_url: str) -> Iterator[SqlAuditStore]:
    """A store on a database that has no audit tables yet."""
    store = SqlAuditStore(db_url)
    yield store
    # Closed before db_url drops the schema, so no pooled connection outlives its test.
    store.dispose()


@pytest.fixture
def store(empty_store: SqlAuditStore) -> SqlAuditStore:
    """A store whose database is migrated to the head revision."""
    empty_store.upgrade()
    return empty_store


@pytest.fixture
def queries(store: SqlAuditStore) -> AuditQueries:
    return AuditQueries(store)
