"""agents.inventory_etag: the ETag of the last hardware report stored for the agent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as table:
        table.add_column(sa.Column("inventory_etag", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as table:
        table.drop_column("inventory_etag")
