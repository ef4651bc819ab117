"""The test-support toolkit does what the fault-injection tests rely on it to do."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any

import kombu
import psycopg
import pytest
import redis

from fallbackbus.testing.faultproxy import FaultProxy
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter
from tests.support.servers import HungListener, PrivateRedis, free_port
from tests.support.services import PG_URL, RABBITMQ_URL, REDIS_URL, Names, strict_redis

POSTGRES_URL = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)  # psycopg's own form


def publish(exchange: str, body: bytes, url: str = RABBITMQ_URL, **properties: Any) -> None:
    with kombu.Connection(url) as conn:
        conn.Producer().publish(
            body,
            exchange=kombu.Exchange(exchange, "topic", durable=True),
            routing_key="acme.users.1.event.user_created",
            content_type="application/json",
            content_encoding="utf-8",
            **properties,
        )


# -- FaultProxy ------------------------------------------------------------------------------


def test_url_for_points_a_url_at_the_proxy_keeping_credentials_and_path() -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        assert proxy.url_for("amqp://guest:guest@localhost:5672//") == (
            f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
        )
        assert proxy.url_for("redis://127.0.0.1:6379/3") == f"redis://127.0.0.1:{proxy.port}/3"


@pytest.mark.integration
def test_proxy_forwards_redis_traffic_in_pass_through_mode(redis_proxy: FaultProxy) -> None:
    client = strict_redis(redis_proxy.url_for(REDIS_URL))
    key = f"test:{uuid.uuid4()}"
    try:
        client.set(key, "value", ex=60)
        assert client.get(key) == b"value"
        assert redis_proxy.active_connections == 1
    finally:
        client.delete(key)
        client.close()


@pytest.mark.integration
def test_refuse_makes_new_connections_fail_fast_and_resets_open_ones(
    redis_proxy: FaultProxy,
) -> None:
    url = redis_proxy.url_for(REDIS_URL)
    already_open = socket.create_connection(("127.0.0.1", redis_proxy.port), timeout=2)
    already_open.sendall(b"PING\r\n")
    assert already_open.recv(16) == b"+PONG\r\n"

    redis_proxy.refuse()

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        strict_redis(url).ping()
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConnectionResetError):
        already_open.recv(16)
    assert redis_proxy.active_connections == 0
    already_open.close()


@pytest.mark.integration
def test_pass_through_after_refuse_accepts_connections_again_on_the_same_port(
    redis_proxy: FaultProxy,
) -> None:
    port = redis_proxy.port
    redis_proxy.refuse()
    redis_proxy.pass_through()
    client = strict_redis(redis_proxy.url_for(REDIS_URL))
    assert client.ping()
    assert redis_proxy.port == port
    client.close()


@pytest.mark.integration
def test_cut_resets_an_open_connection_but_new_ones_still_work(redis_proxy: FaultProxy) -> None:
    victim = socket.create_connection(("127.0.0.1", redis_proxy.port), timeout=2)
    victim.sendall(b"PING\r\n")
    assert victim.recv(16) == b"+PONG\r\n"

    redis_proxy.cut()

    assert redis_proxy.active_connections == 0
    with pytest.raises(ConnectionResetError):  # an RST, not a polite FIN
        victim.recv(16)
    victim.close()
    fresh = strict_redis(redis_proxy.url_for(REDIS_URL))
    assert fresh.ping()
    fresh.close()


@pytest.mark.integration
def test_cut_during_a_command_makes_redis_py_raise(redis_proxy: FaultProxy) -> None:
    # An idle pooled redis-py connection that was cut is silently replaced on checkout,
    # so the cut has to land while the command is in flight (held up by latency).
    client = strict_redis(redis_proxy.url_for(REDIS_URL))
    assert client.ping()
    redis_proxy.set_latency(0.5)
    cutter = threading.Timer(0.2, redis_proxy.cut)
    cutter.start()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    cutter.join()
    client.close()


@pytest.mark.integration
def test_hang_makes_new_and_open_connections_time_out(redis_proxy: FaultProxy) -> None:
    url = redis_proxy.url_for(REDIS_URL)
    already_open = strict_redis(url, timeout=0.5)
    assert already_open.ping()

    redis_proxy.hang()

    for client in (already_open, strict_redis(url, timeout=0.5)):
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert 0.4 < time.monotonic() - started < 2.0
        client.close()


@pytest.mark.integration
def test_hung_connections_stay_silent_after_pass_through_while_new_ones_work(
    redis_proxy: FaultProxy,
) -> None:
    url = redis_proxy.url_for(REDIS_URL)
    raw = socket.create_connection(("127.0.0.1", redis_proxy.port), timeout=0.3)
    redis_proxy.hang()
    raw.sendall(b"PING\r\n")
    redis_proxy.pass_through()
    with pytest.raises(TimeoutError):
        raw.recv(16)
    raw.close()
    assert strict_redis(url).ping()


@pytest.mark.integration
def test_hang_hides_the_upstream_going_away_from_the_client() -> None:
    with PrivateRedis() as server, FaultProxy("127.0.0.1", server.port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.3)
        client.sendall(b"PING\r\n")
        assert client.recv(16) == b"+PONG\r\n"

        proxy.hang()
        server.kill()

        with pytest.raises(TimeoutError):  # no FIN, no RST: a true black hole
            client.recv(16)
        client.close()


@pytest.mark.integration
def test_proxy_to_a_dead_upstream_fails_clients_fast_instead_of_hanging() -> None:
    with FaultProxy("127.0.0.1", free_port()) as proxy:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            strict_redis(proxy.url_for(REDIS_URL)).ping()
        assert time.monotonic() - started < 1.0


@pytest.mark.integration
def test_latency_delays_each_round_trip(redis_proxy: FaultProxy) -> None:
    client = strict_redis(redis_proxy.url_for(REDIS_URL))
    assert client.ping()

    redis_proxy.set_latency(0.2)
    started = time.monotonic()
    assert client.ping()
    slow = time.monotonic() - started

    redis_proxy.set_latency(0)
    started = time.monotonic()
    assert client.ping()
    fast = time.monotonic() - started
    client.close()

    assert slow >= 0.35  # 0.2 s on the way in and again on the way out
    assert fast < 0.1


@pytest.mark.integration
def test_proxy_forwards_amqp_so_kombu_can_publish_through_it(names: Names) -> None:
    with FaultProxy("127.0.0.1", 5672) as proxy, QueueCounter(names.exchange) as counter:
        publish(names.exchange, b"{}", url=proxy.url_for(RABBITMQ_URL), message_id="via-proxy")
        counter.drain(expected=1, timeout=5)
    assert counter.ids == {"via-proxy": 1}


@pytest.mark.integration
def test_proxy_forwards_postgresql_so_psycopg_can_query_through_it() -> None:
    with (
        FaultProxy("127.0.0.1", 5432) as proxy,
        psycopg.connect(proxy.url_for(POSTGRES_URL), connect_timeout=5) as conn,
    ):
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


@pytest.mark.integration
def test_stop_closes_the_port_and_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    proxy = FaultProxy("localhost", 6379).start()  # a hostname exercises the resolver pool
    client = strict_redis(proxy.url_for(REDIS_URL))
    assert client.ping()
    port = proxy.port

    proxy.stop()

    assert set(threading.enumerate()) <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    client.close()


# -- private servers ---------------------------------------------------------------------------


@pytest.mark.integration
def test_private_redis_with_always_fsync_aof_keeps_data_across_kill_and_restart() -> None:
    with PrivateRedis(appendonly=True, appendfsync="always") as server:
        client = server.client()
        client.rpush("fallback", "m1", "m2")
        client.close()

        server.kill()
        assert not server.running
        server.start()

        client = server.client()
        assert client.lrange("fallback", 0, -1) == [b"m1", b"m2"]
        client.close()


@pytest.mark.integration
def test_private_redis_close_kills_the_server_and_removes_its_directory() -> None:
    server = PrivateRedis()
    with server:
        port, directory = server.port, server.directory
        assert directory.exists()
    assert not server.running
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_free_port_returns_a_port_that_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_hung_listener_accepts_connections_and_never_sends_a_byte() -> None:
    with HungListener() as listener:
        conn = socket.create_connection(("127.0.0.1", listener.port), timeout=0.3)
        conn.sendall(b"PING\r\n")
        assert listener.wait_for_connections(1)
        with pytest.raises(TimeoutError):
            conn.recv(1)
        assert listener.accepted == 1
        conn.close()


# -- RabbitMQ queue counter ----------------------------------------------------------------------


@pytest.mark.integration
def test_queue_counter_bound_before_publishing_sees_every_message_and_duplicate(
    names: Names,
) -> None:
    with QueueCounter(names.exchange) as counter:
        publish(names.exchange, b'{"data": {"id": "from-body"}}')
        publish(names.exchange, b"{}", message_id="m1", headers={"x-try": 1})
        publish(names.exchange, b"{}", message_id="m1")
        counter.drain(expected=3, timeout=5)

    assert counter.ids == {"from-body": 1, "m1": 2}
    assert counter.duplicates() == {"m1": 2}
    assert counter.bodies[0] == b'{"data": {"id": "from-body"}}'
    routing_key, _, properties, headers = counter.messages[1]
    assert routing_key == "acme.users.1.event.user_created"
    assert properties["message_id"] == "m1"
    assert headers == {"x-try": 1}


@pytest.mark.integration
def test_queue_counter_drain_without_expected_returns_once_the_queue_is_quiet(
    names: Names,
) -> None:
    with QueueCounter(names.exchange) as counter:
        started = time.monotonic()
        counter.drain(timeout=5, idle=0.3)
        assert time.monotonic() - started < 1.0
        assert counter.received == 0


# -- ledger ------------------------------------------------------------------------------------


def test_ledger_counts_delivered_and_dead_lettered_ids_and_names_the_lost_ones() -> None:
    ledger = Ledger(["a", "b", "c", "d"])
    ledger.add_received({"a": 2, "b": 1})
    ledger.add_dead_lettered(["c"])

    assert ledger.lost() == ["d"]
    assert ledger.duplicate_count() == 1
    with pytest.raises(AssertionError, match=r"lost 1.*\n(.*\n)*.*lost ids.*'d'"):
        ledger.assert_nothing_lost()


def test_ledger_can_refuse_duplicates_and_flags_ids_it_never_sent() -> None:
    ledger = Ledger(["a"])
    ledger.add_received(["a", "a", "stranger"])
    ledger.assert_nothing_lost()
    assert ledger.unexpected() == ["stranger"]
    with pytest.raises(AssertionError, match="duplicates found"):
        ledger.assert_nothing_lost(allow_duplicates=False)


@pytest.mark.integration
def test_ledger_finds_messages_parked_in_redis_fallback_lists() -> None:
    key = f"test:fallback:{uuid.uuid4()}"
    client = strict_redis(REDIS_URL)

    def entry(message_id: str) -> str:
        message = {"data": {"id": message_id, "type": "user.created"}}
        return json.dumps({"organization": "acme", "service": "users", "message": message})

    try:
        client.rpush(key, entry("a"), entry("b"), "not json")
        ledger = Ledger(["a", "b", "c"])
        ledger.add_received(["c", "a"])

        assert ledger.add_fallback(client, key) == 3
        assert ledger.lost() == []
        assert ledger.duplicate_count() == 1  # "a" delivered and also in fallback
        assert ledger.malformed_fallback == [b"not json"]
        assert "1 unparseable" in ledger.summary()
    finally:
        client.delete(key)
        client.close()
