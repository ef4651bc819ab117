"""Errors of the audit package, and the one place driver errors become fallbackbus errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util.exc import CommandError
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from fallbackbus.errors import AuditUnavailable, FallbackBusError
from fallbackbus.secrets import describe_error


class InvalidQuery(FallbackBusError, ValueError):
    """An audit query was given an argument it cannot use (unknown status, naive datetime...)."""


class InvalidRecord(FallbackBusError, ValueError):
    """An outcome or run report cannot be written as given (unknown status, naive datetime...)."""


def _one_line(exc: BaseException) -> str:
    # A DBAPIError's own text appends the SQL and its parameters (message data) to the driver's
    # message; the driver's message alone says what went wrong and nothing more.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return " ".join(describe_error(cause).split())


@contextmanager
def translated(action: str, where: str) -> Iterator[None]:
    """Turn any SQLAlchemy, DBAPI or Alembic error raised inside into a fallbackbus error.

    ``where`` names the database with its password already hidden; ``action`` says what was
    being done. Callers of the audit package never see a driver exception.
    """
    try:
        yield
    except IntegrityError as exc:
        # A constraint violation is the caller's mistake (a run id used twice), not an outage.
        raise InvalidRecord(f"audit database {where}: {action} rejected: {_one_line(exc)}") from exc
    except (SQLAlchemyError, CommandError) as exc:
        raise AuditUnavailable(
            f"audit database {where}: {action} failed: {_one_line(exc)}"
        ) from exc
