"""Conveyor's tables. The services (``services/``) and the reconciler's store
(``sync/store.py``) query them; the web app, the CLI and the flow go through those."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conveyor.db.base import Base, JSONType, UTCDateTime, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Ids are never reused: PostgreSQL sequences never go back, and on SQLite AUTOINCREMENT
# keeps the highest id ever given (without it a deleted last row's id comes back, and a new
# connector would inherit the old one's runs, audit history and pipeline state).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def new_state_key() -> str:
    """A fresh ``Connector.state_key`` (every new connector, every reset): random, never
    derived from the id, which a deployment file may give a connector again."""
    return uuid.uuid4().hex[:12]


class User(Base):
    __tablename__ = "users"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # admin | editor | viewer
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UiSession(Base):
    """A browser login. The signed cookie names it; logging out deletes it, so a copied
    cookie stops working at once instead of when it expires."""

    __tablename__ = "ui_sessions"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # sha256 of the session token; the token itself lives only in the signed cookie.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class LoginThrottle(Base):
    """Recent failed logins of one account name or one client address, in the database so
    that every web replica sees them; a row whose ``blocked_until`` is ahead refuses logins
    before any password is hashed."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("scope", "key_hash"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(String(10))  # account | address
    # sha256 of the name or address: a password typed into the username box is not kept.
    key_hash: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class _Endpoint:
    """Columns shared by sources and destinations (reusable named connections)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(50))
    # Secret fields hold ciphertext (see conveyor.secrets); never returned in clear.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))


class Source(_Endpoint, Base):
    __tablename__ = "sources"
    __table_args__ = (NEVER_REUSE_IDS,)


class Destination(_Endpoint, Base):
    __tablename__ = "destinations"
    __table_args__ = (NEVER_REUSE_IDS,)

    # Runs writing here at once, across all connectors (a Prefect global concurrency limit
    # named destination-<id>); None = no cap.
    max_concurrent_runs: Mapped[int | None] = mapped_column(Integer)


class Connector(Base):
    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="RESTRICT"), index=True
    )
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("destinations.id", ondelete="RESTRICT"), index=True
    )
    # What to copy (tables/query/glob/resources, write disposition, keys, cursor) and where.
    source_config_override: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    destination_config_override: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    schedule: Mapped[str | None] = mapped_column(String(120))  # 5-field cron; None = manual only
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    work_pool_name: Mapped[str | None] = mapped_column(String(200))  # None = settings default
    work_queue_name: Mapped[str | None] = mapped_column(String(200))
    deployment_name: Mapped[str | None] = mapped_column(String(200))  # None = connector-<id>
    # Per-connector Prefect job variables (resources, placement, env, image) merged into
    # its deployment; None = the work pool's defaults.
    job_variables: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # {"max_attempts": n, "backoff_seconds": [...]} for transient failures; None = defaults.
    retry_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Scheduled times missed while the worker or the platform was down: skip | latest | all.
    catch_up: Mapped[str] = mapped_column(String(10), default="latest")
    # New source columns: propagate | ignore_new_columns | pause (domain/vocabulary.py).
    schema_changes: Mapped[str] = mapped_column(String(20), default="propagate")
    # Why the system paused the connector (a run met a schema change under "pause");
    # cleared when it is resumed.
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # Names the connector's pipeline state (dlt's, the fast path's) outside this database;
    # new on create and on reset, so no other connector and no earlier life of this one
    # shares it. None: a connector from before it existed (state named by the id alone).
    state_key: Mapped[str | None] = mapped_column(String(40), default=new_state_key)
    # Pause the connector after this many failed runs in a row; None = never.
    auto_pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    # Failed runs since the last success (a run's retries count once); reset by a success
    # and by resuming the connector.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # A success is expected at least this often; None = no freshness SLA.
    freshness_sla_minutes: Mapped[int | None] = mapped_column(Integer)
    # Set when the freshness loop found the SLA breached (connector.stale fired once);
    # cleared by the next successful run.
    stale_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the sync.error event fired for the current spell of not being synced;
    # cleared when the connector is synced again.
    sync_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    prefect_deployment_id: Mapped[str | None] = mapped_column(String(64))
    sync_status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|synced|error
    sync_error: Mapped[str | None] = mapped_column(Text)
    synced_spec_hash: Mapped[str | None] = mapped_column(String(64))
    # The spec behind synced_spec_hash: a later change is sent as a PATCH of what differs.
    synced_spec: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_attempts: Mapped[int] = mapped_column(Integer, default=0)
    sync_next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Hash of the spec Prefect last rejected: full passes retry it only once it changes.
    sync_failed_spec_hash: Mapped[str | None] = mapped_column(String(64))

    managed_by: Mapped[str] = mapped_column(String(10), default="api")  # ui | api | file
    # Hash of the connector as the last `deployments apply` left it (drift detection).
    applied_file_hash: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))

    source: Mapped[Source] = relationship(lazy="joined")
    destination: Mapped[Destination] = relationship(lazy="joined")
    owner: Mapped[User | None] = relationship(lazy="joined")

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (Index("ix_connectors_sync_status", "sync_status"), NEVER_REUSE_IDS)


class ConnectorRun(Base):
    __tablename__ = "connector_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # scheduled|running|retrying|succeeded|failed|crashed|cancelled|skipped
    status: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | manual | retry
    # The scheduled time the flow run was for (catch-up decides on it); None for manual runs.
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "Retry now" of a failed run: the run it retries.
    retry_of: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rows_loaded: Mapped[int | None] = mapped_column(BigInteger)
    bytes_loaded: Mapped[int | None] = mapped_column(BigInteger)
    table_stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    schema_changes: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    log_summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # transient | config | data | internal (conveyor.domain.vocabulary.FAILURE_CLASSES)
    failure_class: Mapped[str | None] = mapped_column(String(20))
    # Which end the failure concerns, for the link on the run page: source | destination.
    failure_side: Mapped[str | None] = mapped_column(String(20))
    # Attempt under way (1-based) and the most the retry policy allows; earlier attempts in
    # ``attempts``: [{"attempt", "prefect_flow_run_id", "started_at", "finished_at",
    # "status", "failure_class", "error"}].
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    # Why an open run is not moving: a lock, a concurrency slot, a retry's backoff.
    waiting_reason: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the run's data committed at the destination (before the record was closed).
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_connector_runs_connector_id_id", "connector_id", "id"),
        Index("ix_connector_runs_status", "status"),
        Index("ix_connector_runs_created_at", "created_at"),
        NEVER_REUSE_IDS,
    )


class RunLogChunk(Base):
    """A run's log lines (Conveyor's, dlt's, Prefect's; secrets masked), in the order they
    were written; kept after Prefect purges its own, deleted with the run."""

    __tablename__ = "connector_run_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("connector_runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_connector_run_logs_run_id_seq", "run_id", "seq"), NEVER_REUSE_IDS)


class ConnectorDailyStats(Base):
    """Runs of one connector on one UTC day, kept after retention deletes the runs: drives
    the connector's history chart."""

    __tablename__ = "connector_daily_stats"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (UniqueConstraint("connector_id", "day"), NEVER_REUSE_IDS)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(50))  # e.g. connector.create
    entity_type: Mapped[str] = mapped_column(String(30))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    # Masked copies: secret fields are "********" here, always.
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_entity_type_entity_id", "entity_type", "entity_id"),
        NEVER_REUSE_IDS,
    )


class OutboxEntry(Base):
    """A connector change waiting for the reconciler; committed with the change itself."""

    __tablename__ = "outbox"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connector_id: Mapped[int] = mapped_column(BigInteger, index=True)  # no FK: outlives deletes
    action: Mapped[str] = mapped_column(String(10))  # upsert | delete
    # For deletes: the deployment to remove, since the connector row is gone.
    prefect_deployment_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """Named leases: who runs the reconciler (SQLite fallback for the advisory lock) and
    the heartbeat and last-pass report of long-running parts."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    info: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class EntityVersion(Base):
    """One numbered version of a connector, source or destination: what it looked like
    after a change (masked: secret fields are "********"), who made it and when. A
    connector's version numbers are its ``version`` column; sources and destinations
    count their own. Kept after the entity is deleted (its history stays readable)."""

    __tablename__ = "entity_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(30))  # connector | source | destination
    entity_id: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    # create | update | restore | pause | resume | auto_pause | ...
    change: Mapped[str] = mapped_column(String(30))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # restore: the version it went back to
    restored_from: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("entity_type", "entity_id", "version"),
        NEVER_REUSE_IDS,
    )


class NotificationChannel(Base):
    """Where events go: a webhook, a Slack incoming webhook or an email address list.

    ``config`` holds the channel's settings; its secret fields (a webhook's signing
    secret, a Slack URL, an SMTP password) are ciphertext, write-only like every secret.
    ``events``: the event names it wants; ``connector_ids`` / ``tags``: which connectors
    (both None: every connector)."""

    __tablename__ = "notification_channels"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(20))  # webhook | slack | email
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    connector_ids: Mapped[list[int] | None] = mapped_column(JSONType)
    tags: Mapped[list[str] | None] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str | None] = mapped_column(String(100))


class NotificationEvent(Base):
    """Something to tell people, written in the transaction of what caused it. ``key`` is
    the idempotency key every delivery carries (the body's ``id``)."""

    __tablename__ = "notification_events"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    connector_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # outlives deletes
    # The event body (as sent to webhooks) without ``id`` / ``event`` / ``occurred_at``.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class NotificationDelivery(Base):
    """One event to one channel: the delivery outbox. Rows are made with the event (for
    the channels subscribed at that moment) and worked off with backoff."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("notification_events.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|delivered|expired
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A sender holds the row until then (a process killed mid-send frees it when it passes).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("event_id", "channel_id"),
        Index("ix_notification_deliveries_status_next", "status", "next_attempt_at"),
        NEVER_REUSE_IDS,
    )
