"""`fallbackbus dead-letters list|requeue|purge` against the real services."""

from __future__ import annotations

import pytest

from tests.admin.conftest import World
from tests.cli.conftest import Cli, assert_one_line_error, table_rows

pytestmark = pytest.mark.integration


def test_dead_letters_list_shows_each_entry_with_its_index_and_reason(
    cli: Cli, world: World
) -> None:
    parked = world.park(2)

    result = cli("dead-letters", "list")

    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout, world.keys().source)
    assert [(row[1], row[2]) for row in rows] == [("0", parked[1]), ("1", parked[0])]
    assert all(
        row[-1] == f"service {world.organization}.svc is not in the allow-list" for row in rows
    )
    assert f"dead letters in all: {world.keys().source}: 2, {world.keys('commands').source}: 0" in (
        result.stdout
    )


def test_dead_letters_list_as_json_pages_per_list(cli: Cli, world: World) -> None:
    parked = world.park(3)

    [events] = cli.json(
        "dead-letters", "list", "--list", "domain.events", "--limit", "1", "--offset", "1"
    )

    assert (events["list"], events["total"], events["offset"]) == (world.keys().source, 3, 1)
    [entry] = events["entries"]
    assert (entry["index"], entry["message_id"], entry["message_type"]) == (
        1,
        parked[1],
        "user.created",
    )
    assert entry["run_id"]
    assert entry["dead_at"]


def test_dead_letters_requeue_by_index_moves_them_back_and_says_which(
    cli: Cli, world: World
) -> None:
    parked = world.park(3)

    result = cli("dead-letters", "requeue", "--list", "domain.events", "-i", "0", "-i", "2")

    assert result.exit_code == 0, result.output
    assert f"Requeued 2 dead letter(s) of {world.keys().source}" in result.stdout
    assert [row[2] for row in table_rows(result.stdout, world.keys().source)] == [
        parked[2],
        parked[0],
    ]
    assert world.waiting_ids() == [parked[0], parked[2]]
    assert [row.message_id for row in world.outcomes(statuses=["requeued"])] == [
        parked[2],
        parked[0],
    ]


def test_dead_letters_requeue_as_json(cli: Cli, world: World) -> None:
    parked = world.park(2)

    report = cli.json("dead-letters", "requeue", "-l", "domain.events", "--all")

    assert (report["action"], report["list"], report["skipped"]) == (
        "requeued",
        world.keys().source,
        [],
    )
    assert [entry["message_id"] for entry in report["moved"]] == parked[::-1]


def test_purge_asks_first_and_a_no_deletes_nothing(cli: Cli, world: World) -> None:
    world.park(2)

    result = cli("dead-letters", "purge", "--list", "domain.events", "--all", input="n\n")

    assert result.exit_code == 1
    assert f"Delete 2 dead letter(s) of {world.keys().source} for good?" in result.stderr
    assert result.stderr.splitlines()[-1] == "fallbackbus: error: nothing purged"
    assert result.stdout == ""
    assert len(world.redis.lrange(world.keys().dead, 0, -1)) == 2


def test_purge_with_no_answer_at_all_deletes_nothing(cli: Cli, world: World) -> None:
    world.park(1)

    result = cli("dead-letters", "purge", "--list", "domain.events", "--all")

    assert result.exit_code == 1
    assert len(world.redis.lrange(world.keys().dead, 0, -1)) == 1


def test_purge_deletes_once_confirmed_and_audits_each_entry(cli: Cli, world: World) -> None:
    parked = world.park(2)

    result = cli("dead-letters", "purge", "--list", "domain.events", "-m", parked[0], input="y\n")

    assert result.exit_code == 0, result.output
    assert f"Purged 1 dead letter(s) of {world.keys().source}" in result.stdout
    assert [row.message_id for row in world.outcomes(statuses=["purged"])] == [parked[0]]
    assert cli.json("dead-letters", "list", "-l", "domain.events")[0]["total"] == 1


def test_purge_with_yes_does_not_ask(cli: Cli, world: World) -> None:
    world.park(3)

    report = cli.json("dead-letters", "purge", "--list", "domain.events", "--all", "--yes")

    assert len(report["moved"]) == 3
    assert world.redis.llen(world.keys().dead) == 0


def test_purging_an_empty_list_does_not_ask(cli: Cli, world: World) -> None:
    result = cli("dead-letters", "purge", "--list", "domain.events", "--all")

    assert result.exit_code == 0
    assert "nothing to do" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["requeue", "--all"],
            2,
            "name the list with --list (configured: domain.events, commands)",
        ),
        (
            ["requeue", "-l", "domain.events"],
            2,
            "select dead letters by index, by message id, or all",
        ),
        (["requeue", "-l", "domain.events", "-i", "0", "--all"], 2, "exactly one"),
        (["requeue", "-l", "domain.events", "-i", "7"], 1, "has 1 dead letter(s): no index 7"),
        (["requeue", "-l", "domain.events", "-m", "nope"], 1, "has message id nope"),
        (["purge", "-l", "domain.events", "-m", "nope", "--yes"], 1, "has message id nope"),
        (["list", "-l", "no.such.list"], 1, "no list 'no.such.list'"),
        (["purge", "-l", "domain.events", "-i", "x"], 2, "Invalid value for '--index'"),
    ],
)
def test_a_bad_selection_fails_in_one_line_and_changes_nothing(
    cli: Cli, world: World, args: list[str], code: int, message: str
) -> None:
    world.park(1)

    result = cli("dead-letters", *args)

    assert result.exit_code == code
    assert_one_line_error(result, message)
    assert world.redis.llen(world.keys().dead) == 1
    assert world.waiting() == []
