"""The ``fallbackbus`` command line: status, accounting, replay, audit, dead letters, schema.

Thin over :mod:`fallbackbus.admin`, :mod:`fallbackbus.audit` and :mod:`fallbackbus.replay`: each
command parses its options, calls one library function and prints the answer as a table (people)
or as JSON or CSV (scripts). Every error leaves as one line on stderr and an exit code, never a
traceback, and every printed value has its passwords masked.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from fallbackbus import admin
from fallbackbus.audit import OUTCOME_STATUSES, AuditQueries, InvalidQuery, InvalidRecord
from fallbackbus.errors import (
    AuditUnavailable,
    BrokerUnavailable,
    ConfigurationError,
    FallbackBusError,
    FallbackUnavailable,
    InvalidMessage,
    ReplayError,
)
from fallbackbus.replay import COMPLETED, SKIPPED, ReplayReport, replay_list
from fallbackbus.secrets import describe_error, mask_url
from fallbackbus.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
"""The accounting does not balance, what was asked for does not exist, or it was declined."""
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
"""Redis, RabbitMQ or the audit database is unreachable (or the audit schema is behind)."""
EXIT_BUG = 4

_EXIT_CODES: tuple[tuple[type[FallbackBusError], int], ...] = (
    (admin.NotFound, EXIT_FAILED),
    (admin.InvalidSelection, EXIT_BAD_INPUT),
    (admin.ConfirmationRequired, EXIT_BAD_INPUT),
    (InvalidQuery, EXIT_BAD_INPUT),
    (InvalidRecord, EXIT_BAD_INPUT),
    (InvalidMessage, EXIT_BAD_INPUT),
    (ConfigurationError, EXIT_BAD_INPUT),
    (AuditUnavailable, EXIT_UNREACHABLE),
    (BrokerUnavailable, EXIT_UNREACHABLE),
    (FallbackUnavailable, EXIT_UNREACHABLE),
    (ReplayError, EXIT_UNREACHABLE),
)

HELP = """Operate fallbackbus: what is waiting, what was replayed, what was parked and why,
and whether anything was lost.

Configuration comes from the `FALLBACKBUS_*` environment variables, as for the library;
`--redis-url`, `--rabbitmq-url` and `--db-url` override them. Every command prints a table, or
`--format json` / `--format csv` for scripts. Passwords are masked in every output.

Exit codes:

* **0** ok
* **1** the accounting does not balance, or what was asked for does not exist or was declined
* **2** bad input
* **3** Redis, RabbitMQ or the audit database is unreachable (or the audit schema is behind)
* **4** an unexpected error (a bug: please report it)
"""

Format = Literal["table", "json", "csv"]
FormatOption = Annotated[
    Format,
    typer.Option(
        "--format", "-f", help="table for people; json or csv (the main table) for scripts"
    ),
]
SINCE_HELP = "from this time on: ISO date or time (UTC unless it has an offset), or an age: 30m, 2d"
UNTIL_HELP = "before this time: same forms as --since"
SinceOption = Annotated[str | None, typer.Option("--since", help=SINCE_HELP, show_default=False)]
UntilOption = Annotated[str | None, typer.Option("--until", help=UNTIL_HELP, show_default=False)]
LimitOption = Annotated[int, typer.Option("--limit", min=1, help="rows per page")]
OffsetOption = Annotated[int, typer.Option("--offset", min=0, help="rows to skip")]
ListsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--list", "-l", help="a fallback list (repeatable); default: every configured list"
    ),
]
OneListOption = Annotated[
    str | None,
    typer.Option(
        "--list", "-l", help="the fallback list; needed when several lists are configured"
    ),
]
SelectIndexes = Annotated[
    list[int] | None,
    typer.Option("--index", "-i", help="position shown by `dead-letters list` (repeatable)"),
]
SelectIds = Annotated[
    list[str] | None, typer.Option("--message-id", "-m", help="message id (repeatable)")
]
SelectAll = Annotated[bool, typer.Option("--all", help="every dead letter of the list")]


class _Cli(TyperGroup):
    """The root command: turns every error into one line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(_Cli, self).main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        code = _exit_code(run)
        if standalone_mode:
            sys.exit(code)
        return code


def _exit_code(run: Callable[[], Any]) -> int:
    try:
        result = run()
    except typer.TyperException as exc:  # usage errors: bad option, missing argument, bad choice
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        _error(f"{exc.format_message()}{hint}")
        return exc.exit_code
    except typer.Abort:
        _error("aborted")
        return EXIT_FAILED
    except FallbackBusError as exc:
        _error(str(exc))
        return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), EXIT_FAILED)
    except Exception as exc:
        # A bug: still one masked line, since a traceback can quote a URL with its password.
        _error(f"unexpected error (a bug, please report it): {describe_error(exc)}")
        return EXIT_BUG
    return result if isinstance(result, int) else EXIT_OK


app = typer.Typer(
    cls=_Cli,
    help=HELP,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
audit_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Query the audit trail: one row per message per replay outcome.",
)
dead_letters_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Entries replay parked because they can never be published: list, requeue, purge.",
)
db_app = typer.Typer(rich_markup_mode="markdown", help="The audit database's schema.")
app.add_typer(audit_app, name="audit")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(db_app, name="db")


@dataclass(frozen=True, slots=True)
class _Overrides:
    redis_url: str | None
    rabbitmq_url: str | None
    db_url: str | None

    def settings(self) -> Settings:
        return Settings.from_env(
            redis_url=self.redis_url, rabbitmq_url=self.rabbitmq_url, audit_db_url=self.db_url
        )


@app.callback()
def _options(
    ctx: typer.Context,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", help="overrides FALLBACKBUS_REDIS_URL", show_default=False),
    ] = None,
    rabbitmq_url: Annotated[
        str | None,
        typer.Option(
            "--rabbitmq-url", help="overrides FALLBACKBUS_RABBITMQ_URL", show_default=False
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option("--db-url", help="overrides FALLBACKBUS_AUDIT_DB_URL", show_default=False),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log what the library does, on stderr")
    ] = False,
) -> None:
    ctx.call_on_close(_configure_logging(verbose))
    ctx.obj = _Overrides(redis_url, rabbitmq_url, db_url)


def _settings(ctx: typer.Context) -> Settings:
    overrides = ctx.find_object(_Overrides)
    assert overrides is not None, "the root callback always sets it"
    return overrides.settings()


# -- status and accounting -------------------------------------------------------------------


@app.command()
def status(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """What waits in each list, what is parked, and whether the services answer.

    Per configured list: entries waiting, entries claimed by unfinished runs (processing lists),
    the oldest entry's age and the dead letters; then Redis (and its persistence), RabbitMQ and
    the audit database (and its schema). Exit code 3 if one of them is unreachable.
    """
    result = admin.status(_settings(ctx))
    lists = [
        {
            "list": item.name,
            "key": item.key,
            "waiting": item.length,
            "processing": sum(p.length for p in item.processing),
            "oldest_stored_at": item.oldest_stored_at,
            "oldest_age_seconds": item.oldest_age_seconds,
            "dead_letters": item.dead_letters,
        }
        for item in result.lists
    ]
    processing = [
        {"list": item.name, **asdict(p)} for item in result.lists for p in item.processing
    ]
    persistence = {True: "on", False: "OFF: enable appendonly", None: "unknown"}
    services = [
        {**asdict(result.redis), "note": f"persistence {persistence[result.redis_persistence]}"},
        {**asdict(result.rabbitmq), "note": None},
        {
            "name": "audit database",
            "url": result.audit.url,
            "reachable": result.audit.reachable,
            "detail": result.audit.detail,
            "note": f"schema {result.audit.revision or 'none'} (needs {result.audit.head})",
        },
    ]
    _print(
        fmt,
        [
            _View(
                "Lists",
                [
                    _Column("list", "List"),
                    _Column("waiting", "Waiting", numeric=True),
                    _Column("processing", "Processing", numeric=True),
                    _Column("oldest_age_seconds", "Oldest waiting", numeric=True, show=_age),
                    _Column("dead_letters", "Dead letters", numeric=True),
                ],
                lists,
                empty="Redis is unreachable",
            ),
            _View(
                "Processing lists (claimed by a run that has not finished)",
                [
                    _Column("list", "List"),
                    _Column("run_id", "Run"),
                    _Column("length", "Entries", numeric=True),
                    _Column("age_seconds", "Last claim", numeric=True, show=_ago),
                    _Column("expires_in_seconds", "Recovered", numeric=True, show=_lease),
                ],
                processing,
                hide_when_empty=True,
            ),
            _View(
                "Services",
                [
                    _Column("name", "Service"),
                    _Column("url", "URL"),
                    _Column("reachable", "State", show=_reachable),
                    _Column("note", "Note"),
                    _Column("detail", "Detail"),
                ],
                services,
            ),
        ],
        document={
            "lists": [
                {**row, "processing_lists": [p for p in processing if p["list"] == row["list"]]}
                for row in lists
            ],
            "redis": {**services[0], "persistence": result.redis_persistence},
            "rabbitmq": services[1],
            "audit": {
                **services[2],
                "revision": result.audit.revision,
                "head": result.audit.head,
                "schema_current": result.audit.schema_current,
            },
            "problems": result.problems,
        },
    )
    for problem in result.problems:
        _error(problem)
    if result.problems:
        raise typer.Exit(EXIT_UNREACHABLE)


@app.command()
def accounting(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """Check that nothing was lost: every message that fell back is accounted for.

    Per list, organization and service: fell back = republished + dead-lettered + purged +
    waiting (in the list or a processing list), and dead-lettered = parked (in the dead-letter
    list). Entries petisco wrote are counted once replay first moves them. Exit code 1 if it does
    not balance.
    """
    balances = admin.accounting(_settings(ctx))
    rows = [balance.as_dict() for balance in balances]
    _print(
        fmt,
        [
            _View(
                "Accounting",
                [
                    _Column("list_key", "List"),
                    _Column("organization", "Organization"),
                    _Column("service", "Service"),
                    _Column("fell_back", "Fell back", numeric=True),
                    _Column("republished", "Republished", numeric=True),
                    _Column("dead_lettered", "Dead-lettered", numeric=True),
                    _Column("purged", "Purged", numeric=True),
                    _Column("waiting", "Waiting", numeric=True),
                    _Column("parked", "Parked", numeric=True),
                    _Column("uncounted", "Uncounted", numeric=True),
                    _Column("difference", "Difference", numeric=True),
                    _Column("balanced", "Balanced", show=_yes_no),
                ],
                rows,
                caption=(
                    "fell back = republished + dead-lettered + purged + waiting; "
                    "dead-lettered = parked; uncounted: written by petisco or by hand, "
                    "counted once replay moves them"
                ),
                empty="nothing has fallen back",
            )
        ],
        document=rows,
    )
    unbalanced = [b for b in balances if not b.balanced]
    for b in unbalanced:
        problem = (
            f"{b.difference} fell back but unaccounted for"
            if b.difference > 0
            else f"{-b.difference} accounted for but never counted as fell back"
            if b.difference < 0
            else f"{b.dead_lettered} counted dead-lettered, {b.parked} parked"
        )
        changing = "" if b.consistent else " (the list kept changing while read: run it again)"
        _error(
            f"accounting does not balance for {b.organization}/{b.service} in {b.list_key}: "
            f"{problem}{changing}"
        )
    if unbalanced:
        raise typer.Exit(EXIT_FAILED)


# -- replay ----------------------------------------------------------------------------------


@app.command()
def replay(
    ctx: typer.Context,
    lists: ListsOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="at most this many entries per list", show_default=False
        ),
    ] = None,
    fmt: FormatOption = "table",
) -> None:
    """Replay fallback lists now, as the Celery task does.

    One locked run per list (a list another run holds is skipped), with a progress bar on large
    backlogs. Exit code 3 if a run stopped because a service is unreachable.
    """
    settings = _settings(ctx)
    reports = [_replay(name, settings, limit, fmt) for name in lists or settings.replay_lists]
    rows = [report.as_dict() for report in reports]
    _print(
        fmt,
        [
            _View(
                "Replay",
                [
                    _Column("source_list", "List"),
                    *_RUN_COUNTS,
                    _Column("run_id", "Run"),
                    _Column("stop_reason", "Note"),
                ],
                rows,
            )
        ],
        document=rows,
    )
    stopped = [r for r in reports if r.status not in (COMPLETED, SKIPPED)]
    for report in stopped:
        _error(f"replay of {report.source_list} stopped: {report.stop_reason}")
    if stopped:
        raise typer.Exit(EXIT_UNREACHABLE)


def _replay(name: str, settings: Settings, limit: int | None, fmt: Format) -> ReplayReport:
    # Also checks that Redis answers, before replay_list builds its clients.
    total = min(admin.backlog(name, settings), limit or settings.replay_max_entries)
    if fmt != "table" or total <= settings.replay_batch_size:
        return replay_list(name, settings=settings, limit=limit)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=_console(stderr=True)) as progress:
        task = progress.add_task(f"replaying {name}", total=total)

        def advance(report: ReplayReport) -> None:
            done = report.republished + report.dead_lettered + report.returned
            progress.update(task, completed=done)

        return replay_list(name, settings=settings, limit=limit, on_batch=advance)


# -- audit -----------------------------------------------------------------------------------


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    since: SinceOption = None,
    until: UntilOption = None,
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help=f"outcome status (repeatable): {', '.join(OUTCOME_STATUSES)}",
            show_default=False,
        ),
    ] = None,
    message_type: Annotated[
        str | None, typer.Option("--type", "-t", help="message type, e.g. user.created")
    ] = None,
    organization: Annotated[str | None, typer.Option("--organization", "-o")] = None,
    service: Annotated[str | None, typer.Option("--service")] = None,
    message_id: Annotated[str | None, typer.Option("--message-id", "-m")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id")] = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="oldest row first")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Audit rows matching every filter given, newest first, a page at a time.

    An unknown status or message type is an error (exit code 2), not an empty answer.
    """
    window = _window(since, until)
    with admin.audit_queries(_settings(ctx)) as queries:
        if message_type is not None:
            _check_type(queries, message_type)
        rows = queries.outcomes(
            since=window[0],
            until=window[1],
            statuses=list(statuses or ()),
            message_type=message_type,
            organization=organization,
            service=service,
            message_id=message_id,
            run_id=run_id,
            limit=limit,
            offset=offset,
            newest_first=not oldest_first,
        )
    documents = [asdict(row) for row in rows]
    more = f"; --offset {offset + limit} for more" if len(rows) == limit else ""
    _print(
        fmt,
        [
            _View(
                "Audit",
                _outcome_columns(),
                documents,
                caption=f"rows {offset + 1}-{offset + len(rows)}{more}" if rows else None,
                empty="no audit rows match",
            )
        ],
        document=documents,
    )


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="the message id")],
    fmt: FormatOption = "table",
) -> None:
    """Everything that happened to one message, oldest first.

    Exit code 1 if the audit has no row for it.
    """
    with admin.audit_queries(_settings(ctx)) as queries:
        rows = list(_all_outcomes(queries, message_id))
    if not rows:
        raise admin.NotFound(f"no audit row for message id {message_id!r}")
    documents = [asdict(row) for row in rows]
    columns = [c for c in _outcome_columns() if c.key != "message_id"]
    _print(fmt, [_View(f"Message {message_id}", columns, documents)], document=documents)


def _all_outcomes(queries: AuditQueries, message_id: str) -> Iterator[Any]:
    page = 500
    offset = 0
    while True:
        rows = queries.outcomes(
            message_id=message_id, limit=page, offset=offset, newest_first=False
        )
        yield from rows
        if len(rows) < page:
            return
        offset += page


@audit_app.command("summary")
def audit_summary(
    ctx: typer.Context,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="runs shown")] = 20,
    fmt: FormatOption = "table",
) -> None:
    """Counts by message type and by status, and the replay runs of a window."""
    window = _window(since, until)
    with admin.audit_queries(_settings(ctx)) as queries:
        by_status = queries.outcome_counts(*window)
        by_type = queries.counts_by_type(*window)
        runs = queries.runs(*window, limit=limit)
    status_rows = [{"status": name, "total": total} for name, total in by_status.items()]
    type_rows = [row._asdict() for row in by_type]
    run_rows = [asdict(run) for run in runs]
    _print(
        fmt,
        [
            _View(
                "By message type",
                [
                    _Column("message_type", "Type"),
                    _Column("status", "Status"),
                    _Column("total", "Messages", numeric=True),
                ],
                type_rows,
                empty="no audit rows in this window",
            ),
            _View(
                "By status",
                [_Column("status", "Status"), _Column("total", "Messages", numeric=True)],
                status_rows,
            ),
            _View(
                "Runs",
                [
                    _Column("started_at", "Started (UTC)", show=_time),
                    _Column("source_list", "List"),
                    *_RUN_COUNTS,
                    _Column("stop_reason", "Note"),
                ],
                run_rows,
                empty="no runs in this window",
            ),
        ],
        document={"by_status": by_status, "by_type": type_rows, "runs": run_rows},
    )


def _outcome_columns() -> list[_Column]:
    return [
        _Column("recorded_at", "Recorded (UTC)", show=_time),
        _Column("status", "Status"),
        _Column("message_id", "Message id"),
        _Column("message_type", "Type"),
        _Column("organization", "Organization"),
        _Column("service", "Service"),
        _Column("source_list", "List"),
        _Column("attempts", "Attempts", numeric=True),
        _Column("run_id", "Run"),
        _Column("reason", "Reason"),
    ]


_AGE = re.compile(r"(\d+)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    start, end = _when("--since", since, now), _when("--until", until, now)
    if start is not None and end is not None and start >= end:
        raise InvalidQuery(
            f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})"
        )
    return start, end


def _when(option: str, value: str | None, now: datetime) -> datetime | None:
    """An ISO date or time (UTC unless it has an offset), or an age (``90m``: 90 minutes ago)."""
    if value is None:
        return None
    if age := _AGE.fullmatch(value.strip().lower()):
        return now - timedelta(seconds=int(age[1]) * _SECONDS[age[2]])
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidQuery(
            f"{option} {value!r} is not a time: give an ISO date or time (2026-05-01, "
            "2026-05-01T12:00:00+02:00) or an age (45s, 30m, 12h, 2d, 1w)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _check_type(queries: AuditQueries, message_type: str) -> None:
    known = sorted({c.message_type for c in queries.counts_by_type() if c.message_type})
    if message_type not in known:
        listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise InvalidQuery(
            f"unknown message type {message_type!r}; types in the audit: {listed or 'none yet'}"
        )


# -- dead letters ----------------------------------------------------------------------------


def _dead_letter_columns() -> list[_Column]:
    return [
        _Column("list", "List"),
        _Column("index", "#", numeric=True),
        _Column("message_id", "Message id"),
        _Column("message_type", "Type"),
        _Column("organization", "Organization"),
        _Column("service", "Service"),
        _Column("dead_at", "Parked (UTC)", show=_iso_time),
        _Column("reason", "Reason"),
    ]


@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    lists: ListsOption = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    fmt: FormatOption = "table",
) -> None:
    """Parked entries and why, most recently parked first.

    The `#` column is what `--index` of requeue and purge selects.
    """
    settings = _settings(ctx)
    pages = [
        admin.list_dead_letters(name, limit=limit, offset=offset, settings=settings)
        for name in lists or settings.replay_lists
    ]
    rows = [{"list": page.list_key, **asdict(entry)} for page in pages for entry in page.entries]
    totals = ", ".join(f"{page.list_key}: {page.total}" for page in pages)
    _print(
        fmt,
        [
            _View(
                "Dead letters",
                _dead_letter_columns(),
                rows,
                caption=f"from offset {offset}; dead letters in all: {totals}",
                empty=f"no dead letters (from offset {offset}; in all: {totals})",
            )
        ],
        document=[
            {"list": p.list_key, "total": p.total, "offset": p.offset, "entries": p.entries}
            for p in pages
        ],
    )


@dead_letters_app.command("requeue")
def dead_letters_requeue(
    ctx: typer.Context,
    list_name: OneListOption = None,
    indexes: SelectIndexes = None,
    message_ids: SelectIds = None,
    everything: SelectAll = False,
    fmt: FormatOption = "table",
) -> None:
    """Move dead letters back to their list, to be replayed next.

    They go to the list's oldest end (the oldest parked first) with their attempts reset, and
    each one is audited as requeued. Select with `--index`, `--message-id` or `--all`.
    """
    settings = _settings(ctx)
    name = _one_list(settings, list_name)
    selector = admin.Selector(tuple(indexes or ()), tuple(message_ids or ()), everything)
    report = admin.requeue(name, selector, settings=settings)
    _print_action(fmt, report)


@dead_letters_app.command("purge")
def dead_letters_purge(
    ctx: typer.Context,
    list_name: OneListOption = None,
    indexes: SelectIndexes = None,
    message_ids: SelectIds = None,
    everything: SelectAll = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Delete dead letters for good, after asking.

    `--yes` skips the question. Each one is audited as purged. Select with `--index`,
    `--message-id` or `--all`. Exit code 1 if the question is declined.
    """
    settings = _settings(ctx)
    name = _one_list(settings, list_name)
    selector = admin.Selector(tuple(indexes or ()), tuple(message_ids or ()), everything)
    if not yes:
        try:
            admin.purge(name, selector, settings=settings)
        except admin.ConfirmationRequired as question:
            if question.count == 0:
                _print_action(fmt, admin.ActionReport("purged", question.list_key, ()))
                return
            prompt = f"Delete {question.count} dead letter(s) of {question.list_key} for good?"
            if not _confirm(prompt):
                _error("nothing purged")
                raise typer.Exit(EXIT_FAILED) from None
    _print_action(fmt, admin.purge(name, selector, confirm=True, settings=settings))


def _confirm(prompt: str) -> bool:
    """Ask on stderr (stdout may be JSON for a script); no answer at all is a no."""
    console = _console(stderr=True)
    try:
        return Confirm.ask(Text(prompt), console=console, default=False)
    except EOFError:
        return False
    finally:
        if not sys.stdin.isatty():
            console.print()  # the answer was not echoed: end the prompt's line


def _one_list(settings: Settings, list_name: str | None) -> str:
    if list_name is not None:
        return list_name
    if len(settings.replay_lists) == 1:
        return settings.replay_lists[0]
    raise admin.InvalidSelection(
        f"name the list with --list (configured: {', '.join(settings.replay_lists)})"
    )


def _print_action(fmt: Format, report: admin.ActionReport) -> None:
    moved = [{"list": report.list_key, **asdict(view)} for view in report.moved]
    skipped = [{"list": report.list_key, **asdict(view)} for view in report.skipped]
    caption = (
        f"{len(skipped)} skipped: gone before they could move (another operator?)"
        if skipped
        else None
    )
    _print(
        fmt,
        [
            _View(
                f"{report.action.capitalize()} {len(moved)} dead letter(s) of {report.list_key}",
                _dead_letter_columns(),
                moved,
                caption=caption,
                empty="nothing to do",
            )
        ],
        document={
            "action": report.action,
            "list": report.list_key,
            "moved": moved,
            "skipped": skipped,
        },
    )


# -- database --------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """Create the audit tables, or bring them to the schema this fallbackbus needs."""
    result = admin.upgrade_database(_settings(ctx))
    row = asdict(result)
    _print(
        fmt,
        [
            _View(
                "Audit database",
                [
                    _Column("url", "Database"),
                    _Column("before", "Schema before"),
                    _Column("after", "Schema now"),
                ],
                [row],
            )
        ],
        document=row,
    )


# -- output ----------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    header: str
    numeric: bool = False
    show: Callable[[Any], str] = _plain
    """How a table shows the value; JSON and CSV get it raw."""


@dataclass(frozen=True, slots=True)
class _View:
    """One table of a command's answer. In CSV only the first view is written."""

    title: str
    columns: Sequence[_Column]
    rows: Sequence[Mapping[str, Any]]
    caption: str | None = None
    empty: str = "none"
    hide_when_empty: bool = False


def _print(fmt: Format, views: Sequence[_View], *, document: Any) -> None:
    if fmt == "json":
        typer.echo(json.dumps(_masked(document), indent=2, default=_json_value))
        return
    if fmt == "csv":
        view = views[0]
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([column.key for column in view.columns])
        for row in view.rows:
            writer.writerow([_csv_value(row.get(column.key)) for column in view.columns])
        return
    console = _console()
    with console.capture() as captured:
        for view in views:
            if view.rows:
                console.print(_table(view))
            elif not view.hide_when_empty:
                console.print(Text(f"{view.title}: {view.empty}"))
    # rich pads every cell to the column's width; trailing blanks only get in a reader's way.
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _table(view: _View) -> Table:
    table = Table(
        title=view.title,
        title_justify="left",
        caption=mask_url(view.caption) if view.caption else None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for column in view.columns:
        table.add_column(column.header, justify="right" if column.numeric else "left")
    for row in view.rows:
        # Text, not str: a value with [brackets] must not be read as rich markup.
        table.add_row(*(Text(mask_url(c.show(row.get(c.key)))) for c in view.columns))
    return table


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return _masked(asdict(value))
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return mask_url(str(value))


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped or captured, a table is as wide as its content: no row folded into 80 columns.
    width = None if stream.isatty() else 1000
    return Console(file=stream, width=width, highlight=False)


def _error(message: str) -> None:
    # One line: a multi-line driver message is folded, and passwords are masked.
    typer.echo(f"fallbackbus: error: {' '.join(mask_url(message).split())}", err=True)


def _configure_logging(verbose: bool) -> Callable[[], None]:
    """Send the library's log to stderr for one command; returns what puts things back."""
    logger = logging.getLogger("fallbackbus")
    level, propagate = logger.level, logger.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fallbackbus: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    # Without --verbose only errors: a warning such as "run stopped" would repeat what the
    # command prints itself.
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate

    return restore


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso_time(value: str | None) -> str:
    try:
        return _time(datetime.fromisoformat(value)) if value else "-"
    except ValueError:
        return value or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# How a replay run reads, in `replay` and in `audit summary`'s runs table alike.
_RUN_COUNTS = [
    _Column("status", "Status"),
    _Column("republished", "Republished", numeric=True),
    _Column("dead_lettered", "Dead-lettered", numeric=True),
    _Column("returned", "Returned", numeric=True),
    _Column("recovered", "Recovered", numeric=True),
    _Column("duration_seconds", "Duration", numeric=True, show=_seconds),
]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size}{unit} {(whole % size) // smaller_size}{smaller}"
    return f"{whole}s"


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{_age(seconds)} ago"


def _lease(seconds: float | None) -> str:
    if seconds is None:
        return "no lease"
    return f"in {_age(seconds)}" if seconds > 0 else "at the next run"


def _reachable(value: bool) -> str:
    return "ok" if value else "UNREACHABLE"


def _yes_no(value: bool) -> str:
    return "yes" if value else "NO"


def main() -> None:
    """The ``fallbackbus`` console script."""
    app()
