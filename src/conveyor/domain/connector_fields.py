"""The connector's plain fields: one list that the API models, the connectors service
(create, update, audit snapshot) and deployment files (load, plan, apply, export) read.

A *plain* field is a value stored as it is in one column of ``connectors`` and taken
as it is by the API and by deployment files. The fields that are more than a value —
``name`` (the identity), ``source_id`` / ``destination_id`` (references), the config
overrides (merged, validated per type, encrypted), ``deployment_name`` (only files set
it) — are written out where they are used. Adding a plain field is: the column, a
migration, one entry here (see docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import Field

from conveyor.domain.job_variables import JobVariablesField
from conveyor.domain.retry_policy import RetryPolicyField, default_policy
from conveyor.domain.vocabulary import CatchUp, SchemaChangePolicy

if TYPE_CHECKING:
    from conveyor.settings import Settings

Yaml = Literal["top", "own"]
# Bounded as the database stores them (a 32-bit INTEGER column).
PositiveCount = Annotated[int, Field(ge=1, le=1000)]
PositiveMinutes = Annotated[int, Field(ge=1, le=527_040)]  # up to a year


def left_out_unchanged(schema: dict[str, Any]) -> None:
    """A PATCH field that may be left out (unchanged) but never sent as null: its
    internal default (None: not sent) is not a value a client may send, so the OpenAPI
    document shows none."""
    schema.pop("default", None)


@dataclass(frozen=True)
class ConnectorField:
    """One plain connector field.

    ``type`` is its API type (create and output; a PATCH takes it or null).
    ``nullable``: whether a PATCH may set it to null (it is optional there either way).
    ``prefect``: it reaches the Prefect deployment, so ``sync/spec.py`` must carry it
    (a test checks that it does).
    ``yaml``: "top" — a top-level key of a deployment file with the same name and type,
    after ``entrypoint``; "own" — placed by hand by ``deployments_io`` (``description``
    right after ``name``, ``schedule`` / ``timezone`` in ``schedule:``, ``tags``, and
    ``is_active`` as ``connector.active``).
    ``setting``: a Settings attribute the field follows when stored as null; the API and
    exports show the setting's value, and a file giving that value stores null.
    ``implied``: like ``setting`` for a fixed default (a pydantic model's defaults, e.g.
    the retry policy): what a stored null stands for, shown instead of null.
    """

    name: str
    type: Any
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    max_length: int | None = None
    nullable: bool = True
    prefect: bool = False
    yaml: Yaml = "top"
    setting: str | None = None
    implied: Callable[[], Any] | None = None

    def create_field(self) -> tuple[Any, Any]:
        """(type, Field) for the create model and deployment files."""
        if self.default_factory is not None:
            factory = self.default_factory
            return self.type, Field(default_factory=factory, max_length=self.max_length)
        return self.type, Field(default=self.default, max_length=self.max_length)

    def patch_field(self) -> tuple[Any, Any]:
        """(type, Field) for the patch model: left out means unchanged; null only where
        the field is ``nullable`` (the schema says so, and refuses a null elsewhere)."""
        if self.nullable:
            return self.type | None, Field(default=None, max_length=self.max_length)
        return self.type, Field(
            default=None, max_length=self.max_length, json_schema_extra=left_out_unchanged
        )

    def out_type(self) -> Any:
        """The output type: a field that follows a setting is never null there."""
        if self.setting is not None:
            return str
        if self.implied is not None:
            return next(t for t in get_args(self.type) if t is not type(None))
        return self.type

    def shown(self, value: Any, settings: Settings) -> Any:
        """The stored value as the API and exports show it (a null follows the setting)."""
        if value is None and self.setting is not None:
            return getattr(settings, self.setting)
        if value is None and self.implied is not None:
            return self.implied()
        return self.copy(value)

    def copy(self, value: Any) -> Any:
        """The stored value, lists copied and a null list read as empty."""
        if value is None and self.default_factory is not None:
            return self.default_factory()
        return list(value) if isinstance(value, list) else value

    def stored(self, value: Any, settings: Settings) -> Any:
        """A value from a file as stored: the setting's own value stores null."""
        if self.setting is not None and value == getattr(settings, self.setting):
            return None
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        if self.implied is not None and value == self.implied():
            return None
        return value


FIELDS: tuple[ConnectorField, ...] = (
    ConnectorField("description", str | None, max_length=2000, yaml="own"),
    ConnectorField("schedule", str | None, prefect=True, yaml="own"),
    ConnectorField("timezone", str, default="UTC", nullable=False, prefect=True, yaml="own"),
    ConnectorField("is_active", bool, default=True, nullable=False, prefect=True, yaml="own"),
    ConnectorField(
        "tags", list[str], default_factory=list, nullable=False, prefect=True, yaml="own"
    ),
    ConnectorField(
        "work_pool_name", str | None, max_length=200, prefect=True, setting="default_work_pool"
    ),
    ConnectorField(
        "work_queue_name", str | None, max_length=200, prefect=True, setting="default_work_queue"
    ),
    # Missed scheduled times (worker or platform down): decided by the flow, not Prefect.
    ConnectorField("catch_up", CatchUp, default="latest", nullable=False),
    # Automatic retries of transient failures (conveyor.domain.retry_policy); null = defaults.
    ConnectorField("retry_policy", RetryPolicyField | None, implied=default_policy),
    # New source columns: added, left out, or the connector paused (pipelines/runner.py).
    ConnectorField("schema_changes", SchemaChangePolicy, default="propagate", nullable=False),
    # Pause the connector after this many failed runs in a row (services/notify); null = off.
    ConnectorField("auto_pause_after_failures", PositiveCount | None),
    # Fire connector.stale when no run succeeded for this long; null = no SLA.
    ConnectorField("freshness_sla_minutes", PositiveMinutes | None),
    # Prefect job variables of its flow runs (domain/job_variables.py: resources, placement,
    # env, image), checked against the work pool's template; null = the pool's defaults.
    ConnectorField("job_variables", JobVariablesField | None, prefect=True),
)


def stored_values(row: object) -> dict[str, Any]:
    """Every plain field of a connector row (or anything with the same attributes)."""
    return {f.name: f.copy(getattr(row, f.name)) for f in FIELDS}


BY_NAME: dict[str, ConnectorField] = {f.name: f for f in FIELDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
TOP_LEVEL: tuple[ConnectorField, ...] = tuple(f for f in FIELDS if f.yaml == "top")
