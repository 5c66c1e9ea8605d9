"""per-connector Prefect job variables (resources, placement, env, image)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("job_variables", conveyor.db.base.JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.drop_column("job_variables")
