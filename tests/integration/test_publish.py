"""Publishing against the real RabbitMQ and Redis on this machine.

Every outage is made with a TCP proxy (or a listener that never answers) that the test controls;
the shared services are never stopped. Each test uses its own organization (so its own exchange)
and its own Redis key prefix, and deletes both afterwards (the fixtures of ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import pytest
import redis

from fallbackbus import (
    BusCannotPublish,
    Command,
    DomainEvent,
    RabbitMqCommandBus,
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisCommandBus,
    RedisDomainEventBus,
)
from fallbackbus.redis import store as redis_store
from fallbackbus.testing.faultproxy import FaultProxy
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter, rejecting_queue
from tests.support.servers import HungListener, PrivateRedis
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names, delete_exchange

pytestmark = pytest.mark.integration

SERVICE = "petisco"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

BusFactory = Callable[..., RabbitMqDomainEventBus]


class UserCreated(DomainEvent):
    user_id: str
    name: str = "Ada"


class OrderPlaced(DomainEvent):
    order_id: str


class UserDeleted(DomainEvent):
    user_id: str


class CreateUser(Command):
    user_id: str


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def service() -> str:
    """Every bus of these tests publishes as petisco's own service would: to ``{org}.petisco``."""
    return SERVICE


@pytest.fixture
def connectors() -> Iterator[list[RabbitMqConnector]]:
    """Connectors made by a test, closed at its end."""
    made: list[RabbitMqConnector] = []
    yield made
    for connector in made:
        connector.close()


@pytest.fixture
def make_bus(
    names: Names, redis_client: redis.Redis, connectors: list[RabbitMqConnector]
) -> BusFactory:
    """Build a RabbitMQ event bus for this test, falling back to its own Redis list."""

    def build(url: str = RABBITMQ_URL, **connector_options: Any) -> RabbitMqDomainEventBus:
        connector = RabbitMqConnector(url, **connector_options)
        connectors.append(connector)
        org = names.organization
        fallback = RedisDomainEventBus(org, SERVICE, redis_client, key_prefix=names.prefix)
        return RabbitMqDomainEventBus(org, SERVICE, connector, fallback=fallback)

    return build


def stored(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """The fallback entries of one list, oldest first."""
    return [json.loads(raw) for raw in reversed(client.lrange(key, 0, -1))]


def stored_ids(client: redis.Redis, key: str) -> Counter[str]:
    return Counter(entry["message"]["data"]["id"] for entry in stored(client, key))


def petisco_body(message: DomainEvent | Command, attributes: dict[str, Any]) -> bytes:
    """The body petisco writes for ``message``, spelled out independently of fallbackbus."""
    return json.dumps(
        {
            "data": {
                "id": message.message_id,
                "type": message.message_name(),
                "type_message": message.message_kind,
                "version": 1,
                "occurred_on": message.occurred_on.strftime(TIME_FORMAT),
                "attributes": attributes,
                "meta": {},
            }
        }
    ).encode()


@pytest.fixture
def orders_nacked(names: Names) -> Iterator[None]:
    """RabbitMQ nacks every ``order_placed`` event of this test's exchange."""
    with rejecting_queue(names.exchange, f"{names.exchange}.1.event.order_placed"):
        yield


def exit_code_of_forked_child(action: Callable[[], None]) -> int:
    """Fork; the child runs ``action`` and reports only through its exit status (it never returns
    into pytest); the parent waits for it."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            action()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


# -- arriving at RabbitMQ -------------------------------------------------------------------------


def test_a_published_event_arrives_with_the_petisco_routing_key_body_and_amqp_properties(
    make_bus: BusFactory,
    counter: QueueCounter,
    organization: str,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    bus = make_bus()
    event = UserCreated(user_id="1", name="Ada")

    bus.publish(event)
    counter.drain(1, timeout=5)

    [(routing_key, body, properties, headers)] = counter.messages
    assert routing_key == f"{organization}.petisco.1.event.user_created"
    assert body == petisco_body(event, {"user_id": "1", "name": "Ada"})
    assert properties["delivery_mode"] == 2
    assert properties["content_type"] == "application/json"
    assert properties["message_id"] == event.message_id
    assert properties["type"] == "user.created"
    assert properties["timestamp"] == int(event.occurred_on.replace(tzinfo=UTC).timestamp())
    assert headers == {}
    assert redis_client.llen(f"{key_prefix}domain.events") == 0


def test_given_a_cluster_url_list_whose_first_node_is_down_publishes_reach_the_next_node(
    make_bus: BusFactory,
    counter: QueueCounter,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    # Given FALLBACKBUS_RABBITMQ_URL-style list: a node that refuses, then the real broker
    with FaultProxy("127.0.0.1", 5672) as down:
        down.refuse()
        bus = make_bus(f"{down.url_for(RABBITMQ_URL)};{RABBITMQ_URL}", connect_timeout=2.0)
        events = [UserCreated(user_id=str(i), name="Ada") for i in range(3)]

        # When a batch is published
        bus.publish(events)
        counter.drain(len(events), timeout=5)

    # Then every event reached RabbitMQ through the second node, and none fell back
    assert sorted(counter.ids) == sorted(e.message_id for e in events)
    assert redis_client.llen(f"{key_prefix}domain.events") == 0


def test_a_dispatched_command_arrives_with_the_command_routing_key_and_body(
    organization: str,
    counter: QueueCounter,
    redis_client: redis.Redis,
    key_prefix: str,
    connectors: list[RabbitMqConnector],
) -> None:
    connector = RabbitMqConnector(RABBITMQ_URL)
    connectors.append(connector)
    fallback = RedisCommandBus(organization, SERVICE, redis_client, key_prefix=key_prefix)
    bus = RabbitMqCommandBus(organization, SERVICE, connector, fallback=fallback)
    command = CreateUser(user_id="7")

    bus.dispatch(command)
    counter.drain(1, timeout=5)

    [(routing_key, body, properties, _)] = counter.messages
    assert routing_key == f"{organization}.petisco.1.command.create_user"
    assert body == petisco_body(command, {"user_id": "7"})
    assert json.loads(body)["data"]["type_message"] == "command"
    assert properties["delivery_mode"] == 2
    assert properties["message_id"] == command.message_id
    assert properties["type"] == "create.user"
    assert redis_client.llen(f"{key_prefix}commands") == 0


def test_an_unroutable_message_goes_to_redis_with_its_reason_and_a_routable_one_does_not(
    make_bus: BusFactory, organization: str, redis_client: redis.Redis, key_prefix: str
) -> None:
    bus = make_bus()
    routable = UserCreated(user_id="1")
    unroutable = OrderPlaced(order_id="o-1")

    with QueueCounter(
        f"{organization}.{SERVICE}", routing_key=f"{organization}.petisco.1.event.user_created"
    ) as only_users:
        bus.publish([routable, unroutable])
        only_users.drain(1, timeout=5)

    assert only_users.ids == Counter({routable.message_id: 1})
    [entry] = stored(redis_client, f"{key_prefix}domain.events")
    assert entry["organization"] == organization
    assert entry["service"] == SERVICE
    assert entry["message"] == json.loads(unroutable.format_json())
    assert entry["reason"].startswith("returned as unroutable by RabbitMQ")
    assert "NO_ROUTE" in entry["reason"]
    assert entry["attempts"] == 0
    stats = redis_client.hgetall(f"{key_prefix}domain.events:stats")
    assert stats == {f"{organization}|petisco|fell_back".encode(): b"1"}


@pytest.mark.usefixtures("orders_nacked")
def test_every_nacked_message_of_a_batch_is_in_redis_exactly_once_and_no_acked_one_is(
    make_bus: BusFactory,
    counter: QueueCounter,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    bus = make_bus()
    orders = [OrderPlaced(order_id=str(i)) for i in range(100)]
    users = [UserCreated(user_id=str(i)) for i in range(100)]
    batch = [message for pair in zip(orders, users, strict=True) for message in pair]

    bus.publish(batch)

    in_redis = stored_ids(redis_client, f"{key_prefix}domain.events")
    assert set(in_redis) == {o.message_id for o in orders}
    assert set(in_redis.values()) == {1}
    reasons = {e["reason"] for e in stored(redis_client, f"{key_prefix}domain.events")}
    assert reasons == {"nacked by RabbitMQ"}
    counter.drain(len(batch), timeout=5)
    assert {u.message_id for u in users} <= set(counter.ids)


# -- outages ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_broker_cut_mid_batch_leaves_every_message_confirmed_or_in_redis(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    batch = [UserCreated(user_id=str(i)) for i in range(5000)]
    with FaultProxy("127.0.0.1", 5672) as proxy:
        bus = make_bus(proxy.url_for(RABBITMQ_URL), connect_timeout=1, breaker_cooldown=60)
        proxy.set_latency(0.005)  # slow the link so that the cut lands while confirms are due
        cut_after: list[int] = []

        def cut_once_messages_flow() -> None:
            counter.drain(500, timeout=10)
            cut_after.append(counter.received)
            proxy.cut()

        cutter = threading.Thread(target=cut_once_messages_flow)
        cutter.start()
        bus.publish(batch)
        cutter.join()

    counter.drain(None, timeout=10, idle=0.5)
    ledger = Ledger(m.message_id for m in batch)
    ledger.add_received(counter.ids)
    ledger.add_fallback(redis_client, f"{key_prefix}domain.events")
    print(f"\ncut after {cut_after} deliveries\n{ledger.summary()}")
    ledger.assert_nothing_lost(allow_duplicates=True)
    assert ledger.unexpected() == []
    assert ledger.malformed_fallback == []
    assert ledger.received, "the cut came before anything was delivered: not mid-batch"
    assert ledger.fallback, "the cut came after the batch was confirmed: not mid-batch"
    assert max(ledger.fallback.values()) == 1, "a message was sent to the fallback twice"


def test_rabbitmq_and_redis_both_down_raises_bus_cannot_publish_naming_both_without_password(
    organization: str, caplog: pytest.LogCaptureFixture, connectors: list[RabbitMqConnector]
) -> None:
    with FaultProxy("127.0.0.1", 5672) as rabbit, FaultProxy("127.0.0.1", 6379) as redis_proxy:
        rabbit.refuse()
        redis_proxy.refuse()
        connector = RabbitMqConnector(
            rabbit.url_for("amqp://guest:s3cret@127.0.0.1:5672//"), connect_timeout=1
        )
        connectors.append(connector)
        client = redis.Redis.from_url(redis_proxy.url_for("redis://:r3dis-s3cret@127.0.0.1:6379/0"))
        fallback = RedisDomainEventBus(organization, SERVICE, client, key_prefix="test:never:")
        bus = RabbitMqDomainEventBus(organization, SERVICE, connector, fallback=fallback)
        batch = [UserCreated(user_id="1"), UserCreated(user_id="2")]

        with caplog.at_level(logging.DEBUG), pytest.raises(BusCannotPublish) as caught:
            bus.publish(batch)
        client.close()

    error = caught.value
    text = str(error)
    assert len(error.causes) == 2
    assert error.causes[0].startswith("RabbitMqDomainEventBus: cannot connect to RabbitMQ")
    assert error.causes[1].startswith("RedisDomainEventBus: Redis could not store 2 message(s)")
    assert all(cause in text for cause in error.causes)
    assert error.message_ids == [m.message_id for m in batch]
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for shown in [text, repr(error), *map(str, chain), caplog.text, repr(connector)]:
        assert "s3cret" not in shown


@pytest.mark.usefixtures("orders_nacked")
def test_with_redis_down_bus_cannot_publish_lists_exactly_the_nacked_and_returned_messages(
    organization: str, connectors: list[RabbitMqConnector]
) -> None:
    users = [UserCreated(user_id=str(i)) for i in range(3)]  # routed and acked
    orders = [OrderPlaced(order_id=str(i)) for i in range(3)]  # nacked
    deletions = [UserDeleted(user_id=str(i)) for i in range(3)]  # returned: no queue binds them
    connector = RabbitMqConnector(RABBITMQ_URL)
    connectors.append(connector)
    with (
        QueueCounter(
            f"{organization}.{SERVICE}", routing_key=f"{organization}.petisco.1.event.user_created"
        ) as only_users,
        FaultProxy("127.0.0.1", 6379) as redis_proxy,
    ):
        redis_proxy.refuse()
        client = redis.Redis.from_url(redis_proxy.url_for(REDIS_URL))
        fallback = RedisDomainEventBus(organization, SERVICE, client, key_prefix="test:never:")
        bus = RabbitMqDomainEventBus(organization, SERVICE, connector, fallback=fallback)

        with pytest.raises(BusCannotPublish) as caught:
            bus.publish([*users, *orders, *deletions])
        client.close()
        only_users.drain(3, timeout=5)

    assert only_users.ids == Counter({u.message_id: 1 for u in users})
    assert "nacked by RabbitMQ" in str(caught.value)
    assert sorted(caught.value.message_ids) == sorted(m.message_id for m in orders + deletions)


def test_wrong_credentials_send_the_message_to_redis_with_a_reason_that_hides_the_password(
    make_bus: BusFactory,
    redis_client: redis.Redis,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus("amqp://guest:wr0ng-s3cret@127.0.0.1:5672//", connect_timeout=2)
    message = UserCreated(user_id="1")

    with caplog.at_level(logging.DEBUG):
        bus.publish(message)

    [entry] = stored(redis_client, f"{key_prefix}domain.events")
    assert entry["message"]["data"]["id"] == message.message_id
    assert "cannot connect to RabbitMQ" in entry["reason"]
    assert "ACCESS_REFUSED" in entry["reason"]
    assert "wr0ng-s3cret" not in entry["reason"]
    assert "wr0ng-s3cret" not in caplog.text


def test_a_hung_broker_costs_one_connect_timeout_then_publishes_go_to_redis_in_milliseconds(
    make_bus: BusFactory, redis_client: redis.Redis, key_prefix: str
) -> None:
    with HungListener() as hung:
        bus = make_bus(hung.url("amqp", "//"), connect_timeout=1.0, breaker_cooldown=60)
        first = UserCreated(user_id="first")

        started = time.monotonic()
        bus.publish(first)
        first_took = time.monotonic() - started

        durations: list[float] = []
        give_up = time.monotonic() + 10  # if each publish waited for the broker, stop early
        while len(durations) < 1000 and time.monotonic() < give_up:
            started = time.perf_counter()
            bus.publish(UserCreated(user_id=str(len(durations))))
            durations.append(time.perf_counter() - started)
        connections = hung.accepted

    assert first_took < 1.0 + 0.5
    entries = stored(redis_client, f"{key_prefix}domain.events")
    assert entries[0]["message"]["data"]["id"] == first.message_id
    assert "cannot connect to RabbitMQ" in entries[0]["reason"]
    assert len(durations) == 1000
    assert len(entries) == 1001
    assert all("circuit open" in e["reason"] for e in entries[1:])
    assert statistics.median(durations) < 0.005
    assert connections == 1, "publishes during the cool-down must not try to connect"


def test_after_the_cooldown_a_probe_reconnects_once_the_broker_answers_again(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.hang()
        bus = make_bus(proxy.url_for(RABBITMQ_URL), connect_timeout=0.5, breaker_cooldown=1.0)
        during_outage = UserCreated(user_id="hung")
        started = time.monotonic()
        bus.publish(during_outage)
        failed_at = time.monotonic()
        assert failed_at - started < 0.5 + 0.5

        proxy.pass_through()
        during_cooldown = UserCreated(user_id="cooling")
        bus.publish(during_cooldown)
        time.sleep(max(0.0, failed_at + 1.0 + 0.2 - time.monotonic()))
        after_cooldown = UserCreated(user_id="back")
        bus.publish(after_cooldown)
        counter.drain(1, timeout=5)

    in_redis = stored_ids(redis_client, f"{key_prefix}domain.events")
    assert in_redis == Counter({during_outage.message_id: 1, during_cooldown.message_id: 1})
    assert counter.ids == Counter({after_cooldown.message_id: 1})
    assert not bus.connector.breaker.is_open


def test_a_pooled_connection_cut_while_idle_is_replaced_and_the_next_publish_reaches_rabbitmq(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        bus = make_bus(proxy.url_for(RABBITMQ_URL), connect_timeout=1, breaker_cooldown=60)
        before = UserCreated(user_id="before")
        bus.publish(before)
        proxy.cut()  # the pooled connection dies while the bus is idle

        after = [UserCreated(user_id="after"), UserCreated(user_id="after-2")]
        bus.publish(after)
        counter.drain(3, timeout=5)

    assert counter.ids == Counter({m.message_id: 1 for m in [before, *after]})
    assert redis_client.llen(f"{key_prefix}domain.events") == 0
    assert not bus.connector.breaker.is_open


def test_a_broker_that_stops_answering_mid_publish_costs_at_most_the_confirm_timeout(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        bus = make_bus(proxy.url_for(RABBITMQ_URL), confirm_timeout=1.0, breaker_cooldown=60)
        bus.publish(UserCreated(user_id="warm-up"))  # a pooled connection, exchange declared
        proxy.hang()
        batch = [UserCreated(user_id=str(i)) for i in range(100)]

        started = time.monotonic()
        bus.publish(batch)
        took = time.monotonic() - started

    assert took < 1.0 + 0.5
    in_redis = stored_ids(redis_client, f"{key_prefix}domain.events")
    assert in_redis == Counter({m.message_id: 1 for m in batch})
    assert bus.connector.breaker.is_open


def test_a_broker_that_stops_answering_never_holds_a_publish_to_a_new_exchange_forever(
    names: Names,
    organization: str,
    redis_client: redis.Redis,
    key_prefix: str,
    connectors: list[RabbitMqConnector],
) -> None:
    # One connector serves buses of several services (as the replay does): the second service's
    # exchange is declared on a connection that is already pooled, after the broker went silent.
    other_service = "other"
    with FaultProxy("127.0.0.1", 5672) as proxy:
        connector = RabbitMqConnector(
            proxy.url_for(RABBITMQ_URL), connect_timeout=1, confirm_timeout=1, breaker_cooldown=60
        )
        connectors.append(connector)
        first = RabbitMqDomainEventBus(organization, SERVICE, connector)
        second = RabbitMqDomainEventBus(
            organization,
            other_service,
            connector,
            fallback=RedisDomainEventBus(
                organization, other_service, redis_client, key_prefix=key_prefix
            ),
        )
        with QueueCounter(names.exchange):
            first.publish(UserCreated(user_id="warm-up"))
        proxy.hang()
        message = UserCreated(user_id="1")
        publisher = threading.Thread(target=second.publish, args=(message,), daemon=True)

        started = time.monotonic()
        publisher.start()
        publisher.join(timeout=1 + 1 + 1)
        took = time.monotonic() - started
        still_waiting = publisher.is_alive()
    publisher.join(timeout=5)  # the proxy is gone: the socket errors out and the thread ends
    delete_exchange(f"{organization}.{other_service}")

    assert not still_waiting, f"publish still blocked after {took:.1f} s on a silent broker"
    assert stored_ids(redis_client, f"{key_prefix}domain.events") == Counter(
        {message.message_id: 1}
    )


def test_a_child_forked_during_a_probe_publishes_to_rabbitmq_after_the_cooldown(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        proxy.hang()
        bus = make_bus(proxy.url_for(RABBITMQ_URL), connect_timeout=1.0, breaker_cooldown=0.2)
        bus.publish(UserCreated(user_id="outage"))  # opens the circuit
        time.sleep(0.3)
        probe = threading.Thread(target=bus.publish, args=(UserCreated(user_id="probe"),))
        probe.start()  # this thread's probe hangs for the connect timeout ...
        time.sleep(0.1)
        proxy.pass_through()  # ... while the broker is reachable again for new connections
        in_child = UserCreated(user_id="child")

        def past_the_cooldown() -> None:
            time.sleep(0.3)
            bus.publish(in_child)

        # ... and the process forks mid-probe (the probe thread stays behind)
        child_exit = exit_code_of_forked_child(past_the_cooldown)
        probe.join()
        counter.drain(1, timeout=2)

    assert child_exit == 0
    assert in_child.message_id in counter.ids, (
        "the child inherited the parent's in-flight probe and skips RabbitMQ for good"
    )
    assert in_child.message_id not in stored_ids(redis_client, f"{key_prefix}domain.events")


# -- concurrency -----------------------------------------------------------------------------------


def test_eight_threads_publishing_through_one_bus_deliver_every_message_once(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    bus = make_bus()
    per_thread = [[UserCreated(user_id=f"{t}-{i}") for i in range(125)] for t in range(8)]
    errors: list[str] = []
    start = threading.Barrier(len(per_thread))

    def publish(messages: list[UserCreated]) -> None:
        try:
            start.wait()
            for single in messages[:25]:
                bus.publish(single)
            for offset in range(25, 125, 20):
                bus.publish(messages[offset : offset + 20])
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=publish, args=(ms,)) for ms in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counter.drain(1000, timeout=10)

    assert errors == []
    assert counter.ids == Counter({m.message_id: 1 for ms in per_thread for m in ms})
    assert redis_client.llen(f"{key_prefix}domain.events") == 0


def test_a_bus_used_before_a_fork_publishes_in_the_child_and_still_in_the_parent(
    make_bus: BusFactory, counter: QueueCounter, redis_client: redis.Redis, key_prefix: str
) -> None:
    bus = make_bus()
    before = UserCreated(user_id="parent-before")
    bus.publish(before)
    [pooled] = bus.connector._idle
    in_child = UserCreated(user_id="child")

    child_exit = exit_code_of_forked_child(lambda: bus.publish(in_child))

    after = UserCreated(user_id="parent-after")
    bus.publish(after)
    counter.drain(3, timeout=5)

    assert child_exit == 0
    assert counter.ids == Counter({m.message_id: 1 for m in [before, in_child, after]})
    assert redis_client.llen(f"{key_prefix}domain.events") == 0, "a publish fell back to Redis"
    assert bus.connector._idle == [pooled], "the child broke the parent's pooled connection"


# -- Redis durability ------------------------------------------------------------------------------


@pytest.fixture
def unchecked_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which Redis servers were checked: a private server's port may have been used (and
    checked) by an earlier test in this process."""
    monkeypatch.setattr(redis_store, "_checked_servers", set())


@pytest.mark.usefixtures("unchecked_servers")
def test_a_redis_without_persistence_is_warned_about_once(
    organization: str, caplog: pytest.LogCaptureFixture
) -> None:
    with PrivateRedis() as volatile, PrivateRedis(appendonly=True) as durable:
        clients = [volatile.client(), durable.client()]
        with caplog.at_level(logging.WARNING, logger="fallbackbus.redis.store"):
            for client in clients:
                for _ in range(3):
                    RedisDomainEventBus(organization, SERVICE, client).publish(
                        UserCreated(user_id="1")
                    )
            stored_counts = [client.llen("domain.events") for client in clients]
        for client in clients:
            client.close()

    warnings = [r for r in caplog.records if "no persistence" in r.getMessage()]
    assert len(warnings) == 1
    assert f"127.0.0.1:{volatile.port}" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert stored_counts == [3, 3]


@pytest.mark.usefixtures("unchecked_servers")
def test_a_redis_that_cannot_be_reached_is_not_reported_as_lacking_persistence_and_is_checked_later(
    organization: str, caplog: pytest.LogCaptureFixture
) -> None:
    with PrivateRedis() as volatile, FaultProxy("127.0.0.1", volatile.port) as proxy:
        client = redis.Redis.from_url(proxy.url_for(volatile.url))
        bus = RedisDomainEventBus(organization, SERVICE, client)
        with caplog.at_level(logging.WARNING, logger="fallbackbus.redis.store"):
            proxy.refuse()
            with pytest.raises(BusCannotPublish):
                bus.publish(UserCreated(user_id="while down"))
            warned_while_down = [r.getMessage() for r in caplog.records]

            proxy.pass_through()
            bus.publish(UserCreated(user_id="once back"))
        warned = [r.getMessage() for r in caplog.records if "no persistence" in r.getMessage()]
        client.close()

    assert warned_while_down == [], "it could not tell, yet it said there is no persistence"
    assert len(warned) == 1, "the reachable, non-persistent Redis was never reported"
