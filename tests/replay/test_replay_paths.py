"""Replay's normal paths: what it republishes, how, in which order, and how it audits it."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from fallbackbus.audit import AuditQueries, SqlAuditStore
from fallbackbus.replay import REPLAYED_HEADER, Replayer
from tests.replay.conftest import SERVICE, Backlog, message_span, outcomes, received_ids
from tests.support.accounting import Ledger
from tests.support.consumer import QueueCounter

pytestmark = pytest.mark.integration


def test_stored_events_are_republished_once_oldest_first_byte_for_byte_audited_in_postgresql(
    backlog: Backlog,
    organization: str,
    counter: QueueCounter,
    pg_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    account: Callable[..., Ledger],
) -> None:
    # Given 1,000 events that fell back to Redis
    ids = backlog.add(1000, organization)
    stored = {json.loads(entry)["message"]["data"]["id"]: entry for entry in backlog.entries()}
    backlog.assert_counters_balance()

    # When one run drains the list in batches of 100
    report = make_replayer(pg_audit).run(backlog.keys.name, batch_size=100)
    counter.drain(expected=len(ids), timeout=20)

    # Then each event reached RabbitMQ exactly once, oldest first ...
    assert (report.status, report.stop_reason) == ("completed", None)
    assert (report.republished, report.dead_lettered, report.returned) == (1000, 0, 0)
    assert received_ids(counter) == ids
    # ... with the stored body byte for byte, the petisco routing key and the replay header
    for routing_key, body, properties, headers in counter.messages:
        message_id = properties["message_id"]
        assert body == message_span(stored[message_id])
        assert routing_key == f"{organization}.{SERVICE}.1.event.user_created"
        assert properties["delivery_mode"] == 2
        assert properties["content_type"] == "application/json"
        assert properties["type"] == "user.created"
        assert headers[REPLAYED_HEADER] is True
    # ... one 'republished' audit row per event and a completed run row
    rows = outcomes(pg_audit, organization=organization)
    assert Counter((row.message_id, row.status) for row in rows) == {
        (message_id, "republished"): 1 for message_id in ids
    }
    assert {row.routing_key for row in rows} == {f"{organization}.{SERVICE}.1.event.user_created"}
    run = AuditQueries(pg_audit).run(report.run_id)
    assert run is not None
    assert (run.status, run.republished, run.dead_lettered, run.returned) == (
        "completed",
        1000,
        0,
        0,
    )
    # ... and nothing is left behind, with the counters balanced
    assert backlog.entries() == []
    assert backlog.processing_lists() == {}
    assert backlog.dead_letters() == []
    assert backlog.stats()["fell_back"] == backlog.stats()["republished"] == 1000
    backlog.assert_counters_balance()
    account(ids)


def petisco_body(organization: str, kind: str, dotted_type: str) -> dict[str, object]:
    return {
        "data": {
            "id": str(uuid.uuid4()),
            "type": dotted_type,
            "type_message": kind,
            "version": 1,
            "occurred_on": "2024-05-01 10:00:00.123456",
            "attributes": {"user_id": "42", "name": "Zoë", "tags": ["a", "b"]},
            "meta": {"source": organization},
        }
    }


def test_entries_written_by_petisco_in_its_events_list_are_republished_byte_for_byte(
    make_backlog: Callable[[str], Backlog],
    organization: str,
    counter: QueueCounter,
    sqlite_audit: SqlAuditStore,
    make_replayer: Callable[..., Replayer],
    account: Callable[..., Ledger],
) -> None:
    # Given petisco's envelope (organization, service, message and nothing else) in 'events',
    # written with petisco's json.dumps defaults and, to be sure nothing re-serializes the body,
    # with other spacing and raw non-ASCII too
    backlog = make_backlog("events")
    bodies = [
        json.dumps(petisco_body(organization, "domain_event", "user.created")),
        json.dumps(
            petisco_body(organization, "domain_event", "user.renamed"),
            separators=(",", ":"),
            ensure_ascii=False,
        ),
        json.dumps(petisco_body(organization, "command", "create.user"), indent=2),
    ]
    entries = [
        f'{{"organization": "{organization}", "service": "{SERVICE}", "message": {body}}}'
        for body in bodies
    ]
    backlog.push_raw(*(entry.encode() for entry in entries))
    ids = [json.loads(body)["data"]["id"] for body in bodies]

    # When the 'events' list is replayed
    report = make_replayer(sqlite_audit).run("events")
    counter.drain(expected=3, timeout=10)

    # Then each body reaches RabbitMQ exactly as petisco stored it, on petisco's routing key
    assert (report.status, report.republished, report.dead_lettered) == ("completed", 3, 0)
    assert received_ids(counter) == ids
    assert [body for _, body, _, _ in counter.messages] == [body.encode() for body in bodies]
    assert [routing_key for routing_key, _, _, _ in counter.messages] == [
        f"{organization}.{SERVICE}.1.event.user_created",
        f"{organization}.{SERVICE}.1.event.user_renamed",
        f"{organization}.{SERVICE}.1.command.create_user",
    ]
    assert all(headers[REPLAYED_HEADER] is True for _, _, _, headers in counter.messages)
    rows = outcomes(sqlite_audit)
    assert sorted((row.message_id, row.status) for row in rows) == sorted(
        (message_id, "republished") for message_id in ids
    )
    # petisco never counted them as fallen back: replay counts them on sight, so it balances
    assert backlog.entries() == []
    backlog.assert_counters_balance()
    account(ids, backlog=backlog)
