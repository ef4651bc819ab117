"""`fallbackbus status` and `fallbackbus accounting` against the real services."""

from __future__ import annotations

import pytest

from fallbackbus.redis import scripts
from tests.admin.conftest import World, closed_port_url
from tests.cli.conftest import Cli, assert_one_line_error, table_rows
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


def test_status_prints_each_list_and_each_service_as_a_table(cli: Cli, world: World) -> None:
    world.park(1)
    world.fall_back(2)

    result = cli("status")

    assert result.exit_code == 0, result.output
    [events] = table_rows(result.stdout, "domain.events")
    assert events[:3] == ["domain.events", "2", "0"]  # waiting, processing
    assert events[3].endswith("s")  # the oldest entry's age, e.g. "0s"
    assert events[4] == "1"  # dead letters
    assert table_rows(result.stdout, "commands") == [["commands", "0", "0", "-", "0"]]
    for service in ("Redis", "RabbitMQ", "audit database"):
        [row] = table_rows(result.stdout, service)
        assert "ok" in row, row
    assert "amqp://guest:***@127.0.0.1:5672//" in result.stdout
    assert result.stderr == ""


def test_status_shows_the_batches_claimed_by_an_unfinished_run(cli: Cli, world: World) -> None:
    world.fall_back(3)
    keys = world.keys()
    claim = world.redis.register_script(scripts.CLAIM)
    claim(keys=[keys.source, keys.processing("run-7"), keys.leases], args=[2, "run-7", 300])

    result = cli("status", replay_lease_seconds="300")

    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout, "domain.events")[0][1:3] == ["1", "2"]
    [claimed] = table_rows(result.stdout, "domain.events")[1:]
    assert claimed[1:3] == ["run-7", "2"]
    assert claimed[3].endswith("s ago")
    assert claimed[4].startswith("in 4m")
    [events] = cli.json("status")["lists"][:1]
    assert [(p["run_id"], p["length"]) for p in events["processing_lists"]] == [("run-7", 2)]


def test_status_as_json_has_every_list_and_service(cli: Cli, world: World) -> None:
    world.fall_back(3)

    status = cli.json("status")

    events = status["lists"][0]
    assert (events["list"], events["key"], events["waiting"]) == (
        "domain.events",
        world.keys().source,
        3,
    )
    assert events["oldest_age_seconds"] >= 0
    assert events["processing_lists"] == []
    assert status["rabbitmq"]["reachable"] is True
    assert status["redis"]["persistence"] in (True, False, None)
    assert status["audit"]["schema_current"] is True
    assert status["problems"] == []


def test_status_exits_3_naming_an_unreachable_rabbitmq_without_its_password(
    cli: Cli, world: World
) -> None:
    result = cli("status", rabbitmq_url=closed_port_url("amqp", "//"))

    assert result.exit_code == 3
    assert_one_line_error(result, "RabbitMQ at amqp://user:***@127.0.0.1:", "unreachable")
    [rabbitmq] = table_rows(result.stdout, "RabbitMQ")
    assert "UNREACHABLE" in rabbitmq


def test_accounting_balances_after_a_fallback_and_replay_cycle(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    world.fall_back(5)
    before = cli("accounting")
    replayed = cli("replay")
    after = cli("accounting")

    assert (before.exit_code, replayed.exit_code, after.exit_code) == (0, 0, 0)
    source, org = world.keys().source, world.organization
    header = ["Fell back", "Republished", "Dead-lettered", "Purged", "Waiting", "Parked"]
    assert all(name in before.stdout for name in header)
    assert table_rows(before.stdout, source) == [
        [source, org, "svc", "5", "0", "0", "0", "5", "0", "0", "0", "yes"]
    ]
    assert table_rows(after.stdout, source) == [
        [source, org, "svc", "5", "5", "0", "0", "0", "0", "0", "0", "yes"]
    ]
    [balance] = cli.json("accounting")
    assert balance == {
        "list_key": source,
        "organization": org,
        "service": "svc",
        "fell_back": 5,
        "republished": 5,
        "dead_lettered": 0,
        "purged": 0,
        "requeued": 0,
        "waiting": 0,
        "parked": 0,
        "uncounted": 0,
        "consistent": True,
        "accounted": 5,
        "difference": 0,
        "balanced": True,
    }


def test_accounting_balances_after_a_requeue_and_after_a_purge(
    cli: Cli, world: World, counter: QueueCounter
) -> None:
    parked = world.park(3)

    requeue = cli("dead-letters", "requeue", "--list", "domain.events", "-m", parked[0])
    after_requeue = cli.json("accounting")
    purge = cli("dead-letters", "purge", "--list", "domain.events", "--all", "--yes")
    after_purge = cli.json("accounting")
    replay = cli("replay", "--list", "domain.events")
    after_replay = cli.json("accounting")

    assert (requeue.exit_code, purge.exit_code, replay.exit_code) == (0, 0, 0)
    fields = ("fell_back", "republished", "dead_lettered", "purged", "waiting", "parked")
    assert [tuple(b[f] for f in fields) for b in after_requeue] == [(3, 0, 2, 0, 1, 2)]
    assert [tuple(b[f] for f in fields) for b in after_purge] == [(3, 0, 0, 2, 1, 0)]
    assert [tuple(b[f] for f in fields) for b in after_replay] == [(3, 1, 0, 2, 0, 0)]
    assert all(b["balanced"] for b in [*after_requeue, *after_purge, *after_replay])
    assert cli("accounting").exit_code == 0


def test_accounting_exits_1_when_an_entry_went_missing(cli: Cli, world: World) -> None:
    world.fall_back(3)
    world.redis.rpop(world.keys().source)

    result = cli("accounting")

    assert result.exit_code == 1
    assert_one_line_error(
        result,
        f"accounting does not balance for {world.organization}/svc",
        "1 fell back but unaccounted for",
    )
    [row] = table_rows(result.stdout, world.keys().source)
    assert row[-2:] == ["1", "NO"]


def test_accounting_with_nothing_fallen_back_says_so(cli: Cli) -> None:
    result = cli("accounting")

    assert result.exit_code == 0
    assert result.stdout.strip() == "Accounting: nothing has fallen back"
    assert cli.json("accounting") == []
