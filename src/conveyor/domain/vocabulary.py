"""The words Conveyor and Prefect share, defined once: flow, tags, deployment names, run
statuses, how a connector's override meets its endpoint's config, which values are secret.

Everything here is a constant or a pure function; every layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

# --- the flow every Conveyor deployment runs ---------------------------------------

FLOW_NAME: Final = "run_connector_pipeline"
# A module path inside the installed package: a worker needs the package, not a file.
ENTRYPOINT: Final = f"conveyor.pipelines.flow:{FLOW_NAME}"

# --- tags --------------------------------------------------------------------------

OWNER_TAG: Final = "conveyor"  # the reconciler owns exactly the deployments tagged so
SCHEDULED_TAG: Final = "scheduled"  # the connector has a schedule
CONNECTOR_TAG_PREFIX: Final = "connector-"  # connector-<id>: finds a connector's deployment
MANUAL_RUN_TAG: Final = "trigger:manual"  # a flow run started by "Run now"
# run-record:<id> on a manual flow run names the record "Run now" made for it.
RUN_RECORD_TAG_PREFIX: Final = "run-record:"
# Tags Conveyor derives from a connector: never user tags.
MARKER_TAGS: Final = frozenset({OWNER_TAG, SCHEDULED_TAG})


# --- paused connectors: one wording in the API and the UI ---------------------------

PAUSED_MEANS: Final = "it does not run, on its schedule or by hand, until you resume it"
RESUME_TO_RUN: Final = "Resume the connector to run it"  # why Run now is disabled


def connector_tag(connector_id: int) -> str:
    """The tag that names a connector's deployment (found by tag, never by name)."""
    return f"{CONNECTOR_TAG_PREFIX}{connector_id}"


def connector_id_from_tags(tags: Iterable[str]) -> int | None:
    """The connector a deployment belongs to, from its ``connector-<id>`` tag."""
    for tag in tags:
        if tag.startswith(CONNECTOR_TAG_PREFIX):
            rest = tag[len(CONNECTOR_TAG_PREFIX) :]
            if rest.isdigit():
                return int(rest)
    return None


def run_record_tag(run_id: int) -> str:
    """The tag that tells a manual flow run which run record is its own."""
    return f"{RUN_RECORD_TAG_PREFIX}{run_id}"


def run_record_id_from_tags(tags: Iterable[str]) -> int | None:
    """The run record a flow run's tags name, if any."""
    for tag in tags:
        rest = tag.removeprefix(RUN_RECORD_TAG_PREFIX)
        if rest != tag and rest.isdigit():
            return int(rest)
    return None


def is_reserved_tag(tag: str) -> bool:
    """A marker or a ``connector-...`` tag: Conveyor sets these, users may not."""
    return tag in MARKER_TAGS or tag.startswith(CONNECTOR_TAG_PREFIX)


# --- deployment names --------------------------------------------------------------


def default_deployment_name(connector_id: int) -> str:
    """The deployment name of a connector no deployment file named otherwise."""
    return f"{CONNECTOR_TAG_PREFIX}{connector_id}"


def deployment_name(connector_id: int, stored: str | None) -> str:
    """The name a connector's deployment has: the stored one, else the default."""
    return stored or default_deployment_name(connector_id)


def stored_deployment_name(connector_id: int, name: str | None) -> str | None:
    """What to store for a deployment name: None when it is just the default."""
    return None if name == default_deployment_name(connector_id) else name


# --- runs --------------------------------------------------------------------------

RunStatus = Literal[
    "scheduled", "running", "retrying", "succeeded", "failed", "crashed", "cancelled", "skipped"
]
RUN_STATUSES: Final[tuple[RunStatus, ...]] = (
    "scheduled",
    "running",
    "retrying",  # an attempt failed transiently; the next one is scheduled in Prefect
    "succeeded",
    "failed",
    "crashed",
    "cancelled",
    "skipped",  # a missed scheduled time the connector's catch_up policy does not run
)
OPEN_RUN_STATUSES: Final[tuple[RunStatus, ...]] = ("scheduled", "running", "retrying")
Trigger = Literal["schedule", "manual", "retry"]
TRIGGER_SCHEDULE: Final = "schedule"
TRIGGER_MANUAL: Final = "manual"
TRIGGER_RETRY: Final = "retry"  # "Retry now" of a failed run

# Why a run failed, which decides whether it is retried (only transient failures are).
FailureClass = Literal["transient", "config", "data", "internal"]
FAILURE_CLASSES: Final[tuple[FailureClass, ...]] = ("transient", "config", "data", "internal")
FAILURE_TRANSIENT: Final = "transient"  # network, timeout, server unavailable, lock, 5xx
FAILURE_CONFIG: Final = "config"  # authentication, permission, missing table or path
FAILURE_DATA: Final = "data"  # types, constraints, schema conflicts
FAILURE_INTERNAL: Final = "internal"  # a bug in Conveyor or a library

CatchUp = Literal["skip", "latest", "all"]
CATCH_UP_POLICIES: Final[tuple[CatchUp, ...]] = ("skip", "latest", "all")

# What a run does when the source has columns the destination's tables lack:
# add them (propagate), load the rows without them (ignore_new_columns), or stop and pause
# the connector until someone decides (pause).
SchemaChangePolicy = Literal["propagate", "ignore_new_columns", "pause"]
SCHEMA_CHANGE_POLICIES: Final[tuple[SchemaChangePolicy, ...]] = (
    "propagate",
    "ignore_new_columns",
    "pause",
)
CATCH_UP_MAX: Final = 24  # catch_up=all runs at most this many missed times

# --- notifications -----------------------------------------------------------------

# What a notification channel can listen to (docs/operations.md shows each body).
NotificationEvent = Literal[
    "run.failed",  # a run ended failed (terminal, or its retries exhausted)
    "run.recovered",  # the first success after one or more failed runs
    "run.succeeded",  # every success (off unless a channel asks for it)
    "connector.auto_paused",  # paused by the system after N failed runs in a row
    "connector.stale",  # no success within freshness_sla_minutes (once per breach)
    "sync.error",  # not synced to Prefect for longer than notify_sync_error_after
]
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = (
    "run.failed",
    "run.recovered",
    "run.succeeded",
    "connector.auto_paused",
    "connector.stale",
    "sync.error",
)
# A channel created without "events" listens to these (run.succeeded is opt-in).
DEFAULT_CHANNEL_EVENTS: Final[tuple[NotificationEvent, ...]] = tuple(
    e for e in NOTIFICATION_EVENTS if e != "run.succeeded"
)
ChannelType = Literal["webhook", "slack", "email"]
CHANNEL_TYPES: Final[tuple[ChannelType, ...]] = ("webhook", "slack", "email")
# The header a webhook body is signed in: "sha256=<hex HMAC-SHA256 of the body>".
SIGNATURE_HEADER: Final = "X-Conveyor-Signature"
# Who the audit log names for what the system did by itself.
ACTOR_SYSTEM: Final = "system"
ACTOR_RECONCILER: Final = "reconciler"

# A destination's Prefect global concurrency limit (its max_concurrent_runs).
DESTINATION_LIMIT_PREFIX: Final = "conveyor-destination-"


def destination_limit_name(destination_id: int) -> str:
    """The name of the Prefect global concurrency limit that caps runs into a destination."""
    return f"{DESTINATION_LIMIT_PREFIX}{destination_id}"


# --- configs -----------------------------------------------------------------------


def merged_config(
    base: Mapping[str, Any] | None, override: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The endpoint's config with the connector's non-null overrides on top."""
    return {**(base or {}), **{k: v for k, v in (override or {}).items() if v is not None}}


# Fields that hold a URL whose password is a secret, though the field holds more.
URL_FIELDS: Final = ("connection_string", "catalog_url")


def secret_values(config: Mapping[str, Any], secret_fields: Iterable[str]) -> list[str]:
    """Every secret string in a (decrypted) config: what logs and messages must mask."""
    found: list[str] = []
    for name in secret_fields:
        value = config.get(name)
        if isinstance(value, str) and value:
            found.append(value)
        elif isinstance(value, dict):
            found.extend(v for v in value.values() if isinstance(v, str) and v)
    for name in URL_FIELDS:
        url = config.get(name)
        if isinstance(url, str):
            password = _url_password(url)
            if password and password not in found:
                found.append(password)
    return found


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return None
    return str(password) if password else None
