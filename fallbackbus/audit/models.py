"""SQLAlchemy models of the audit trail: one row per replay run, one row per message outcome.

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares the
two, so a change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint and index names, identical on SQLite and PostgreSQL, so migrations can
# name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Not Alembic's default ``alembic_version``: the audit tables often live in an application's
# database that already has its own Alembic history.
VERSION_TABLE = "fallbackbus_alembic_version"


def aware_utc(value: datetime, what: str, error: type[Exception]) -> datetime:
    """``value`` converted to UTC; a naive datetime raises ``error`` (its zone is a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise error(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC and always read back UTC-aware.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no time zones: the value is stored as naive
    UTC text, which also keeps lexical order equal to time order for range queries.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = aware_utc(value, "an audit timestamp", ValueError)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def storable_text(text: str) -> str:
    """``text`` with what no database column can hold written as visible escapes.

    Poison entries carry anything JSON allows: NUL (PostgreSQL text refuses it) and lone
    surrogates from ``"\\ud800"`` escapes (no UTF-8 form at all). Failing their audit row would stop
    every replay run at the same entry; an escaped copy keeps the row and the list moving.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class StorableString(TypeDecorator[str]):
    """A string column that takes any Python ``str`` (see :func:`storable_text`).

    Also applied to query filter values, so a filter matches what was stored.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable_text(value)


class StorableText(StorableString):
    """:class:`StorableString` for long, free text (reasons)."""

    impl = Text
    cache_ok = True  # Not inherited: SQLAlchemy asks each TypeDecorator class to say so.


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunRecord(Base):
    """One replay run of one source list."""

    __tablename__ = "fallbackbus_runs"

    run_id: Mapped[str] = mapped_column(StorableString(36), primary_key=True)
    source_list: Mapped[str] = mapped_column(StorableString)
    worker: Mapped[str] = mapped_column(StorableString)
    """``hostname:pid`` of the worker that ran it."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(StorableString, index=True)
    """``running``, ``completed`` or ``stopped`` (ended early, see ``stop_reason``)."""
    stop_reason: Mapped[str | None] = mapped_column(StorableText)
    republished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dead_lettered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    returned: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    recovered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    duration_seconds: Mapped[float | None] = mapped_column(Float)


class OutcomeRecord(Base):
    """What happened to one message: republished, dead-lettered, returned, requeued or purged."""

    __tablename__ = "fallbackbus_outcomes"
    # One index per question operators ask: "what happened lately", "...with this status",
    # "...to this type", "...to this service", "what happened to this message / in this run".
    __table_args__ = (
        Index(None, "recorded_at"),
        Index(None, "status", "recorded_at"),
        Index(None, "message_type", "recorded_at"),
        Index(None, "organization", "service", "recorded_at"),
        Index(None, "message_id"),
        Index(None, "run_id"),
    )

    # SQLite only auto-increments an ``INTEGER PRIMARY KEY`` (the rowid), not a BIGINT one.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str | None] = mapped_column(StorableString(36))
    """``None`` for admin actions (``requeued``, ``purged``) that happen outside any run."""
    message_id: Mapped[str] = mapped_column(StorableString)
    message_type: Mapped[str | None] = mapped_column(StorableString)
    """``None`` when the entry was too broken to tell (poison entries)."""
    organization: Mapped[str | None] = mapped_column(StorableString)
    service: Mapped[str | None] = mapped_column(StorableString)
    source_list: Mapped[str] = mapped_column(StorableString)
    routing_key: Mapped[str | None] = mapped_column(StorableString)
    status: Mapped[str] = mapped_column(StorableString)
    reason: Mapped[str | None] = mapped_column(StorableText)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
