"""Fallback entries: our envelope, petisco's 3-key entries, and poison that can never be sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fallbackbus import DomainEvent
from fallbackbus.envelope import (
    PoisonEntry,
    decode,
    decode_dead_letter,
    encode,
    encode_dead_letter,
    is_ours,
    peek_identity,
)
from fallbackbus.messages import Outgoing, prepare

LIMIT = 1_048_576


class UserCreated(DomainEvent):
    user_id: str
    name: str


def outgoing(name: str = "Ada") -> Outgoing:
    [prepared] = prepare(
        UserCreated(user_id="1", name=name),
        kind=DomainEvent,
        organization="acme",
        service="petisco",
        max_bytes=LIMIT,
    )
    return prepared


def petisco_entry(message: Any, **extra: Any) -> str:
    return json.dumps({"organization": "acme", "service": "petisco", "message": message, **extra})


def body(**data: Any) -> dict[str, Any]:
    base = {
        "id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11",
        "type": "user.created",
        "type_message": "domain_event",
        "version": 1,
        "occurred_on": "2026-01-01 10:00:00.000000",
        "attributes": {"user_id": "1"},
        "meta": {},
    }
    base.update(data)
    return {"data": {k: v for k, v in base.items() if v is not None}}


def test_an_entry_is_petisco_json_with_our_reason_time_and_attempts() -> None:
    message = outgoing()

    doc = json.loads(encode(message, reason="nacked by RabbitMQ", stored_at="2026-01-01T00:00:00"))

    assert doc == {
        "organization": "acme",
        "service": "petisco",
        "message": json.loads(message.body),
        "reason": "nacked by RabbitMQ",
        "stored_at": "2026-01-01T00:00:00",
        "attempts": 0,
    }
    assert list(doc)[:3] == ["organization", "service", "message"]


def test_an_encoded_entry_decodes_to_the_same_message_with_the_body_byte_for_byte() -> None:
    message = outgoing('Adà, "quoted" and \\ back')

    entry = decode(encode(message, reason="returned", attempts=3), max_bytes=LIMIT)

    assert entry.outgoing.body == message.body
    assert entry.outgoing.message_id == message.message_id
    assert entry.outgoing.routing_key == message.routing_key
    assert entry.outgoing.exchange == "acme.petisco"
    assert entry.attempts == 3
    assert entry.reason == "returned"
    assert entry.stored_at is not None


def test_a_petisco_entry_with_only_three_keys_decodes_with_zero_attempts_and_no_reason() -> None:
    raw = petisco_entry(body())

    entry = decode(raw.encode(), max_bytes=LIMIT)

    assert entry.attempts == 0
    assert entry.reason is None
    assert entry.stored_at is None
    assert entry.outgoing.routing_key == "acme.petisco.1.event.user_created"
    assert json.loads(entry.outgoing.body) == body()


def test_a_petisco_entry_whose_message_is_a_json_string_republishes_that_string() -> None:
    inner = json.dumps(body())

    entry = decode(petisco_entry(inner), max_bytes=LIMIT)

    assert entry.outgoing.body == inner.encode()


def test_a_missing_version_defaults_to_one() -> None:
    entry = decode(petisco_entry(body(version=None)), max_bytes=LIMIT)

    assert entry.outgoing.version == 1


def test_re_encoding_a_decoded_entry_with_a_new_count_keeps_body_reason_and_time() -> None:
    entry = decode(encode(outgoing(), reason="nacked", stored_at="then"), max_bytes=LIMIT)

    again = decode(
        encode(entry.outgoing, reason="nacked", attempts=4, stored_at=entry.stored_at),
        max_bytes=LIMIT,
    )

    assert again.attempts == 4
    assert again.outgoing.body == entry.outgoing.body
    assert (again.reason, again.stored_at) == ("nacked", "then")


def test_the_body_is_found_byte_for_byte_behind_a_nested_message_key_and_odd_spacing() -> None:
    # A "message" key nested in an earlier value defeats the fast path; the exact scan must
    # still return the top-level body's own bytes, spacing and key order untouched.
    raw_body = '{ "data" :{"id": "m1", "type": "user.created", "type_message": "domain_event"} }'
    raw = (
        '\n{"meta": {"message": {"data": {"id": "decoy"}}},\t"organization" : "acme",'
        f'"service":"petisco" ,  "message" :\n {raw_body}  }}\n'
    )

    entry = decode(raw, max_bytes=LIMIT)

    assert entry.outgoing.body == raw_body.encode()
    assert entry.outgoing.message_id == "m1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "empty JSON object"),
        (b'{"organization": "acme", "service": "petisco"', "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (petisco_entry(body()) + " trailing", "trailing data"),
        (json.dumps({"service": "petisco", "message": body()}), "no string 'organization'"),
        (json.dumps({"organization": 7, "service": "s", "message": body()}), "'organization'"),
        (json.dumps({"organization": "acme", "service": "petisco"}), "no 'message'"),
        (petisco_entry({"nodata": 1}), "no 'data' object"),
        (petisco_entry("not json inside"), "string that is not JSON"),
        (petisco_entry(body(type_message="query")), "unknown message kind 'query'"),
        (petisco_entry(body(id=None)), "no string 'data.id'"),
        (petisco_entry(body(type="")), "no string 'data.type'"),
        (petisco_entry(body(version=0)), "version 0 is not a positive integer"),
        (petisco_entry(body(version=True)), "version True is not a positive integer"),
        (petisco_entry(body(version="2")), "version '2' is not a positive integer"),
        (petisco_entry(body(), attempts="3"), "'attempts' is not a int"),
        (petisco_entry(body(), attempts=True), "'attempts' is not a int"),
        (petisco_entry(body(), reason=5), "'reason' is not a str"),
    ],
)
def test_an_entry_that_can_never_be_published_is_poison_with_a_reason(
    raw: bytes | str, reason: str
) -> None:
    with pytest.raises(PoisonEntry) as caught:
        decode(raw, max_bytes=LIMIT)

    assert reason in caught.value.reason


def test_an_entry_whose_routing_key_rabbitmq_can_never_take_is_poison() -> None:
    raw = json.dumps({"organization": "acme", "service": "s" * 300, "message": body()})

    with pytest.raises(PoisonEntry, match="over AMQP's limit of 255"):
        decode(raw, max_bytes=LIMIT)


def test_json_nested_too_deeply_to_read_is_poison_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    raw = '{"organization": "acme", "service": "petisco", "message": ' + deep + "}"

    with pytest.raises(PoisonEntry):
        decode(raw, max_bytes=10 * LIMIT)
    assert peek_identity(raw) == {}
    assert not is_ours(raw.encode())


def test_an_entry_over_the_size_limit_is_poison() -> None:
    raw = encode(outgoing(), reason="x")

    with pytest.raises(PoisonEntry, match=f"over the limit of {len(raw) - 1}"):
        decode(raw, max_bytes=len(raw) - 1)
    assert decode(raw, max_bytes=len(raw)).outgoing.type == "user.created"


def test_peek_identity_reads_ids_even_from_entries_that_cannot_be_decoded() -> None:
    poison = petisco_entry(body(type_message="query"))

    assert peek_identity(poison) == {
        "message_id": "5f0c3c4e-9f1e-4d7a-8a47-2b1f7c9d0e11",
        "message_type": "user.created",
        "organization": "acme",
        "service": "petisco",
    }
    assert peek_identity(b"garbage") == {}
    assert peek_identity(b"[1]") == {}


def test_is_ours_tells_our_entries_from_petisco_ones() -> None:
    assert is_ours(encode(outgoing(), reason="x"))
    assert not is_ours(petisco_entry(body()).encode())
    assert not is_ours(b"\xff not json")


@pytest.mark.parametrize("original", [b'{"some": "entry"}', b"\xff\x00 binary \xfe"])
def test_a_dead_letter_keeps_the_original_bytes_and_the_reason(original: bytes) -> None:
    raw = encode_dead_letter(original, reason="not JSON", source_list="domain.events", run_id="r1")

    letter = decode_dead_letter(raw)

    assert letter.original == original
    assert (letter.reason, letter.source_list, letter.run_id) == ("not JSON", "domain.events", "r1")
    assert letter.dead_at
