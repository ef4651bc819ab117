"""The packaged Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, inspect, table, update

from fallbackbus.audit import SqlAuditStore, alembic_config
from fallbackbus.audit.models import VERSION_TABLE, Base
from fallbackbus.errors import AuditUnavailable

AUDIT_TABLES = {"fallbackbus_runs", "fallbackbus_outcomes"}

# A SQLAlchemy warning here is a bug (an uncached type, a cartesian product): fail on it.
pytestmark = pytest.mark.filterwarnings("error")


def table_names(store: SqlAuditStore) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def test_upgrade_on_an_empty_database_creates_the_audit_tables_at_the_head_revision(
    empty_store: SqlAuditStore,
) -> None:
    assert empty_store.current_revision() is None

    empty_store.upgrade()

    assert table_names(empty_store) == AUDIT_TABLES | {VERSION_TABLE}
    assert empty_store.current_revision() == empty_store.head_revision()


def test_the_migrated_schema_matches_the_models_with_no_differences(store: SqlAuditStore) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_the_migration_creates_every_index_operators_query_by(store: SqlAuditStore) -> None:
    inspector = inspect(store.engine)
    indexed = {
        table: {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
        for table in AUDIT_TABLES
    }

    assert indexed["fallbackbus_runs"] == {("started_at",), ("status",)}
    assert indexed["fallbackbus_outcomes"] == {
        ("recorded_at",),
        ("status", "recorded_at"),
        ("message_type", "recorded_at"),
        ("organization", "service", "recorded_at"),
        ("message_id",),
        ("run_id",),
    }


def test_upgrading_a_database_already_at_head_changes_nothing(store: SqlAuditStore) -> None:
    store.upgrade()

    assert store.current_revision() == store.head_revision()


def test_downgrade_to_base_removes_the_audit_tables(store: SqlAuditStore) -> None:
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")

    assert table_names(store) & AUDIT_TABLES == set()
    assert store.current_revision() is None


def test_ping_succeeds_when_the_schema_is_at_head(store: SqlAuditStore) -> None:
    store.ping()


def test_ping_on_a_database_without_the_schema_says_to_run_db_upgrade(
    empty_store: SqlAuditStore,
) -> None:
    with pytest.raises(
        AuditUnavailable, match=r"no fallbackbus audit tables.*fallbackbus db upgrade"
    ):
        empty_store.ping()


def test_ping_on_a_schema_migrated_by_a_newer_fallbackbus_says_to_upgrade_fallbackbus(
    store: SqlAuditStore,
) -> None:

    with store.engine.begin() as connection:
        connection.execute(
            update(table(VERSION_TABLE, column("version_num"))).values(version_num="ffff")
        )

    with pytest.raises(AuditUnavailable, match=r"unknown to this fallbackbus.*upgrade fallbackbus"):
        store.ping()


def test_the_alembic_version_table_is_private_to_fallbackbus(store: SqlAuditStore) -> None:
    # An application sharing the database keeps its own ``alembic_version`` untouched.
    assert "alembic_version" not in table_names(store)


def test_migrations_refuse_to_run_without_a_connection() -> None:
    with pytest.raises(RuntimeError, match=r"config\.attributes"):
        command.upgrade(alembic_config(), "head")
