"""The Celery app of the replay service: the one global of ``tasks``.

Configured from ``celeryconfig.py`` (settings from the ``FALLBACKBUS_*`` environment). On start a
worker brings the audit schema up to date, so a fresh database needs no manual step.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup

from fallbackbus.audit import SqlAuditStore
from fallbackbus.errors import FallbackBusError
from fallbackbus.settings import Settings

logger = logging.getLogger(__name__)

app = Celery("fallbackbus")
app.config_from_object("celeryconfig")


def upgrade_audit_schema(settings: Settings | None = None) -> None:
    """Migrate the audit database to the head revision if it is behind; never raise for an outage.

    An unreachable database must not keep the worker from starting: replay runs check the
    database first and stop with "audit database unavailable" until it is back (and migrated).
    """
    store = SqlAuditStore.from_settings(settings or Settings.from_env())
    try:
        head = store.head_revision()
        current = store.current_revision()
        if current == head:
            logger.info("audit schema of %r is up to date (revision %s)", store, head)
            return
        logger.info("upgrading audit schema of %r from revision %s to %s", store, current, head)
        store.upgrade()
        logger.info("audit schema of %r upgraded to revision %s", store, head)
    except FallbackBusError as exc:
        # Unreachable, or a race with another worker migrating the same database at once.
        logger.warning("audit schema not upgraded (replay runs stop until it is): %s", exc)
    finally:
        store.dispose()


@celeryd_after_setup.connect
def _upgrade_on_worker_start(**_: Any) -> None:
    # Sent once, in the main process, after logging is set up (unlike worker_init, whose log lines
    # would be lost) and before the pool forks or the first task is consumed.
    upgrade_audit_schema()
