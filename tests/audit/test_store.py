"""SqlAuditStore writes runs and outcomes, and turns every database failure into ours."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from fallbackbus.audit import (
    AuditQueries,
    AuditStore,
    InvalidRecord,
    Outcome,
    RunReport,
    SqlAuditStore,
)
from fallbackbus.audit.models import OutcomeRecord
from fallbackbus.errors import AuditUnavailable, ConfigurationError
from fallbackbus.settings import Settings

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UNREACHABLE_PG = "postgresql+psycopg://postgres:secret@127.0.0.1:1/test"

# A SQLAlchemy warning here is a bug (an uncached type, a cartesian product): fail on it.
pytestmark = pytest.mark.filterwarnings("error")


def outcome(message_id: str = "m1", **changes: Any) -> Outcome:
    fields: dict[str, Any] = {
        "status": "republished",
        "source_list": "domain.events",
        "message_type": "user.created",
        "organization": "acme",
        "service": "petisco",
        "routing_key": "acme.petisco.1.event.user_created",
        "attempts": 1,
    }
    return Outcome(message_id=message_id, **{**fields, **changes})


def report(run_id: str = "run-1", **changes: Any) -> RunReport:
    fields: dict[str, Any] = {
        "source_list": "domain.events",
        "status": "completed",
        "stop_reason": None,
        "republished": 7,
        "dead_lettered": 2,
        "returned": 1,
        "recovered": 3,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=4),
        "duration_seconds": 4.0,
        "worker": "host-a:123",
    }
    return RunReport(run_id=run_id, **{**fields, **changes})


def count_outcome_rows(store: SqlAuditStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(OutcomeRecord)).scalar_one()


@pytest.fixture
def statements(store: SqlAuditStore) -> Iterator[list[tuple[str, bool]]]:
    """Every statement the store sends from now on, with whether it was an executemany."""
    seen: list[tuple[str, bool]] = []

    def remember(*args: Any) -> None:
        _conn, _cursor, statement, _parameters, _context, executemany = args
        seen.append((statement, executemany))

    event.listen(store.engine, "before_cursor_execute", remember)
    yield seen
    event.remove(store.engine, "before_cursor_execute", remember)


def test_sql_audit_store_plays_the_audit_store_role(store: SqlAuditStore) -> None:
    role: AuditStore = store

    role.ping()


def test_recording_1000_outcomes_in_one_call_lands_1000_rows(store: SqlAuditStore) -> None:
    store.record("run-1", [outcome(f"m{i}") for i in range(1000)])

    assert count_outcome_rows(store) == 1000


def test_recording_a_batch_sends_one_insert_executed_for_all_rows(
    store: SqlAuditStore, statements: list[tuple[str, bool]]
) -> None:
    store.record("run-1", [outcome(f"m{i}") for i in range(500)])

    inserts = [(sql, many) for sql, many in statements if sql.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert inserts[0][1] is True


def test_recording_no_outcomes_does_not_touch_the_database() -> None:
    store = SqlAuditStore(UNREACHABLE_PG)

    store.record("run-1", [])


def test_every_row_of_a_batch_carries_its_run_id_and_recording_time(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    store.record("run-1", [outcome("m1"), outcome("m2", status="dead_lettered")], at=T0)

    rows = queries.outcomes()
    assert {row.run_id for row in rows} == {"run-1"}
    assert {row.recorded_at for row in rows} == {T0}


def test_admin_actions_are_recorded_without_a_run(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    store.record(None, [outcome("m1", status="requeued"), outcome("m2", status="purged")])

    assert {(row.message_id, row.run_id, row.status) for row in queries.outcomes()} == {
        ("m1", None, "requeued"),
        ("m2", None, "purged"),
    }


def test_recording_time_defaults_to_now_in_utc(store: SqlAuditStore, queries: AuditQueries) -> None:
    before = datetime.now(UTC)
    store.record("run-1", [outcome()])
    after = datetime.now(UTC)

    (row,) = queries.outcomes()
    assert row.recorded_at.tzinfo is UTC
    assert before <= row.recorded_at <= after


def test_a_time_given_in_another_zone_comes_back_as_the_same_instant_in_utc(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    paris_summer = timezone(timedelta(hours=2))
    store.record("run-1", [outcome()], at=datetime(2024, 5, 1, 14, 0, 0, 123456, paris_summer))

    (row,) = queries.outcomes()
    assert row.recorded_at == datetime(2024, 5, 1, 12, 0, 0, 123456, UTC)
    assert row.recorded_at.tzinfo is UTC


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda s: s.record("run-1", [outcome()], at=datetime(2024, 5, 1)), id="record"
        ),
        pytest.param(
            lambda s: s.start_run("run-1", "l", "w", datetime(2024, 5, 1)), id="start_run"
        ),
        pytest.param(
            lambda s: s.finish_run(report(finished_at=datetime(2024, 5, 1))), id="finish_run"
        ),
    ],
)
def test_a_naive_datetime_is_refused_because_its_zone_would_be_a_guess(
    store: SqlAuditStore, write: Callable[[SqlAuditStore], None]
) -> None:
    with pytest.raises(InvalidRecord, match="timezone-aware"):
        write(store)


def test_credentials_in_a_reason_are_masked_before_they_reach_a_row(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    reason = "ConnectionError: amqp://guest:hunter2@rabbit:5672// refused"
    store.record("run-1", [outcome(status="returned", reason=reason)])

    (row,) = queries.outcomes()
    assert row.reason == "ConnectionError: amqp://guest:***@rabbit:5672// refused"


def test_text_no_column_can_hold_is_stored_as_visible_escapes_and_still_found(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    # Both can come out of a poison entry's JSON ("\u0000", "\ud800"); failing the row would
    # stop every replay run at that entry.
    nul_id, surrogate_reason = "id\x00with-nul", "bad \ud800 text"
    store.record("run-1", [outcome(nul_id, status="dead_lettered", reason=surrogate_reason)])

    (row,) = queries.outcomes(message_id=nul_id)
    assert row.message_id == "id\\x00with-nul"
    assert row.reason == "bad \\ud800 text"


def test_an_outcome_with_an_unknown_status_cannot_be_built() -> None:
    with pytest.raises(InvalidRecord, match="unknown outcome status 'sent'; valid: republished"):
        outcome(status="sent")


def test_a_run_report_must_say_the_run_completed_or_stopped() -> None:
    with pytest.raises(InvalidRecord, match="completed, stopped"):
        report(status="running")


def test_a_run_id_longer_than_a_uuid_is_refused_on_every_database(store: SqlAuditStore) -> None:
    with pytest.raises(InvalidRecord, match="at most 36"):
        store.record("r" * 37, [outcome()])


def test_start_run_records_a_running_run(store: SqlAuditStore, queries: AuditQueries) -> None:
    store.start_run("run-1", "domain.events", "host-a:123", T0)

    run = queries.run("run-1")
    assert run is not None
    assert (run.status, run.source_list, run.worker, run.started_at) == (
        "running",
        "domain.events",
        "host-a:123",
        T0,
    )
    assert (run.republished, run.dead_lettered, run.returned, run.recovered) == (0, 0, 0, 0)
    assert (run.finished_at, run.duration_seconds, run.stop_reason) == (None, None, None)


def test_finish_run_records_how_the_run_ended_with_its_counts(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    store.start_run("run-1", "domain.events", "host-a:123", T0)

    store.finish_run(
        report(status="stopped", stop_reason="BrokerUnavailable: amqp://u:pw@rabbit// down")
    )

    run = queries.run("run-1")
    assert run is not None
    assert (run.status, run.stop_reason) == (
        "stopped",
        "BrokerUnavailable: amqp://u:***@rabbit// down",
    )
    assert (run.republished, run.dead_lettered, run.returned, run.recovered) == (7, 2, 1, 3)
    assert (run.started_at, run.finished_at, run.duration_seconds) == (
        T0,
        T0 + timedelta(seconds=4),
        4.0,
    )


def test_finish_run_records_the_run_even_when_start_run_never_landed(
    store: SqlAuditStore, queries: AuditQueries
) -> None:
    store.finish_run(report())

    run = queries.run("run-1")
    assert run is not None
    assert (run.status, run.worker, run.started_at, run.republished) == (
        "completed",
        "host-a:123",
        T0,
        7,
    )


def test_starting_the_same_run_twice_is_refused_as_an_invalid_record(store: SqlAuditStore) -> None:
    store.start_run("run-1", "domain.events", "host-a:123", T0)

    with pytest.raises(InvalidRecord, match="start run run-1 rejected"):
        store.start_run("run-1", "domain.events", "host-a:123", T0)


def test_ping_on_an_unreachable_postgresql_fails_fast_without_revealing_the_password() -> None:
    store = SqlAuditStore(UNREACHABLE_PG)
    started = time.monotonic()

    with pytest.raises(AuditUnavailable) as raised:
        store.ping()

    assert time.monotonic() - started < 2
    assert "secret" not in str(raised.value)
    assert "postgres:***@127.0.0.1:1" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_ping_on_a_sqlite_file_that_cannot_be_opened_raises_audit_unavailable(
    tmp_path: Path,
) -> None:
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'audit.db'}")

    with pytest.raises(AuditUnavailable, match="unable to open database file"):
        store.ping()


def test_ping_against_a_server_that_never_answers_gives_up_after_the_connect_timeout() -> None:
    # A listening socket nobody accepts from: the TCP handshake succeeds, then silence, like a
    # hung server. libpq counts whole seconds and waits at least 2.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        store = SqlAuditStore(
            f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/test", connect_timeout=1
        )
        started = time.monotonic()

        with pytest.raises(AuditUnavailable, match="timeout"):
            store.ping()

    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda s: s.start_run("run-1", "l", "w", T0), id="start_run"),
        pytest.param(lambda s: s.record("run-1", [outcome()]), id="record"),
        pytest.param(lambda s: s.finish_run(report()), id="finish_run"),
        pytest.param(lambda s: s.upgrade(), id="upgrade"),
        pytest.param(lambda s: s.current_revision(), id="current_revision"),
        pytest.param(lambda s: AuditQueries(s).outcomes(), id="outcomes"),
        pytest.param(lambda s: AuditQueries(s).runs(), id="runs"),
    ],
)
def test_every_operation_on_an_unreachable_database_raises_audit_unavailable(
    use: Callable[[SqlAuditStore], object],
) -> None:
    with pytest.raises(AuditUnavailable) as raised:
        use(SqlAuditStore(UNREACHABLE_PG))

    assert "secret" not in str(raised.value)


def test_writing_to_a_database_without_the_schema_raises_audit_unavailable(
    empty_store: SqlAuditStore,
) -> None:

    with pytest.raises(AuditUnavailable, match="record 1 outcome"):
        empty_store.record("run-1", [outcome()])


def test_a_malformed_url_raises_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        SqlAuditStore("postgresql+psycopg://postgres:secret@host:notaport/test")

    assert "secret" not in str(raised.value)
    assert raised.value.__cause__ is None


def test_an_unknown_database_kind_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"nosuchdb://u:\*\*\*@host/db"):
        SqlAuditStore("nosuchdb://u:secret@host/db")


def test_from_settings_uses_the_audit_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-settings.db'}"

    store = SqlAuditStore.from_settings(Settings(audit_db_url=url))

    assert repr(store) == f"SqlAuditStore({url!r})"


def test_the_store_repr_hides_the_password() -> None:
    assert "secret" not in repr(SqlAuditStore(UNREACHABLE_PG))
