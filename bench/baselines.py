"""The baselines: the same work done with the raw clients, each the safest simple way."""

from __future__ import annotations

import time
from typing import Any

import amqp
import kombu
import redis
from kombu.utils.url import parse_url

from bench.env import Destination
from bench.workload import raw_entry, raw_message, raw_properties


class KombuConfirmPublisher:
    """kombu ``Producer.publish`` with ``confirm_publish``: each call waits for its own ack.

    ``mandatory`` too, so an unroutable message is an error rather than silently dropped.
    """

    def __init__(self, url: str, dest: Destination, connect_timeout: float | None = None) -> None:
        options: dict[str, Any] = {"transport_options": {"confirm_publish": True}}
        if connect_timeout is not None:
            options["connect_timeout"] = connect_timeout
        self.dest = dest
        self.connection = kombu.Connection(url, **options)
        # One bounded attempt: kombu's connect() would retry once after sleeping 2 s.
        self.connection.ensure_connection(max_retries=0)
        self.producer = kombu.Producer(
            self.connection.channel(),
            exchange=kombu.Exchange(dest.exchange, "topic", durable=True),
        )

    def publish_one(self, number: int = 0) -> None:
        message_id, body = raw_message(number)
        properties = raw_properties(message_id)
        self.producer.publish(
            body,
            routing_key=self.dest.routing_key,
            mandatory=True,
            retry=False,
            **properties,
        )

    def close(self) -> None:
        self.connection.release()


class AmqpStreamingPublisher:
    """py-amqp with streaming confirms: publish the whole batch, then wait once for the acks."""

    def __init__(self, url: str, dest: Destination) -> None:
        self.dest = dest
        parts = parse_url(url)
        self.connection = amqp.Connection(
            host=f"{parts['hostname'] or 'localhost'}:{parts['port'] or 5672}",
            userid=parts.get("userid") or "guest",
            password=parts.get("password") or "guest",
            virtual_host=parts.get("virtual_host") or "/",
        )
        self.connection.connect()
        channel: Any = self.connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self.channel = channel
        self._sent = 0
        self._acked = 0
        self._failures = 0

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._acked = delivery_tag if multiple else self._acked + 1

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._failures += 1
        self._on_ack(delivery_tag, multiple)

    def _on_return(self, *args: Any) -> None:
        self._failures += 1

    def publish_batch(self, size: int) -> None:
        for number in range(size):
            message_id, body = raw_message(number)
            self.channel.basic_publish(
                amqp.Message(body, **raw_properties(message_id)),
                exchange=self.dest.exchange,
                routing_key=self.dest.routing_key,
                mandatory=True,
            )
        self._sent += size
        while self._acked < self._sent:
            self.connection.drain_events(timeout=10)
        if self._failures:
            raise RuntimeError(f"{self._failures} message(s) nacked or returned")

    def close(self) -> None:
        self.connection.close()


def lpush_one(client: redis.Redis, key: str, dest: Destination, number: int = 0) -> None:
    """redis-py ``LPUSH``, one call per message."""
    client.lpush(key, raw_entry(dest.organization, dest.service, number))


def kombu_publish_or_lpush(
    url: str, dest: Destination, connect_timeout: float, client: redis.Redis, key: str
) -> float:
    """kombu with the same connect timeout, falling back to LPUSH when it fails; seconds taken.

    No circuit breaker: every publish pays the whole connect timeout while the broker hangs.
    """
    started = time.perf_counter()
    try:
        publisher = KombuConfirmPublisher(url, dest, connect_timeout=connect_timeout)
    except Exception:
        lpush_one(client, key, dest)
    else:
        try:
            publisher.publish_one()
        finally:
            publisher.close()
    return time.perf_counter() - started
