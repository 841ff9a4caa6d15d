"""device profiles and accelerator requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("profile_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_table(
        "extended_accelerator_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("device_profile_id", sa.Integer(), nullable=False),
        sa.Column("device_profile_group_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("device_rp_uuid", sa.String(length=36), nullable=True),
        sa.Column("instance_uuid", sa.String(length=36), nullable=True),
        sa.Column("attach_handle_id", sa.Integer(), nullable=True),
        sa.Column("deployable_id", sa.Integer(), nullable=True),
        sa.Column("bind_failure", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["attach_handle_id"], ["attach_handles.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["deployable_id"], ["deployables.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["device_profile_id"], ["device_profiles.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("attach_handle_id"),
        sa.UniqueConstraint("uuid"),
    )
    with op.batch_alter_table("extended_accelerator_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_extended_accelerator_requests_device_profile_id"),
            ["device_profile_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_extended_accelerator_requests_instance_uuid"),
            ["instance_uuid"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_extended_accelerator_requests_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("extended_accelerator_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extended_accelerator_requests_project_id"))
        batch_op.drop_index(batch_op.f("ix_extended_accelerator_requests_instance_uuid"))
        batch_op.drop_index(batch_op.f("ix_extended_accelerator_requests_device_profile_id"))

    op.drop_table("extended_accelerator_requests")
    op.drop_table("device_profiles")
