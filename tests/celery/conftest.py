"""Fixtures for the Celery tests: private names and databases, so that runs in parallel (and the
machine's own state) never meet.

Each test gets its own Redis key prefix (which also names its Celery queue), its own organization
(so its own RabbitMQ exchange) and, where it needs PostgreSQL, its own schema, selected through the
connection's ``search_path`` and dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, make_url, text

from tests.celery.helpers import PG_URL, REDIS_URL, Names


@pytest.fixture
def names() -> Iterator[Names]:
    token = uuid.uuid4().hex[:12]
    names = Names(prefix=f"fbtest:{token}:", organization=f"fbtest{token}")
    yield names
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # The lists and their bookkeeping, the Celery queue and kombu's bindings of that queue.
        patterns = [f"{names.prefix}*"]
        patterns += [f"_kombu.{kind}.{names.prefix}*" for kind in ("binding", "binding_permanent")]
        for pattern in patterns:
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
    finally:
        client.close()


@pytest.fixture
def sqlite_audit_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def pg_audit_url() -> Iterator[str]:
    """A URL of the local PostgreSQL whose connections all use a fresh, empty schema."""
    schema = f"fallbackbus_celery_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
