"""admin.accounting: fell back = republished + dead-lettered + purged + waiting, and
dead-lettered = parked, per list, organization and service; a mismatch is reported."""

from __future__ import annotations

import threading

import pytest

from fallbackbus import admin
from fallbackbus.admin import Selector, ServiceBalance
from fallbackbus.redis import scripts
from tests.admin.conftest import SERVICE, World
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


def balance_of(world: World, service: str = SERVICE) -> ServiceBalance:
    [balance] = [
        b
        for b in admin.accounting(world.settings())
        if (b.organization, b.service) == (world.organization, service)
    ]
    return balance


def counts(balance: ServiceBalance) -> dict[str, int]:
    names = ("fell_back", "republished", "dead_lettered", "purged", "waiting", "parked")
    return {name: getattr(balance, name) for name in names}


def test_nothing_fallen_back_gives_no_rows(world: World) -> None:
    assert admin.accounting(world.settings()) == []


def test_the_accounting_balances_through_a_fallback_and_replay_cycle(
    world: World, counter: QueueCounter
) -> None:
    world.fall_back(7)
    fallen = balance_of(world)
    world.replay(limit=3)
    halfway = balance_of(world)
    world.replay()
    done = balance_of(world)
    counter.drain(expected=7)

    assert counts(fallen) == {**dict.fromkeys(counts(fallen), 0), "fell_back": 7, "waiting": 7}
    assert (halfway.fell_back, halfway.republished, halfway.waiting) == (7, 3, 4)
    assert (done.fell_back, done.republished, done.waiting) == (7, 7, 0)
    assert all(b.balanced and b.consistent for b in (fallen, halfway, done))
    assert counter.received == 7


def test_entries_claimed_by_an_unfinished_run_count_as_waiting(world: World) -> None:
    world.fall_back(4)
    keys = world.keys()
    claim = world.redis.register_script(scripts.CLAIM)
    claim(keys=[keys.source, keys.processing("crashed"), keys.leases], args=[3, "crashed", 300])

    balance = balance_of(world)

    assert (balance.fell_back, balance.waiting, balance.difference) == (4, 4, 0)
    assert balance.balanced


def test_the_accounting_balances_after_a_requeue_and_after_a_purge(
    world: World, counter: QueueCounter
) -> None:
    ids = world.park(4)
    parked = balance_of(world)
    admin.requeue(
        "domain.events", Selector(message_ids=(ids[0], ids[1])), settings=world.settings()
    )
    requeued = balance_of(world)
    admin.purge(
        "domain.events", Selector(all_entries=True), confirm=True, settings=world.settings()
    )
    purged = balance_of(world)
    world.replay()
    replayed = balance_of(world)

    assert (parked.fell_back, parked.dead_lettered, parked.parked, parked.waiting) == (4, 4, 4, 0)
    assert (requeued.dead_lettered, requeued.parked, requeued.waiting) == (2, 2, 2)
    assert requeued.requeued == 2
    assert (purged.dead_lettered, purged.purged, purged.parked, purged.waiting) == (0, 2, 0, 2)
    assert (replayed.republished, replayed.purged, replayed.waiting) == (2, 2, 0)
    assert all(b.balanced for b in (parked, requeued, purged, replayed))
    assert replayed.fell_back == 4


def test_petisco_entries_are_uncounted_until_replay_moves_them(
    world: World, counter: QueueCounter
) -> None:
    world.push_raw(world.petisco_entry("p-1"), world.petisco_entry("p-2"))
    before = balance_of(world)
    world.replay()
    after = balance_of(world)

    assert (before.fell_back, before.waiting, before.uncounted) == (0, 0, 2)
    assert (after.fell_back, after.republished, after.uncounted) == (2, 2, 0)
    assert before.balanced
    assert after.balanced


def test_a_requeued_petisco_poison_entry_is_counted_once(world: World) -> None:
    world.push_raw(world.poison_entry())
    world.replay()
    parked = balance_of(world)
    admin.requeue("domain.events", Selector(all_entries=True), settings=world.settings())
    requeued = balance_of(world)
    world.replay()
    parked_again = balance_of(world)

    assert (parked.fell_back, parked.dead_lettered) == (1, 1)
    assert (requeued.fell_back, requeued.dead_lettered, requeued.uncounted) == (0, 0, 1)
    assert (parked_again.fell_back, parked_again.dead_lettered, parked_again.parked) == (1, 1, 1)
    assert all(b.balanced for b in (parked, requeued, parked_again))


def test_an_entry_deleted_by_hand_is_reported_missing(world: World) -> None:
    world.fall_back(3)
    world.redis.rpop(world.keys().source)

    balance = balance_of(world)

    assert (balance.fell_back, balance.waiting, balance.difference) == (3, 2, 1)
    assert not balance.balanced


def test_a_dead_letter_pushed_by_hand_is_reported_until_it_is_purged(world: World) -> None:
    world.park(1)
    world.redis.lpush(world.keys().dead, world.petisco_entry("by-hand"))
    with_it = balance_of(world)
    admin.purge("domain.events", Selector(indexes=(0,)), confirm=True, settings=world.settings())
    without_it = balance_of(world)

    assert (with_it.dead_lettered, with_it.parked, with_it.difference) == (1, 2, 0)
    assert not with_it.balanced
    assert (without_it.dead_lettered, without_it.parked, without_it.purged) == (1, 1, 0)
    assert without_it.balanced


def test_each_service_of_each_list_is_accounted_separately(world: World) -> None:
    world.fall_back(2, service="billing")
    world.fall_back(1, service="shipping")
    world.redis.rpop(world.keys().source)  # the oldest: one of billing's

    billing, shipping = balance_of(world, "billing"), balance_of(world, "shipping")

    assert (billing.fell_back, billing.waiting, billing.balanced) == (2, 1, False)
    assert (shipping.fell_back, shipping.waiting, shipping.balanced) == (1, 1, True)
    assert billing.list_key == shipping.list_key == world.keys().source


@pytest.mark.slow
def test_the_accounting_never_reports_a_false_mismatch_while_replay_runs(
    world: World, counter: QueueCounter
) -> None:
    world.fall_back(2000)
    replaying = threading.Thread(target=world.replay, kwargs={"replay_batch_size": 20})
    readings: list[ServiceBalance] = []

    replaying.start()
    while replaying.is_alive():
        readings.append(balance_of(world))
    replaying.join()
    readings.append(balance_of(world))

    consistent = [b for b in readings if b.consistent]
    assert len(consistent) >= 2
    assert all(b.balanced for b in consistent), [b.as_dict() for b in consistent if not b.balanced]
    assert (readings[-1].republished, readings[-1].waiting) == (2000, 0)
