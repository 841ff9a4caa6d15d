"""sync leases: which conductor runs each agent's sync, and until when

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sync_owner", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("sync_lease_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_synced_by", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_agents_sync_owner"), ["sync_owner"], unique=False)
    with op.batch_alter_table("conductors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alive_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conductors", schema=None) as batch_op:
        batch_op.drop_column("alive_until")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_sync_owner"))
        batch_op.drop_column("last_synced_by")
        batch_op.drop_column("sync_lease_until")
        batch_op.drop_column("sync_owner")
