"""docker-compose.yml says what the project runs: checked by reading it, then by running it.

Docker cannot run here, so the worker's and beat's command lines from the compose file run as
local processes, with the compose environment pointed at this machine's services.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from sqlalchemy import make_url

from fallbackbus import DomainEvent, RedisDomainEventBus
from fallbackbus.settings import PREFIX, Settings
from tests.celery.helpers import ROOT, CeleryProcess, service_env, wait_until
from tests.support.consumer import QueueCounter
from tests.support.services import RABBITMQ_URL, REDIS_URL, Names

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"rabbitmq", "redis", "postgres", "worker", "beat"}
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str, host_env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``$$``, as ``docker compose`` reads them."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return host_env.get(match["name"]) or match["default"] or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(host_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file, its variables interpolated (defaults only, unless ``host_env``).

    Like compose, the YAML is parsed first and its strings interpolated after, so ``${X:-30}``
    stays the string ``"30"``.
    """

    def resolve(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, host_env or {})
        if isinstance(node, dict):
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    loaded: dict[str, Any] = resolve(yaml.safe_load(COMPOSE.read_text()))
    return loaded


def seconds(duration: str) -> float:
    """A compose duration (``10s``, ``2m``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"not a compose duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def local_environment(environment: Mapping[str, str], audit_db_url: str) -> dict[str, str]:
    """The compose environment with each URL that names a compose service pointed at ours.

    Scheme and path (the Redis database, the vhost) stay as compose wrote them; host, port and
    credentials become the local service's. The audit database is the test's own schema.
    """
    local_netloc = {
        "rabbitmq": urlsplit(RABBITMQ_URL).netloc,
        "redis": urlsplit(REDIS_URL).netloc,
    }
    mapped = {}
    for name, value in environment.items():
        parts = urlsplit(str(value))
        if parts.hostname == "postgres":
            mapped[name] = audit_db_url
        elif parts.hostname in local_netloc:
            mapped[name] = parts._replace(netloc=local_netloc[parts.hostname]).geturl()
        else:
            mapped[name] = str(value)
    return mapped


# -- reading the file -------------------------------------------------------------------------


def test_the_compose_file_runs_the_five_services_each_with_a_healthcheck() -> None:
    services = load_compose()["services"]

    assert set(services) == SERVICES
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test") or [None]
        assert test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"


def test_rabbitmq_runs_with_the_management_ui_and_a_fixed_node_name() -> None:
    rabbitmq = load_compose()["services"]["rabbitmq"]

    assert "management" in rabbitmq["image"]
    assert any(str(port).endswith(":15672") for port in rabbitmq["ports"])
    assert rabbitmq["hostname"] == "rabbitmq"


def test_redis_keeps_an_append_only_file_synced_every_second_and_never_evicts() -> None:
    command = load_compose()["services"]["redis"]["command"]

    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"


def test_every_data_directory_is_a_named_volume() -> None:
    compose = load_compose()
    data_dirs = {
        "rabbitmq": "/var/lib/rabbitmq",
        "redis": "/data",
        "postgres": "/var/lib/postgresql/data",
        "beat": "/var/lib/fallbackbus",
    }

    for service, directory in data_dirs.items():
        mounts = dict(v.split(":", 1) for v in compose["services"][service]["volumes"])
        volume = {target: source for source, target in mounts.items()}[directory]
        assert volume in compose["volumes"], f"{service}'s {directory} is not a named volume"


def test_worker_and_beat_wait_for_healthy_dependencies() -> None:
    services = load_compose()["services"]

    conditions = {
        name: {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}
        for name in ("worker", "beat")
    }
    assert conditions == {
        "worker": dict.fromkeys(["rabbitmq", "redis", "postgres"], "service_healthy"),
        # Beat only talks to Celery's broker: it must tick while RabbitMQ is down.
        "beat": {"redis": "service_healthy"},
    }


def test_worker_and_beat_are_one_image_configured_only_by_known_fallbackbus_variables() -> None:
    services = load_compose()["services"]
    known = {PREFIX + f.name.upper() for f in fields(Settings)}

    worker, beat = services["worker"], services["beat"]
    assert worker["build"] == beat["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert worker["image"] == beat["image"]
    assert worker["environment"] == beat["environment"]
    assert set(worker["environment"]) <= known
    # The environment must build valid settings (numbers parse, lists are not empty).
    Settings.from_env({k: str(v) for k, v in worker["environment"].items()})
    assert worker["command"][:4] == ["celery", "-A", "tasks", "worker"]
    assert beat["command"][:4] == ["celery", "-A", "tasks", "beat"]


def test_the_service_urls_carry_the_credentials_the_services_are_created_with() -> None:
    services = load_compose()["services"]
    environment = services["worker"]["environment"]

    rabbitmq = urlsplit(environment["FALLBACKBUS_RABBITMQ_URL"])
    created = services["rabbitmq"]["environment"]
    assert (rabbitmq.hostname, rabbitmq.username, rabbitmq.password) == (
        "rabbitmq",
        created["RABBITMQ_DEFAULT_USER"],
        created["RABBITMQ_DEFAULT_PASS"],
    )
    postgres = make_url(environment["FALLBACKBUS_AUDIT_DB_URL"])
    created = services["postgres"]["environment"]
    assert (postgres.host, postgres.username, postgres.password, postgres.database) == (
        "postgres",
        created["POSTGRES_USER"],
        created["POSTGRES_PASSWORD"],
        created["POSTGRES_DB"],
    )
    assert urlsplit(environment["FALLBACKBUS_REDIS_URL"]).hostname == "redis"


def test_passwords_and_the_interval_can_be_set_from_the_host_environment() -> None:
    compose = load_compose(
        {
            "RABBITMQ_PASSWORD": "r4bbit",
            "POSTGRES_PASSWORD": "p0stgres",
            "FALLBACKBUS_REPLAY_INTERVAL": "5",
        }
    )

    services = compose["services"]
    environment = services["worker"]["environment"]
    assert urlsplit(environment["FALLBACKBUS_RABBITMQ_URL"]).password == "r4bbit"
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == "r4bbit"
    assert make_url(environment["FALLBACKBUS_AUDIT_DB_URL"]).password == "p0stgres"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "p0stgres"
    assert environment["FALLBACKBUS_REPLAY_INTERVAL"] == "5"


def test_everything_the_dockerfile_copies_exists_in_the_repository() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()

    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in shlex.split(line)[1:-1]
    ]
    assert "celeryconfig.py" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"docker/Dockerfile copies {source}, which is missing"


# -- running it ---------------------------------------------------------------------------------


class ParcelLabelled(DomainEvent):
    parcel_id: str


def run_healthcheck(service: Mapping[str, Any], env: Mapping[str, str], cwd: Path) -> None:
    kind, *command = service["healthcheck"]["test"]
    argv = ["/bin/sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    result = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=seconds(service["healthcheck"]["timeout"]),
        check=False,
    )
    assert result.returncode == 0, f"healthcheck {argv} failed:\n{result.stdout}{result.stderr}"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_compose_worker_and_beat_commands_start_replay_a_message_and_pass_their_healthchecks(
    names: Names, pg_url: str, tmp_path: Path, redis_client: redis.Redis, counter: QueueCounter
) -> None:
    services = load_compose({"FALLBACKBUS_REPLAY_INTERVAL": "1"})["services"]
    environment = services["worker"]["environment"]
    assert "FALLBACKBUS_REDIS_KEY_PREFIX" not in environment
    env = service_env(
        {
            **local_environment(environment, pg_url),
            "FALLBACKBUS_REDIS_KEY_PREFIX": names.prefix,
            # Docker sets HOSTNAME in every container; the worker's healthcheck reads it.
            "HOSTNAME": socket.gethostname(),
        }
    )
    worker_dir, beat_dir = tmp_path / "worker", tmp_path / "beat"
    worker_dir.mkdir()
    beat_dir.mkdir()
    event = ParcelLabelled(parcel_id="p-7")
    with (
        CeleryProcess(
            services["worker"]["command"], env=env, cwd=worker_dir, name="worker"
        ) as worker,
        CeleryProcess(services["beat"]["command"], env=env, cwd=beat_dir, name="beat") as beat,
    ):
        worker.wait_for(" ready.")
        assert "upgraded to revision" in worker.output  # migrated the empty schema
        beat.wait_for("beat: Starting")
        RedisDomainEventBus(
            names.organization, names.service, redis_client, key_prefix=names.prefix
        ).publish(event)

        counter.drain(expected=1, timeout=15)
        assert dict(counter.ids) == {event.message_id: 1}
        wait_until(lambda: "Sending due task" in beat.output, timeout=5, what="beat's first tick")
        run_healthcheck(services["worker"], env, worker_dir)
        run_healthcheck(services["beat"], env, beat_dir)
