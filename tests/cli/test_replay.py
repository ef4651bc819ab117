"""`fallbackbus replay`: the task's engine, run from the command line."""

from __future__ import annotations

import pytest

from tests.admin.conftest import World, closed_port_url
from tests.cli.conftest import Cli, assert_one_line_error, table_rows
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


def test_replay_republishes_every_list_and_prints_a_row_for_each(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    ids = world.fall_back(4)

    result = cli("replay")
    counter.drain(expected=4)

    assert result.exit_code == 0, result.output
    [events] = table_rows(result.stdout, world.keys().source)
    assert events[1:6] == ["completed", "4", "0", "0", "0"]
    [commands] = table_rows(result.stdout, world.keys("commands").source)
    assert commands[1:3] == ["completed", "0"]
    assert list(counter.ids) == ids
    assert world.waiting() == []


def test_replay_as_json_gives_each_runs_report(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    world.fall_back(3)

    [report] = cli.json("replay", "--list", "domain.events", "--limit", "2")

    assert (report["source_list"], report["status"], report["republished"]) == (
        world.keys().source,
        "completed",
        2,
    )
    assert report["run_id"]
    assert len(world.waiting()) == 1
    [row] = world.outcomes(run_id=report["run_id"], statuses=["republished"])[:1]
    assert row.source_list == world.keys().source


def test_replay_of_a_large_backlog_shows_a_progress_bar(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    world.fall_back(25)

    result = cli("replay", "--list", "domain.events", replay_batch_size="10")

    assert result.exit_code == 0, result.output
    assert "replaying domain.events" in result.stderr
    assert "25/25" in result.stderr
    assert table_rows(result.stdout, world.keys().source)[0][2] == "25"


def test_replay_exits_3_and_keeps_the_backlog_when_rabbitmq_is_unreachable(
    cli: Cli, world: World
) -> None:
    world.fall_back(2)

    result = cli("replay", "--list", "domain.events", rabbitmq_url=closed_port_url("amqp", "//"))

    assert result.exit_code == 3
    assert_one_line_error(result, "replay of", "stopped: RabbitMQ unavailable")
    assert table_rows(result.stdout, world.keys().source)[0][1] == "stopped"
    assert len(world.waiting()) == 2


def test_replay_of_a_list_that_does_not_exist_is_an_empty_run(cli: Cli, world: World) -> None:
    [report] = cli.json("replay", "--list", "events")

    assert (report["source_list"], report["republished"]) == (world.keys("events").source, 0)
