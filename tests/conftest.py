"""Shared pytest set-up.

``tests`` is a package, so pytest puts the repository root on ``sys.path`` when it imports this
file first: every test module, wherever it lives, can then ``import tests.support``.

Marker rules: a test that talks to the real RabbitMQ, Redis or PostgreSQL on this machine is
marked ``integration``; one that takes more than a few seconds is also marked ``slow``.
Unit tests (``tests/unit``) open no socket at all.

The fixtures below give a test its own world on the shared services -- an organization, a Redis
key prefix, an audit database -- and remove it afterwards; outages are made with ``FaultProxy``
between the code under test and a service, never by touching the service itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from fallbackbus.redis import redis_from_url
from fallbackbus.settings import Settings
from fallbackbus.testing.faultproxy import FaultProxy
from tests.support.consumer import QueueCounter, counting
from tests.support.postgres import private_schema
from tests.support.services import (
    REDIS_URL,
    Names,
    delete_exchange,
    delete_keys,
    unique,
)

# -- names of this test's own --------------------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The machine's Redis, through the library's bounded client (default settings)."""
    client = redis_from_url(REDIS_URL, settings=Settings())
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"test:{unique()}:"
    yield prefix
    delete_keys(redis_client, f"{prefix}*")


@pytest.fixture
def organization() -> str:
    """An organization of this test's own, hence exchanges ``{organization}.*`` of its own."""
    return f"t{unique()}"


@pytest.fixture
def service() -> str:
    """The service this test publishes as (override it to use another name)."""
    return "svc"


@pytest.fixture
def names(organization: str, service: str, key_prefix: str) -> Iterator[Names]:
    """This test's organization, service and key prefix; its exchange is deleted afterwards."""
    made = Names(organization, service, key_prefix)
    yield made
    delete_exchange(made.exchange)


@pytest.fixture
def counter_for() -> Iterator[Callable[[str], QueueCounter]]:
    """``counter_for(exchange)``: a ``QueueCounter`` bound now; the exchange is deleted after."""
    with ExitStack() as stack:
        yield lambda exchange: stack.enter_context(counting(exchange))


@pytest.fixture
def counter(names: Names, counter_for: Callable[[str], QueueCounter]) -> QueueCounter:
    """Counts every message that reaches this test's exchange; bound before anything is sent."""
    return counter_for(names.exchange)


# -- audit databases -----------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections all use a schema of this test's own (dropped after)."""
    with private_schema() as url:
        yield url


# -- outages -------------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5672) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
def postgres_proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        yield proxy
