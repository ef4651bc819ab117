"""A PostgreSQL schema of a test's own, on the machine's server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text

from tests.support.services import PG_URL, unique


@contextmanager
def private_schema(base_url: str = PG_URL) -> Iterator[str]:
    """Create an empty schema, yield a URL whose every connection uses it, then drop it.

    libpq's ``options`` sets ``search_path`` on each connection, so the tables, indexes and
    Alembic's version table all land in this schema and tests never see each other's rows.
    Dispose of every engine on the URL before the block ends: no pooled connection outlives it.
    """
    schema = f"fallbackbus_test_{unique(12)}"
    admin = create_engine(base_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
