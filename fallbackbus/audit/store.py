"""The audit-store role: where replay runs and message outcomes are written.

:class:`AuditStore` is what the replay engine needs; :class:`SqlAuditStore` implements it on any
SQLAlchemy database (SQLite by default, PostgreSQL in production) with the schema managed by the
Alembic migrations shipped in ``fallbackbus/audit/migrations``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, insert, inspect, make_url, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError

from fallbackbus.audit.errors import InvalidRecord, translated
from fallbackbus.audit.models import VERSION_TABLE, OutcomeRecord, RunRecord, aware_utc
from fallbackbus.audit.records import Outcome, RunReport
from fallbackbus.errors import AuditUnavailable, ConfigurationError
from fallbackbus.secrets import describe_error, mask_url
from fallbackbus.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_HINT = "run `fallbackbus db upgrade`"
RUN_ID_LENGTH = 36


class AuditStore(Protocol):
    """Where a replay run writes what it did.

    Every method raises ``AuditUnavailable`` when the database cannot be used, and
    ``InvalidRecord`` for input that could never be written (retrying cannot help).
    """

    def ping(self) -> None:
        """Raise ``AuditUnavailable`` unless outcomes can be written right now."""

    def start_run(self, run_id: str, source_list: str, worker: str, started_at: datetime) -> None:
        """Record that a run began."""

    def record(
        self, run_id: str | None, outcomes: Sequence[Outcome], at: datetime | None = None
    ) -> None:
        """Write one row per outcome, all or none."""

    def finish_run(self, report: RunReport) -> None:
        """Record how a run ended, with its counts."""


STATEMENT_TIMEOUT_MS = 30_000
TCP_USER_TIMEOUT_MS = 30_000


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations; ``connection`` is the one they run on."""
    config = Config()
    # The value goes through configparser interpolation, where a bare ``%`` is an error.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    # The migration files do not change while the process runs; parse them once.
    return ScriptDirectory.from_config(alembic_config())


def _create_engine(url: str, connect_timeout: float) -> Engine:
    try:
        parsed = make_url(_escape_at_in_password(url))
    except (ArgumentError, ValueError):
        # ``from None``: the parse error can quote the raw URL, password included.
        raise ConfigurationError(f"not a database URL: {mask_url(url)!r}") from None
    try:
        # pool_pre_ping: a connection the database dropped (restart, failover) is replaced
        # instead of failing the next write.
        engine = create_engine(
            parsed, pool_pre_ping=True, connect_args=_connect_args(parsed, connect_timeout)
        )
    except (ArgumentError, ImportError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise ConfigurationError(
            f"cannot use audit database {shown}: {describe_error(exc)}"
        ) from exc
    if parsed.get_backend_name() == "postgresql":
        event.listen(engine, "connect", _bound_statements)
    return engine


def _bound_statements(dbapi_connection: Any, _record: Any) -> None:
    # A database that takes a query and never answers must not hold a replay run for ever: the
    # server gives up on any statement after this long (an audit batch takes milliseconds).
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    dbapi_connection.commit()


def _escape_at_in_password(url: str) -> str:
    """Percent-encode ``@`` in a URL's password: SQLAlchemy splits user info at the first ``@``,
    which would hand the rest of the password to the driver as the host name."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or authority.count("@") < 2:
        return url
    userinfo, _, host = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{user}{colon}{password.replace('@', '%40')}@{host}{slash}{path}"


def _connect_args(url: URL, connect_timeout: float) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        # How long to wait for another process's write lock before giving up.
        return {"timeout": connect_timeout}
    if url.get_driver_name() in {"psycopg", "psycopg2"}:
        # libpq takes whole seconds (and waits at least 2); without it a black-holed host
        # stalls the caller for the OS's TCP timeout, minutes.
        return {
            "connect_timeout": max(1, math.ceil(connect_timeout)),
            # A peer that stops acknowledging our packets (dead host, cut link) is dropped
            # after this long instead of the kernel's default of many minutes.
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
    return {}


class SqlAuditStore:
    """The audit store on a SQL database through SQLAlchemy.

    Opens no connection until first used. ``engine``, for applications that already have one, is
    used instead of building one from ``url``.
    """

    def __init__(
        self, url: str, *, engine: Engine | None = None, connect_timeout: float = 2.0
    ) -> None:
        self._engine = engine if engine is not None else _create_engine(url, connect_timeout)
        self._where = mask_url(self._engine.url.render_as_string(hide_password=True))

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlAuditStore:
        return cls(settings.audit_db_url, connect_timeout=settings.connect_timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r})"

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def transaction(self, action: str) -> Iterator[Connection]:
        """A connection inside one transaction; any database error leaves as a fallbackbus one.

        ``action`` says what was being done, for the error message.
        """
        with translated(action, self._where), self._engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        with self.transaction("ping") as connection:
            connection.execute(text("SELECT 1"))
            current = _current_revision(connection)
        head = self.head_revision()
        if current == head:
            return
        if current is None:
            problem = "has no fallbackbus audit tables"
        elif current in _known_revisions():
            problem = f"has audit schema revision {current!r}, this fallbackbus needs {head!r}"
        else:
            # Migrated by a newer fallbackbus: upgrading this one cannot help.
            raise AuditUnavailable(
                f"audit database {self._where} has audit schema revision {current!r}, unknown "
                f"to this fallbackbus (needs {head!r}); upgrade fallbackbus"
            )
        raise AuditUnavailable(f"audit database {self._where} {problem}; {UPGRADE_HINT}")

    def start_run(self, run_id: str, source_list: str, worker: str, started_at: datetime) -> None:
        row = {
            "run_id": _checked_run_id(run_id),
            "source_list": source_list,
            "worker": worker,
            "started_at": aware_utc(started_at, "started_at", InvalidRecord),
            "status": "running",
        }
        with self.transaction(f"start run {run_id}") as connection:
            connection.execute(insert(RunRecord).values(row))

    def record(
        self, run_id: str | None, outcomes: Sequence[Outcome], at: datetime | None = None
    ) -> None:
        """Write one row per outcome: one transaction, one INSERT executed for every row.

        ``at`` (default: now) is the ``recorded_at`` of every row. All rows land, or none do and
        ``AuditUnavailable`` is raised, so the caller knows whether the batch is audited.
        """
        if not outcomes:
            return
        if run_id is not None:
            _checked_run_id(run_id)
        recorded_at = datetime.now(UTC) if at is None else aware_utc(at, "at", InvalidRecord)
        rows = [
            {
                "run_id": run_id,
                "message_id": outcome.message_id,
                "message_type": outcome.message_type,
                "organization": outcome.organization,
                "service": outcome.service,
                "source_list": outcome.source_list,
                "routing_key": outcome.routing_key,
                "status": outcome.status,
                "reason": _masked(outcome.reason),
                "attempts": outcome.attempts,
                "recorded_at": recorded_at,
            }
            for outcome in outcomes
        ]
        with self.transaction(f"record {len(rows)} outcome(s)") as connection:
            # A list of parameter sets makes one executemany, which psycopg pipelines: one round
            # trip per batch, not per message. ``insert().values(rows)`` measured 10x slower (it
            # compiles a fresh statement with a bind parameter per cell on every call).
            connection.execute(insert(OutcomeRecord), rows)

    def finish_run(self, report: RunReport) -> None:
        ending = {
            "status": report.status,
            "stop_reason": _masked(report.stop_reason),
            "republished": report.republished,
            "dead_lettered": report.dead_lettered,
            "returned": report.returned,
            "recovered": report.recovered,
            "finished_at": aware_utc(report.finished_at, "finished_at", InvalidRecord),
            "duration_seconds": report.duration_seconds,
        }
        with self.transaction(f"finish run {report.run_id}") as connection:
            updated = connection.execute(
                update(RunRecord).where(RunRecord.run_id == report.run_id).values(ending)
            )
            if updated.rowcount == 0:
                # start_run's row is missing (its write failed, or it was never called); the
                # report carries everything, so the run is recorded rather than lost.
                beginning = {
                    "run_id": _checked_run_id(report.run_id),
                    "source_list": report.source_list,
                    "worker": report.worker,
                    "started_at": aware_utc(report.started_at, "started_at", InvalidRecord),
                }
                connection.execute(insert(RunRecord).values({**beginning, **ending}))

    def upgrade(self) -> None:
        """Bring the schema to the newest revision shipped with this fallbackbus."""
        with self.transaction("upgrade schema") as connection:
            command.upgrade(alembic_config(connection), "head")

    def current_revision(self) -> str | None:
        """The schema revision in the database; ``None`` if there are no audit tables yet."""
        with self.transaction("read schema revision") as connection:
            return _current_revision(connection)

    def head_revision(self) -> str:
        """The schema revision this fallbackbus needs."""
        head = _scripts().get_current_head()
        assert head is not None, "fallbackbus ships at least one migration"
        return head

    def dispose(self) -> None:
        """Close the pooled connections; the store reconnects if used again."""
        self._engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    # Read the version table directly: MigrationContext would log two INFO lines per ping, i.e.
    # per replay run, into every worker's log.
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608 - constant name
    return None if revision is None else str(revision)


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def _checked_run_id(run_id: str) -> str:
    # Checked here because SQLite would store a longer id silently where PostgreSQL refuses it.
    if len(run_id) > RUN_ID_LENGTH:
        raise InvalidRecord(f"run id must be at most {RUN_ID_LENGTH} characters: {run_id!r}")
    return run_id


def _masked(reason: str | None) -> str | None:
    # Reasons are often exception texts that can quote a URL; credentials never reach a row.
    return None if reason is None else mask_url(reason)
