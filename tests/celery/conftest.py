"""Fixtures for the Celery tests: private names and databases, so that runs in parallel (and the
machine's own state) never meet.

Each test gets its own Redis key prefix (which also names its Celery queue), its own organization
(so its own RabbitMQ exchange) and, where it needs PostgreSQL, its own schema: the fixtures of
``tests/conftest.py``, which remove them afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.services import Names, delete_keys


@pytest.fixture
def names(names: Names, redis_client: redis.Redis) -> Iterator[Names]:
    """This test's names; kombu's bindings of its Celery queue are deleted afterwards too."""
    yield names
    delete_keys(
        redis_client,
        *(f"_kombu.{kind}.{names.prefix}*" for kind in ("binding", "binding_permanent")),
    )
