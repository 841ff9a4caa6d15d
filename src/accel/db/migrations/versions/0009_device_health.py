"""devices' observed health, kept apart from the operator's status

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.add_column(sa.Column("health_state", sa.String(length=16), nullable=True))
        table.add_column(sa.Column("health_since", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("health_checks", sa.Text(), nullable=True))
        table.add_column(sa.Column("health_functions", sa.Text(), nullable=True))
        table.add_column(sa.Column("health_failed_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(
            sa.Column("health_held", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("health_latched_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("health_latched_by", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("health_cleared_at", sa.DateTime(timezone=True), nullable=True))
        table.create_index("ix_devices_health_failed_at", ["health_failed_at"])


def downgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.drop_index("ix_devices_health_failed_at")
        for column in (
            "health_cleared_at",
            "health_latched_by",
            "health_latched_at",
            "health_held",
            "health_failed_at",
            "health_functions",
            "health_checks",
            "health_since",
            "health_state",
        ):
            table.drop_column(column)
