"""Create the run and outcome tables of the audit trail.

Revision ID: 0001
Revises:
Create Date: 2024-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fallbackbus_runs",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("source_list", sa.String(), nullable=False),
        sa.Column("worker", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("republished", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dead_lettered", sa.Integer(), server_default="0", nullable=False),
        sa.Column("returned", sa.Integer(), server_default="0", nullable=False),
        sa.Column("recovered", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_fallbackbus_runs")),
    )
    op.create_index(op.f("ix_fallbackbus_runs_started_at"), "fallbackbus_runs", ["started_at"])
    op.create_index(op.f("ix_fallbackbus_runs_status"), "fallbackbus_runs", ["status"])

    op.create_table(
        "fallbackbus_outcomes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("message_type", sa.String(), nullable=True),
        sa.Column("organization", sa.String(), nullable=True),
        sa.Column("service", sa.String(), nullable=True),
        sa.Column("source_list", sa.String(), nullable=False),
        sa.Column("routing_key", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fallbackbus_outcomes")),
    )
    op.create_index(
        op.f("ix_fallbackbus_outcomes_recorded_at"), "fallbackbus_outcomes", ["recorded_at"]
    )
    op.create_index(
        op.f("ix_fallbackbus_outcomes_status_recorded_at"),
        "fallbackbus_outcomes",
        ["status", "recorded_at"],
    )
    op.create_index(
        op.f("ix_fallbackbus_outcomes_message_type_recorded_at"),
        "fallbackbus_outcomes",
        ["message_type", "recorded_at"],
    )
    op.create_index(
        op.f("ix_fallbackbus_outcomes_organization_service_recorded_at"),
        "fallbackbus_outcomes",
        ["organization", "service", "recorded_at"],
    )
    op.create_index(
        op.f("ix_fallbackbus_outcomes_message_id"), "fallbackbus_outcomes", ["message_id"]
    )
    op.create_index(op.f("ix_fallbackbus_outcomes_run_id"), "fallbackbus_outcomes", ["run_id"])


def downgrade() -> None:
    op.drop_table("fallbackbus_outcomes")
    op.drop_table("fallbackbus_runs")
