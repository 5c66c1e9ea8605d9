"""tell people: notification channels, events and their delivery outbox; auto-pause and
freshness per connector; numbered versions of connectors, sources and destinations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = conveyor.db.base.UTCDateTime(timezone=True)
JSON = conveyor.db.base.JSONType


def upgrade() -> None:
    # Adding nullable / defaulted columns: SQLite keeps the table (no rebuild), so
    # AUTOINCREMENT stays as 0005 set it.
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("auto_pause_after_failures", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("freshness_sla_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("stale_since", UTC, nullable=True))
        batch.add_column(sa.Column("sync_alerted_at", UTC, nullable=True))
    op.create_table(
        "entity_versions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("entity_type", sa.String(length=30), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=30), nullable=False),
        sa.Column("snapshot", JSON, nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("at", UTC, nullable=False),
        sa.Column("restored_from", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_versions")),
        sa.UniqueConstraint(
            "entity_type",
            "entity_id",
            "version",
            name=op.f("uq_entity_versions_entity_type_entity_id_version"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "notification_channels",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("connector_ids", JSON, nullable=True),
        sa.Column("tags", JSON, nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("last_delivery_at", UTC, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_notification_channels_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "notification_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.Column("connector_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_events")),
        sa.UniqueConstraint("key", name=op.f("uq_notification_events_key")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_notification_events_connector_id",
        "notification_events",
        ["connector_id"],
        unique=False,
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("channel_id", BigId, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["notification_events.id"],
            name=op.f("fk_notification_deliveries_event_id_notification_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_notification_deliveries_channel_id_notification_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "event_id", "channel_id", name=op.f("uq_notification_deliveries_event_id_channel_id")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notification_deliveries_event_id", "notification_deliveries", ["event_id"])
    op.create_index(
        "ix_notification_deliveries_channel_id", "notification_deliveries", ["channel_id"]
    )
    op.create_index(
        "ix_notification_deliveries_status_next",
        "notification_deliveries",
        ["status", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_table("notification_deliveries")
    op.drop_index("ix_notification_events_connector_id", table_name="notification_events")
    op.drop_table("notification_events")
    op.drop_table("notification_channels")
    op.drop_table("entity_versions")
    with op.batch_alter_table("connectors") as batch:
        for name in (
            "sync_alerted_at",
            "stale_since",
            "freshness_sla_minutes",
            "consecutive_failures",
            "auto_pause_after_failures",
        ):
            batch.drop_column(name)
