"""Fixtures for the audit tests: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL tests (marked ``integration``) talk to the real server at ``FALLBACKBUS_TEST_PG_URL``
(default: the local ``test`` database). Each test gets its own schema, selected through the
connection's ``search_path`` and dropped afterwards, so tests never see each other's rows or touch
the real audit tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from fallbackbus.audit import AuditQueries, SqlAuditStore

PG_URL = os.environ.get(
    "FALLBACKBUS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the parametrized kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    schema = f"fallbackbus_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # libpq's ``options`` sets search_path on every connection the store opens, so the
        # tables, indexes and Alembic's version table all land in this schema.
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


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
