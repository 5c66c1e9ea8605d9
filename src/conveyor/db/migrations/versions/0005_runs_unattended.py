"""runs you can leave alone: failure class, attempts, waiting reason, full logs, daily
summaries, retry and catch-up policies, destination caps, pipeline state keys; ids never
reused on SQLite (AUTOINCREMENT)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.db.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = conveyor.db.base.UTCDateTime(timezone=True)
JSON = conveyor.db.base.JSONType

# Every table with a surrogate id. On SQLite each is rebuilt with AUTOINCREMENT (env.py
# turns foreign keys off around it, so the copy-and-drop cascades nothing); PostgreSQL's
# sequences never reuse an id already.
ID_TABLES = (
    "users",
    "ui_sessions",
    "api_tokens",
    "login_throttle",
    "sources",
    "destinations",
    "connectors",
    "connector_runs",
    "audit_log",
    "outbox",
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ID_TABLES:
        if sqlite:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
    with op.batch_alter_table("destinations") as batch:
        batch.add_column(sa.Column("max_concurrent_runs", sa.Integer(), nullable=True))
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("retry_policy", JSON, nullable=True))
        batch.add_column(
            sa.Column("catch_up", sa.String(length=10), nullable=False, server_default="latest")
        )
        batch.add_column(sa.Column("state_key", sa.String(length=40), nullable=True))
    # A Boolean column's CHECK makes SQLite rebuild the table here: keep AUTOINCREMENT on it
    # (without it a deleted newest run's id came back, and /runs/<id> named another run).
    with op.batch_alter_table(
        "connector_runs", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("scheduled_for", UTC, nullable=True))
        batch.add_column(sa.Column("retry_of", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("failure_class", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("failure_side", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("attempts", JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("waiting_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", UTC, nullable=True))
        batch.add_column(sa.Column("committed_at", UTC, nullable=True))
        batch.add_column(
            sa.Column("log_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("log_truncated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_connector_runs_created_at", ["created_at"], unique=False)
    op.create_table(
        "connector_run_logs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["connector_runs.id"],
            name=op.f("fk_connector_run_logs_run_id_connector_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_run_logs")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_connector_run_logs_run_id_seq", "connector_run_logs", ["run_id", "seq"], unique=False
    )
    op.create_table(
        "connector_daily_stats",
        sa.Column("id", BigId, nullable=False),
        sa.Column("connector_id", BigId, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name=op.f("fk_connector_daily_stats_connector_id_connectors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_daily_stats")),
        sa.UniqueConstraint(
            "connector_id", "day", name=op.f("uq_connector_daily_stats_connector_id_day")
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("connector_daily_stats")
    op.drop_index("ix_connector_run_logs_run_id_seq", table_name="connector_run_logs")
    op.drop_table("connector_run_logs")
    with op.batch_alter_table("connector_runs") as batch:
        batch.drop_index("ix_connector_runs_created_at")
        for name in (
            "log_truncated",
            "log_bytes",
            "committed_at",
            "next_attempt_at",
            "waiting_reason",
            "attempts",
            "max_attempts",
            "attempt",
            "failure_side",
            "failure_class",
            "retry_of",
            "scheduled_for",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("connectors") as batch:
        for name in ("state_key", "catch_up", "retry_policy"):
            batch.drop_column(name)
    with op.batch_alter_table("destinations") as batch:
        batch.drop_column("max_concurrent_runs")
