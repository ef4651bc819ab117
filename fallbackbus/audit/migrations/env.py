"""Alembic environment for the audit tables, run from code, never from an ``alembic.ini``.

:func:`fallbackbus.audit.store.alembic_config` puts an open connection in
``config.attributes["connection"]``; the migration runs inside that connection's transaction, so
the caller decides when it commits. A new revision is made the same way, e.g.::

    with engine.begin() as connection:
        alembic.command.revision(alembic_config(connection), "what changed", autogenerate=True)
"""

from __future__ import annotations

from alembic import context
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy.engine import Connection

from fallbackbus.audit.models import VERSION_TABLE, Base


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    # The audit tables usually share a database with an application's own tables: autogenerate
    # must never propose to drop those.
    return type_ != "table" or name in Base.metadata.tables


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "fallbackbus migrations run from code: pass a connection in "
        'config.attributes["connection"] (see fallbackbus.audit.store.alembic_config)'
    )
run_migrations(connection)
