"""schema change policy per connector (propagate, ignore_new_columns, pause) and the
reason the system paused a connector

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 13:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(
            sa.Column(
                "schema_changes", sa.String(length=20), nullable=False, server_default="propagate"
            )
        )
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.drop_column("paused_reason")
        batch.drop_column("schema_changes")
