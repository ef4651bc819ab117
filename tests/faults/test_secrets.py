"""Passwords in every URL never surface: scenario 9 of the fault suite.

Every URL carries a password that contains the word ``Secret`` (nothing else in the system does),
and every service is made to fail in a way that puts its URL into a message: a closed port, a
login RabbitMQ refuses, a broker that goes away mid-run, an audit database that is not there.
Then everything a person could read is swept for ``Secret``: each exception and its whole
``__cause__``/``__context__`` chain, the reprs of the objects, every log record captured at DEBUG
from every library, the fallback entries and dead letters in Redis, the audit rows, and the output
of the ``fallbackbus`` console script run with ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fallbackbus import (
    RabbitMqConnector,
    RabbitMqDomainEventBus,
    RedisDomainEventBus,
)
from fallbackbus.audit import SqlAuditStore
from fallbackbus.errors import FallbackBusError
from fallbackbus.rabbitmq import RabbitMqPublisher
from fallbackbus.redis import redis_from_url
from fallbackbus.replay import Replayer, replay_list
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tests.faults.helpers import (
    AuditDatabase,
    UserCreated,
    events,
    fill_backlog,
)
from tests.faults.scoreboard import ScenarioRow
from tests.support.consumer import QueueCounter
from tests.support.replay import after_batches
from tests.support.servers import free_port
from tests.support.services import REDIS_URL, Names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARK = "Secret"  # in every password below, and nowhere else

# (RabbitMQ, Redis, PostgreSQL) passwords, as written inside the URLs.
PASSWORDS = {
    "plain": ("TopSecret1", "TopSecret2", "TopSecret3"),
    "percent-encoded": ("Top%40Secret%3A1", "Top%2FSecret%3B2", "Top%40Secret%25%3F3"),
    # ';' is legal unescaped in a URL's userinfo (RFC 3986 sub-delims); '@' is not, but it is
    # the commonest mistake, and the library already promises to mask it.
    "unescaped-specials": ("Top@Secret1", "Top;Secret2", "Top@Secret3"),
}
CONSOLE_SCRIPT = Path(sys.executable).with_name("fallbackbus")


@dataclass
class Urls:
    amqp_closed: str
    amqp_refused_login: str
    redis_closed: str
    pg_closed: str
    pg_working: str  # the machine's PostgreSQL trusts local users: the password is ignored

    @classmethod
    def with_passwords(cls, passwords: tuple[str, str, str], audit_db: AuditDatabase) -> Urls:
        amqp, redis_password, pg = passwords
        return cls(
            amqp_closed=f"amqp://guest:{amqp}@127.0.0.1:{free_port()}//",
            amqp_refused_login=f"amqp://guest:{amqp}@127.0.0.1:5672//",
            redis_closed=f"redis://:{redis_password}@127.0.0.1:{free_port()}/0",
            pg_closed=f"postgresql+psycopg://postgres:{pg}@127.0.0.1:{free_port()}/test",
            pg_working=audit_db.url().replace("postgres@", f"postgres:{pg}@", 1),
        )


@dataclass
class Sweep:
    """Everything a person could read, by where it came from."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, value: Any) -> None:
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def exception(self, where: str, exc: BaseException) -> None:
        """The exception and every exception chained to it, as a traceback would print them."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.add(f"{where}: {type(current).__name__} str", str(current))
            self.add(f"{where}: {type(current).__name__} repr", repr(current))
            current = current.__cause__ or current.__context__

    def logs(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter()
        for record in records:
            text = record.getMessage()
            if record.exc_info:
                text += formatter.formatException(record.exc_info)
            self.add(f"log {record.name}:{record.levelname}", text)

    def leaks(self) -> list[str]:
        return [f"{where}: {text[:300]}" for where, text in self.texts if MARK in text]

    def masked(self, where: str = "") -> bool:
        """Whether a text from ``where`` shows a URL with its password masked (so the URLs
        did reach the texts, and the sweep is not vacuous)."""
        return any(w.startswith(where) and ":***@" in text for w, text in self.texts)


def expect_error(sweep: Sweep, where: str, action: Callable[[], Any]) -> None:
    try:
        action()
    except FallbackBusError as exc:
        sweep.exception(where, exc)
    else:
        raise AssertionError(f"{where}: no error raised")


def broken_replay_run(
    names: Names,
    client: redis.Redis,
    counter: QueueCounter,
    rabbitmq_proxy: FaultProxy,
    audit: SqlAuditStore,
    amqp_closed: str,
) -> Any:
    """A run whose broker dies after the first batch, through a cluster list whose first node
    (closed, with a password) is in every connect error: audit rows full of error text."""
    fill_backlog(client, names, 30)
    replayer = Replayer(
        redis=client,
        publisher=RabbitMqPublisher(
            RabbitMqConnector(
                f"{amqp_closed};{rabbitmq_proxy.url_for('amqp://guest:guest@127.0.0.1:5672//')}",
                connect_timeout=1,
                confirm_timeout=1,
                breaker_cooldown=0,
            )
        ),
        audit=audit,
        settings=Settings.from_env({}),
        key_prefix=names.prefix,
    )
    report = replayer.run(
        "domain.events", batch_size=10, on_batch=after_batches(1, rabbitmq_proxy.refuse)
    )
    counter.drain(None, idle=0.2)
    return report


@pytest.fixture
def sweep(caplog: pytest.LogCaptureFixture) -> Sweep:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's DEBUG records
    return Sweep()


@pytest.mark.scenario(9, "passwords in every URL: errors, logs, Redis, audit rows")
@pytest.mark.parametrize("style", list(PASSWORDS))
def test_no_password_reaches_an_exception_a_log_line_redis_or_an_audit_row(
    style: str,
    names: Names,
    redis_client: redis.Redis,
    counter: QueueCounter,
    rabbitmq_proxy: FaultProxy,
    audit_db: AuditDatabase,
    sweep: Sweep,
    caplog: pytest.LogCaptureFixture,
    score: ScenarioRow,
) -> None:
    urls = Urls.with_passwords(PASSWORDS[style], audit_db)
    event = events(1)[0]

    # Publishing with RabbitMQ and Redis both unreachable.
    closed_bus = RabbitMqDomainEventBus(
        names.organization,
        names.service,
        RabbitMqConnector(urls.amqp_closed, connect_timeout=1),
        fallback=RedisDomainEventBus(
            names.organization, names.service, redis_from_url(urls.redis_closed, timeout=1)
        ),
    )
    sweep.add("repr(bus)", closed_bus)
    sweep.add("repr(connector)", closed_bus.connector)
    sweep.add("repr(fallback)", closed_bus.fallback)
    expect_error(sweep, "publish, both down", lambda: closed_bus.publish(event))

    # Publishing while RabbitMQ refuses the login: the message falls back, with a reason.
    refused_login_bus = RabbitMqDomainEventBus(
        names.organization,
        names.service,
        RabbitMqConnector(urls.amqp_refused_login, connect_timeout=2),
        fallback=RedisDomainEventBus(
            names.organization, names.service, redis_client, key_prefix=names.prefix
        ),
    )
    refused_login_bus.publish(UserCreated(user_id="refused-login", sequence=0))

    # A replay run whose broker dies mid-run, audited in PostgreSQL through a URL with a password.
    audit = audit_db.store(urls.pg_working)
    sweep.add("repr(audit store)", audit)
    report = broken_replay_run(
        names, redis_client, counter, rabbitmq_proxy, audit, urls.amqp_closed
    )
    sweep.add("replay report", report.as_dict())

    # The audit database unreachable: before a run, and through the whole replay_list entry point.
    closed_audit = SqlAuditStore(urls.pg_closed, connect_timeout=1)
    sweep.add("repr(closed audit store)", closed_audit)
    expect_error(sweep, "audit ping", closed_audit.ping)
    stopped = Replayer(
        redis=redis_client,
        publisher=RabbitMqPublisher(RabbitMqConnector(urls.amqp_closed, connect_timeout=1)),
        audit=closed_audit,
        settings=Settings.from_env({}),
        key_prefix=names.prefix,
    ).run("domain.events")
    sweep.add("report with audit down", stopped.as_dict())
    everything_closed = Settings.from_env(
        {},
        rabbitmq_url=urls.amqp_closed,
        redis_url=urls.redis_closed,
        audit_db_url=urls.pg_closed,
        connect_timeout=1,
    )
    sweep.add("repr(settings)", everything_closed)
    expect_error(
        sweep, "replay_list", lambda: replay_list("domain.events", settings=everything_closed)
    )

    # What was written down: Redis entries and dead letters, audit rows.
    keys = names.keys()
    for key in (keys.source, keys.dead):
        for raw in redis_client.lrange(key, 0, -1):
            sweep.add(f"redis {key}", raw.decode(errors="replace"))
    for row in audit_db.outcomes():
        sweep.add("audit outcome row", row)
    for run in audit_db.runs():
        sweep.add("audit run row", run)
    sweep.logs(caplog.records)

    leaks = sweep.leaks()
    score.count(
        messages=len(sweep.texts), lost=len(leaks), note="texts swept; 'lost' = texts leaking"
    )
    assert not leaks, "\n".join(leaks)
    assert sweep.masked("audit outcome row"), "no audit row quotes a masked URL"
    assert sweep.masked("log "), "no log line quotes a masked URL"
    assert sweep.masked("publish, both down"), "the publish error quotes no masked URL"


@pytest.mark.scenario(9, "passwords in every URL: `fallbackbus --verbose` output")
def test_no_password_reaches_the_output_of_any_fallbackbus_command(
    names: Names,
    redis_client: redis.Redis,
    counter: QueueCounter,
    rabbitmq_proxy: FaultProxy,
    audit_db: AuditDatabase,
    score: ScenarioRow,
) -> None:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip("the `fallbackbus` console script is not installed in this environment")
    urls = Urls.with_passwords(PASSWORDS["plain"], audit_db)
    audit = audit_db.store(urls.pg_working)
    broken_replay_run(names, redis_client, counter, rabbitmq_proxy, audit, urls.amqp_closed)
    message_id = audit_db.outcomes()[0][0]
    closed = {
        "FALLBACKBUS_RABBITMQ_URL": urls.amqp_closed,
        "FALLBACKBUS_REDIS_URL": urls.redis_closed,
        "FALLBACKBUS_AUDIT_DB_URL": urls.pg_closed,
        "FALLBACKBUS_CONNECT_TIMEOUT": "1",
    }
    working = {
        "FALLBACKBUS_RABBITMQ_URL": f"{urls.amqp_closed};amqp://guest:guest@127.0.0.1:5672//",
        "FALLBACKBUS_REDIS_URL": REDIS_URL,
        "FALLBACKBUS_REDIS_KEY_PREFIX": names.prefix,
        "FALLBACKBUS_AUDIT_DB_URL": urls.pg_working,
        "FALLBACKBUS_CONNECT_TIMEOUT": "1",
    }
    runs: list[tuple[str, dict[str, str], list[str]]] = [
        *(
            ("closed", closed, command)
            for command in [
                ["status"],
                ["accounting"],
                ["replay"],
                ["audit", "list"],
                ["dead-letters", "list"],
                ["db", "upgrade"],
            ]
        ),
        *(
            ("working", working, command)
            for command in [
                ["status"],
                ["accounting"],
                ["replay"],
                ["audit", "list"],
                ["audit", "list", "--format", "json"],
                ["audit", "show", message_id],
                ["audit", "summary", "--format", "csv"],
                ["dead-letters", "list"],
            ]
        ),
        ("options", {}, ["--redis-url", urls.redis_closed, "--db-url", urls.pg_closed, "status"]),
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("FALLBACKBUS_")}
    processes = [
        (
            f"{env_name}: fallbackbus {' '.join(command)}",
            subprocess.Popen(
                [str(CONSOLE_SCRIPT), "--verbose", *command],
                env={**base, **env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
        for env_name, env, command in runs
    ]
    sweep = Sweep()
    crashed = []
    for label, process in processes:
        out, err = process.communicate(timeout=120)
        sweep.add(f"{label} (exit {process.returncode}) stdout", out.decode(errors="replace"))
        sweep.add(f"{label} (exit {process.returncode}) stderr", err.decode(errors="replace"))
        if process.returncode == 4 or b"Traceback" in err:
            crashed.append(f"{label}: {err.decode(errors='replace')[-500:]}")

    leaks = sweep.leaks()
    score.count(
        messages=len(sweep.texts),
        lost=len(leaks),
        note=f"{len(processes)} commands run; 'lost' = outputs leaking",
    )
    assert not leaks, "\n".join(leaks)
    assert sweep.masked(), "no output showed a masked URL: the sweep proved nothing"
    assert not crashed, "\n".join(crashed)
