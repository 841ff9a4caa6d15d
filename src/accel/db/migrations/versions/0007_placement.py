"""placement_nodes (what accel reported to Placement per node) and
agents.resource_provider_name

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as table:
        table.add_column(sa.Column("resource_provider_name", sa.String(length=255), nullable=True))
    op.create_table(
        "placement_nodes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node", sa.String(length=255), nullable=False, unique=True),
        sa.Column("root_uuid", sa.String(length=36), nullable=True),
        sa.Column("reported_digest", sa.String(length=64), nullable=True),
        sa.Column("providers_json", sa.Text(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_placement_nodes_pending", "placement_nodes", ["pending"])


def downgrade() -> None:
    op.drop_index("ix_placement_nodes_pending", table_name="placement_nodes")
    op.drop_table("placement_nodes")
    with op.batch_alter_table("agents") as table:
        table.drop_column("resource_provider_name")
