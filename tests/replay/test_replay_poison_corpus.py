"""A generated corpus of broken entries mixed with good ones: replay never raises, every good
entry is republished once and in order, every bad one is dead-lettered with a reason."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fallbackbus.audit import SqlAuditStore
from fallbackbus.replay import Replayer
from tests.replay.conftest import (
    SERVICE,
    Backlog,
    Tally,
    outcomes,
    received_ids,
)
from tests.support.consumer import QueueCounter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BYTES = 8192


def good_body(**data: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": "user.created",
        "type_message": "domain_event",
        "version": 1,
        "occurred_on": "2024-05-01 10:00:00.000000",
        "attributes": {"name": "Ada"},
        "meta": {},
    }
    fields.update(data)
    return {"data": fields}


def envelope(organization: Any, service: Any, message: Any, **extra: Any) -> dict[str, Any]:
    return {"organization": organization, "service": service, "message": message, **extra}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def raw_entry(organization: str, body: str) -> bytes:
    """An entry around a body given as text (for JSON that json.dumps cannot write)."""
    return (
        f'{{"organization": "{organization}", "service": "{SERVICE}", "message": {body}}}'.encode()
    )


# Values of the wrong type (or empty) for each field an entry must have.
NOT_A_NAME = st.one_of(
    st.just(""), st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2), st.just({})
)
NOT_A_BODY = st.one_of(
    st.none(), st.integers(), st.lists(st.integers(), max_size=3), st.just("not json")
)
NOT_DATA = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.none(), max_size=2))
NOT_AN_ID = st.one_of(st.just(""), st.none(), st.integers(), st.lists(st.integers(), max_size=2))
NOT_A_KIND = st.one_of(st.none(), st.integers(), st.sampled_from(["event", "notification", ""]))
NOT_A_VERSION = st.one_of(
    st.just("1"), st.just(0), st.integers(max_value=-1), st.just(True), st.just(1.5), st.none()
)
NOT_A_COUNT = st.one_of(st.just("1"), st.just(1.5), st.lists(st.integers(), max_size=2))


@st.composite
def wrong_types(draw: st.DrawFn, organization: str) -> bytes:
    field = draw(
        st.sampled_from(
            [
                "organization",
                "service",
                "message",
                "data",
                "id",
                "type",
                "kind",
                "version",
                "attempts",
            ]
        )
    )
    if field == "organization":
        return dumps(envelope(draw(NOT_A_NAME), SERVICE, good_body()))
    if field == "service":
        return dumps(envelope(organization, draw(NOT_A_NAME), good_body()))
    if field == "message":
        return dumps(envelope(organization, SERVICE, draw(NOT_A_BODY)))
    if field == "data":
        return dumps(envelope(organization, SERVICE, {"data": draw(NOT_DATA)}))
    if field == "id":
        return dumps(envelope(organization, SERVICE, good_body(id=draw(NOT_AN_ID))))
    if field == "type":
        return dumps(envelope(organization, SERVICE, good_body(type=draw(NOT_AN_ID))))
    if field == "kind":
        return dumps(envelope(organization, SERVICE, good_body(type_message=draw(NOT_A_KIND))))
    if field == "version":
        return dumps(envelope(organization, SERVICE, good_body(version=draw(NOT_A_VERSION))))
    return dumps(envelope(organization, SERVICE, good_body(), attempts=draw(NOT_A_COUNT)))


@st.composite
def huge_values(draw: st.DrawFn, organization: str) -> bytes:
    kind = draw(st.sampled_from(["over the limit", "deep nesting", "huge integer", "long type"]))
    if kind == "over the limit":
        blob = "x" * draw(st.integers(MAX_BYTES, 4 * MAX_BYTES))
        return dumps(envelope(organization, SERVICE, good_body(attributes={"blob": blob})))
    if kind == "deep nesting":
        depth = draw(st.integers(2_000, 3_000))
        body = f'{{"data": {{"id": "{uuid.uuid4()}", "x": {"[" * depth}{"]" * depth}}}}}'
        return raw_entry(organization, body)
    if kind == "huge integer":
        digits = "7" * draw(st.integers(5_000, 6_000))
        body = f'{{"data": {{"id": "{uuid.uuid4()}", "n": {digits}}}}}'
        return raw_entry(organization, body)
    # A type that makes the routing key longer than AMQP's 255-byte limit.
    long_type = "user." + "x" * draw(st.integers(260, 400))
    return dumps(envelope(organization, SERVICE, good_body(type=long_type)))


@st.composite
def truncated(draw: st.DrawFn, organization: str) -> bytes:
    whole = dumps(envelope(organization, SERVICE, good_body()))
    return whole[: draw(st.integers(0, len(whole) - 1))]


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


def foreign(organization: str) -> st.SearchStrategy[bytes]:
    """A well-formed entry for another organization's exchange, not in the allow-list."""
    return (
        st.tuples(NAMES, NAMES)
        .filter(lambda names: names[0] != organization)
        .map(lambda names: dumps(envelope(names[0], names[1], good_body())))
    )


def bad_entries(organization: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        truncated(organization),
        wrong_types(organization),
        huge_values(organization),
        foreign(organization),
    )


def test_replay_never_raises_on_a_generated_poison_corpus_and_parks_exactly_the_bad_entries(
    make_backlog: Callable[[str], Backlog],
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    tally: Tally,
) -> None:
    replayer = make_replayer(
        sqlite_audit,
        replay_allowed_services=(f"{organization}.{SERVICE}",),
        max_message_bytes=MAX_BYTES,
    )
    lists = itertools.count()
    totals = {"good": 0, "bad": 0, "lost": 0, "duplicates": 0}

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        # Each example is a real replay; a failure is reported as found, not shrunk for minutes.
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        layout=st.lists(st.one_of(st.none(), bad_entries(organization)), min_size=1, max_size=12),
        batch_size=st.integers(1, 5),
    )
    def replay_corpus(layout: list[bytes | None], batch_size: int) -> None:
        # Given good entries (None) and bad ones in a random order, in a list of their own
        backlog = make_backlog(f"corpus.{next(lists)}")
        good: list[str] = []
        bad: list[bytes] = []
        for item in layout:
            if item is None:
                good += backlog.add(1, organization)
            else:
                backlog.push_raw(item)
                bad.append(item)
        already = counter.received

        # When it is replayed (never raising is part of the property)
        report = replayer.run(backlog.keys.name, batch_size=batch_size)
        counter.drain(expected=already + len(good), timeout=3)

        # Then every good entry is republished once, in order, and every bad one parked
        mine = [message_id for message_id in received_ids(counter)[already:] if message_id in good]
        totals["good"] += len(good)
        totals["bad"] += len(bad)
        totals["lost"] += len(set(good) - set(mine))
        totals["duplicates"] += len(mine) - len(set(mine))
        assert (report.status, report.stop_reason) == ("completed", None)
        assert mine == good
        parked = backlog.dead_letters()
        assert [original for original, _ in parked] == bad
        assert all(reason.strip() for _, reason in parked)
        rows = outcomes(sqlite_audit, run_id=report.run_id)
        assert sorted(r.status for r in rows) == sorted(
            ["republished"] * len(good) + ["dead_lettered"] * len(bad)
        )
        assert all(r.reason for r in rows if r.status == "dead_lettered")
        assert backlog.entries() == []
        assert backlog.processing_lists() == {}

    try:
        replay_corpus()
    finally:
        tally.record(totals["good"] + totals["bad"], totals["lost"], totals["duplicates"])
