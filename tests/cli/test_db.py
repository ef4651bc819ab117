"""`fallbackbus db upgrade` on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import make_url

from fallbackbus.audit import SqlAuditStore
from tests.admin.conftest import PASSWORD, World
from tests.cli.conftest import Cli, table_rows
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


def test_db_upgrade_creates_the_audit_tables_then_changes_nothing(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'audit.db'}"
    head = SqlAuditStore(url).head_revision()

    first = cli("--db-url", url, "db", "upgrade")
    again = cli.json("--db-url", url, "db", "upgrade")

    assert first.exit_code == 0, first.output
    assert table_rows(first.stdout, url) == [[url, "-", head]]
    assert again == {"url": url, "before": head, "after": head}


def test_the_commands_work_on_postgresql_and_never_print_its_password(
    cli: Cli, world: World, counter: QueueCounter, pg_url: str
) -> None:
    # Trust authentication ignores the password, so it can be given and must never be shown.
    url = make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    world.fall_back(2)

    upgrade = cli("--db-url", url, "db", "upgrade")
    replay = cli("--db-url", url, "replay", "--list", "domain.events")
    rows = cli.json("--db-url", url, "audit", "list")
    status = cli.json("--db-url", url, "status")

    assert (upgrade.exit_code, replay.exit_code) == (0, 0)
    assert "postgresql+psycopg://postgres:***@127.0.0.1:5432/test" in upgrade.stdout
    assert [row["status"] for row in rows] == ["republished", "republished"]
    assert status["audit"]["schema_current"] is True
    assert status["audit"]["url"].startswith("postgresql+psycopg://postgres:***@")
    for output in (upgrade.output, replay.output, str(rows), str(status)):
        assert PASSWORD not in output
