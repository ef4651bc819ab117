"""`fallbackbus audit list|show|summary`: filters, pages, formats and bad input."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from tests.admin.conftest import World, closed_port_url
from tests.cli.conftest import Cli, assert_one_line_error, table_rows
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


@pytest.fixture
def history(world: World, counter: QueueCounter) -> dict[str, list[str]]:
    """Two parked events, then three republished: five audit rows in two runs."""
    parked = world.park(2)
    republished = world.fall_back(3)
    world.replay()
    return {"dead_lettered": parked, "republished": republished}


def test_audit_list_prints_the_newest_rows_first(
    cli: Cli, world: World, history: dict[str, list[str]]
) -> None:
    result = cli("audit", "list")

    assert result.exit_code == 0, result.output
    rows = [row for row in result.stdout.splitlines() if world.organization in row]
    assert len(rows) == 5
    assert all("republished" in row for row in rows[:3])
    assert all("dead_lettered" in row and "not in the allow-list" in row for row in rows[3:])
    assert "Recorded (UTC)" in result.stdout


def test_audit_list_filters_by_status_type_service_and_message_id(
    cli: Cli, world: World, history: dict[str, list[str]]
) -> None:
    by_status = cli.json("audit", "list", "--status", "dead_lettered")
    by_both = cli.json("audit", "list", "-s", "dead_lettered", "-s", "republished")
    by_type = cli.json(
        "audit", "list", "--type", "user.created", "--organization", world.organization
    )
    by_service = cli.json("audit", "list", "--service", "other")
    one_id = history["republished"][1]
    by_id = cli.json("audit", "list", "--message-id", one_id)

    assert sorted(row["message_id"] for row in by_status) == sorted(history["dead_lettered"])
    assert len(by_both) == len(by_type) == 5
    assert by_service == []
    assert [(row["message_id"], row["status"]) for row in by_id] == [(one_id, "republished")]
    assert by_id[0]["routing_key"] == f"{world.organization}.svc.1.event.user_created"


def test_audit_list_filters_by_run_and_pages(
    cli: Cli, world: World, history: dict[str, list[str]]
) -> None:
    run_id = cli.json("audit", "list", "--limit", "1")[0]["run_id"]

    in_run = cli.json("audit", "list", "--run-id", run_id, "--oldest-first")
    page = cli.json("audit", "list", "--limit", "2", "--offset", "1")
    table = cli("audit", "list", "--limit", "2")

    assert [row["message_id"] for row in in_run] == history["republished"]
    assert len(page) == 2
    assert "rows 1-2; --offset 2 for more" in table.stdout


def test_audit_list_takes_ages_and_iso_times_as_time_filters(
    cli: Cli, history: dict[str, list[str]]
) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    assert len(cli.json("audit", "list", "--since", "1h")) == 5
    assert len(cli.json("audit", "list", "--since", "2026-01-01T00:00:00+00:00")) == 5
    assert len(cli.json("audit", "list", "--until", tomorrow)) == 5
    assert cli.json("audit", "list", "--since", tomorrow) == []
    assert cli.json("audit", "list", "--until", "1h") == []


def test_audit_list_as_csv_has_a_header_and_one_line_per_row(
    cli: Cli, history: dict[str, list[str]]
) -> None:
    result = cli("audit", "list", "--format", "csv")

    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5
    assert list(rows[0]) == [
        "recorded_at",
        "status",
        "message_id",
        "message_type",
        "organization",
        "service",
        "source_list",
        "attempts",
        "run_id",
        "reason",
    ]
    assert {row["status"] for row in rows} == {"republished", "dead_lettered"}


def test_audit_show_tells_the_story_of_one_message(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    [parked] = world.park(1)
    cli("dead-letters", "requeue", "--list", "domain.events", "--all")
    world.replay()

    result = cli("audit", "show", parked)
    story = cli.json("audit", "show", parked)

    assert result.exit_code == 0
    assert f"Message {parked}" in result.stdout
    assert [row["status"] for row in story] == ["dead_lettered", "requeued", "republished"]
    assert story[1]["run_id"] is None


def test_audit_summary_counts_by_type_and_status_and_lists_the_runs(
    cli: Cli, world: World, history: dict[str, list[str]]
) -> None:
    result = cli("audit", "summary")
    summary = cli.json("audit", "summary", "--since", "1d")

    assert result.exit_code == 0
    assert table_rows(result.stdout, "user.created") == [
        ["user.created", "dead_lettered", "2"],
        ["user.created", "republished", "3"],
    ]
    assert summary["by_status"] == {
        "republished": 3,
        "dead_lettered": 2,
        "returned": 0,
        "requeued": 0,
        "purged": 0,
    }
    runs = [
        (r["source_list"], r["status"], r["republished"], r["dead_lettered"])
        for r in summary["runs"]
    ]
    assert runs == [  # newest first
        (world.keys().source, "completed", 3, 0),
        (world.keys().source, "completed", 0, 2),
    ]
    run_lines = [line for line in result.stdout.splitlines() if "completed" in line]
    assert len(run_lines) == 2
    assert all(world.keys().source in line for line in run_lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "bogus"], "unknown status 'bogus'; valid statuses: republished"),
        (["--type", "no.such.type"], "unknown message type 'no.such.type'; types in the audit"),
        (["--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["--until", "2026-13-45"], "--until '2026-13-45' is not a time"),
        (["--since", "1h", "--until", "2h"], "must be before --until"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_bad_audit_filters_exit_2_with_one_line(
    cli: Cli, history: dict[str, list[str]], args: list[str], message: str
) -> None:
    result = cli("audit", "list", *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert_one_line_error(result, message)


def test_an_unknown_message_id_exits_1(cli: Cli, history: dict[str, list[str]]) -> None:
    result = cli("audit", "show", "no-such-message")

    assert result.exit_code == 1
    assert_one_line_error(result, "no audit row for message id 'no-such-message'")


def test_an_audit_database_without_tables_asks_for_an_upgrade(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fresh = f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'audit.db'}"

    result = cli("--db-url", fresh, "audit", "summary")

    assert result.exit_code == 3
    assert_one_line_error(result, "has no fallbackbus audit tables; run `fallbackbus db upgrade`")


@pytest.mark.parametrize(
    "command", [["audit", "list"], ["audit", "show", "x"], ["audit", "summary"]]
)
def test_an_unreachable_audit_database_exits_3_without_its_password(
    cli: Cli, command: list[str]
) -> None:
    result = cli("--db-url", closed_port_url("postgresql+psycopg", "/test"), *command)

    assert result.exit_code == 3
    assert_one_line_error(result, "audit database postgresql+psycopg://user:***@127.0.0.1:")
