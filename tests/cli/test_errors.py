"""Every failure is one line on stderr and an exit code: 1 not found / unbalanced, 2 bad input,
3 a service unreachable. Never a traceback, never a password."""

from __future__ import annotations

import pytest

from tests.admin.conftest import World, closed_port_url
from tests.cli.conftest import Cli, assert_one_line_error
from tests.support.services import REDIS_URL

pytestmark = pytest.mark.integration

REDIS_COMMANDS = [
    ["status"],
    ["accounting"],
    ["replay"],
    ["dead-letters", "list"],
    ["dead-letters", "requeue", "-l", "domain.events", "--all"],
    ["dead-letters", "purge", "-l", "domain.events", "--all", "--yes"],
]


@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=" ".join)
def test_an_unreachable_redis_exits_3_in_one_line_without_its_password(
    cli: Cli, command: list[str]
) -> None:
    result = cli("--redis-url", closed_port_url("redis", "/0"), *command)

    assert result.exit_code == 3
    assert_one_line_error(result, "Redis at redis://user:***@127.0.0.1:", "Connection refused")


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["dead-letters", "purge", "-l", "domain.events", "--all", "--yes"]],
    ids=" ".join,
)
def test_an_unreachable_audit_database_exits_3_in_one_line_without_its_password(
    cli: Cli, world: World, command: list[str]
) -> None:
    world.park(1)

    result = cli("--db-url", closed_port_url("postgresql+psycopg", "/test"), *command)

    assert result.exit_code == 3
    assert_one_line_error(result, "postgresql+psycopg://user:***@127.0.0.1:")
    assert world.redis.llen(world.keys().dead) == 1


def test_an_unreachable_redis_set_in_the_environment_is_reported_too(cli: Cli) -> None:
    result = cli("accounting", redis_url=closed_port_url("redis", "/0"))

    assert result.exit_code == 3
    assert_one_line_error(result, "redis://user:***@")


def test_the_command_line_options_override_the_environment(cli: Cli) -> None:
    result = cli("--redis-url", REDIS_URL, "accounting", redis_url=closed_port_url("redis", "/0"))

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing command."),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["status", "--format", "xml"], "Invalid value for '--format'"),
        (["--redis-url", "http://example.com", "status"], "not a Redis URL: 'http://example.com'"),
        (["--db-url", "nonsense://x", "db", "upgrade"], "cannot use audit database nonsense://"),
        (["--rabbitmq-url", "http://u:pw@x", "status"], "not an AMQP URL: http://u:***@x"),
    ],
)
def test_bad_input_exits_2_in_one_line(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)

    assert result.exit_code == 2
    assert_one_line_error(result, message)


def test_a_malformed_setting_in_the_environment_exits_2(cli: Cli) -> None:
    result = cli("status", replay_batch_size="many")

    assert result.exit_code == 2
    assert_one_line_error(result, "FALLBACKBUS_REPLAY_BATCH_SIZE: cannot parse 'many'")


def test_help_lists_the_commands_and_documents_the_exit_codes(cli: Cli) -> None:
    result = cli("--help")

    assert result.exit_code == 0
    for word in ("status", "accounting", "replay", "audit", "dead-letters", "db", "Exit codes"):
        assert word in result.stdout
    for code in ("0 ok", "1 the accounting does not balance", "2 bad input", "3 Redis, RabbitMQ"):
        assert code in " ".join(result.stdout.split())
