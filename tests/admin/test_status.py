"""admin.status says what waits where, how old it is, and whether each service answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fallbackbus import admin
from fallbackbus.redis import scripts
from tests.admin.conftest import EVENTS, PASSWORD, World, closed_port_url

pytestmark = pytest.mark.integration


def test_status_counts_the_waiting_and_parked_entries_of_each_configured_list(
    world: World,
) -> None:
    world.park(2)
    world.fall_back(3)

    result = admin.status(world.settings())

    by_name = {item.name: item for item in result.lists}
    assert set(by_name) == {"domain.events", "commands"}
    events = by_name[EVENTS]
    assert (events.key, events.length, events.dead_letters) == (world.keys().source, 3, 2)
    assert events.processing == ()
    assert (by_name["commands"].length, by_name["commands"].dead_letters) == (0, 0)


def test_status_gives_the_age_of_the_oldest_waiting_entry(world: World) -> None:
    before = datetime.now(UTC)
    world.fall_back(2)

    events = admin.status(world.settings()).lists[0]

    assert events.oldest_stored_at is not None
    assert before <= events.oldest_stored_at <= datetime.now(UTC)
    assert events.oldest_age_seconds is not None
    assert 0 <= events.oldest_age_seconds < 30


def test_status_has_no_age_for_an_empty_list_or_a_petisco_entry(world: World) -> None:
    empty = admin.status(world.settings()).lists[0]
    world.push_raw(world.petisco_entry("p-1"))
    petisco = admin.status(world.settings()).lists[0]

    assert (empty.length, empty.oldest_age_seconds) == (0, None)
    assert (petisco.length, petisco.oldest_age_seconds) == (1, None)


def test_status_shows_a_claimed_batch_with_its_run_age_and_lease(world: World) -> None:
    world.fall_back(5)
    keys = world.keys()
    claim = world.redis.register_script(scripts.CLAIM)
    claim(keys=[keys.source, keys.processing("run-1"), keys.leases], args=[2, "run-1", 300])

    events = admin.status(world.settings(replay_lease_seconds=300)).lists[0]

    assert events.length == 3
    [processing] = events.processing
    assert (processing.key, processing.run_id, processing.length) == (
        keys.processing("run-1"),
        "run-1",
        2,
    )
    assert processing.age_seconds is not None
    assert 0 <= processing.age_seconds < 30
    assert processing.expires_in_seconds is not None
    assert 270 < processing.expires_in_seconds <= 300


def test_status_reports_every_service_reachable_with_the_schema_current(world: World) -> None:
    result = admin.status(world.settings())

    assert result.redis.reachable
    assert result.rabbitmq.reachable
    assert result.audit.reachable
    assert result.audit.schema_current
    assert result.redis_persistence in (True, False, None)
    assert result.problems == []
    assert ":***@" in result.rabbitmq.url


def test_status_names_each_unreachable_service_without_its_password(world: World) -> None:
    settings = world.settings(
        redis_url=closed_port_url("redis", "/0"),
        rabbitmq_url=closed_port_url("amqp", "//"),
        audit_db_url=closed_port_url("postgresql+psycopg", "/test"),
    )

    result = admin.status(settings)

    assert not result.redis.reachable
    assert not result.rabbitmq.reachable
    assert not result.audit.reachable
    assert result.lists == ()
    assert len(result.problems) == 3
    for problem in result.problems:
        assert PASSWORD not in problem
        assert "unreachable" in problem
        assert ":***@" in problem


def test_status_says_an_audit_database_without_tables_needs_an_upgrade(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fresh = f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'audit.db'}"

    result = admin.status(world.settings(audit_db_url=fresh))

    assert result.audit.reachable
    assert result.audit.revision is None
    assert not result.audit.schema_current
    assert result.problems == [
        f"audit database at {fresh} has schema none, needs {result.audit.head}: "
        "run `fallbackbus db upgrade`"
    ]
