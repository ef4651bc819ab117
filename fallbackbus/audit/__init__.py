"""The audit trail: one row per replay run and one per message outcome, in SQL.

Write with :class:`SqlAuditStore` (the :class:`AuditStore` role), read with
:class:`AuditQueries`. The schema is managed by the Alembic migrations shipped in this package
(``SqlAuditStore.upgrade()``).
"""

from fallbackbus.audit.errors import InvalidQuery, InvalidRecord
from fallbackbus.audit.queries import AuditQueries, OutcomeRow, RunRow, ServiceKey, TypeCount
from fallbackbus.audit.records import (
    OUTCOME_STATUSES,
    RUN_STATUSES,
    Outcome,
    OutcomeStatus,
    RunReport,
    RunStatus,
)
from fallbackbus.audit.store import AuditStore, SqlAuditStore, alembic_config

__all__ = [
    "OUTCOME_STATUSES",
    "RUN_STATUSES",
    "AuditQueries",
    "AuditStore",
    "InvalidQuery",
    "InvalidRecord",
    "Outcome",
    "OutcomeRow",
    "OutcomeStatus",
    "RunReport",
    "RunRow",
    "RunStatus",
    "ServiceKey",
    "SqlAuditStore",
    "TypeCount",
    "alembic_config",
]
