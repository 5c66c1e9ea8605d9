"""The deployment file format: one connector's Prefect deployment (+ the connector itself).

The top level is the deployment exactly as the original ``deployments/`` README shows it;
the optional ``connector:`` block says what the connector copies. The pydantic models here
check shapes and single values; ``loader`` adds per-type configs, secrets, paths and the
checks across files.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from conveyor.domain.connector_fields import TOP_LEVEL
from conveyor.domain.models import DB_BIGINT_MAX, NAME_PATTERN, TAG_PATTERN
from conveyor.domain.schedule import validate_cron, validate_timezone
from conveyor.domain.vocabulary import (
    CONNECTOR_TAG_PREFIX,
    ENTRYPOINT,
    FLOW_NAME,
    MARKER_TAGS,
    connector_tag,
    is_reserved_tag,
    stored_deployment_name,
)
from conveyor.pipelines.registry import get_type, known_types

MAX_FILE_BYTES = 1024 * 1024
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

_NAME = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


@lru_cache(maxsize=1024)
def _valid_cron(expr: str) -> str:
    # Cached: croniter's parse costs ~0.5 ms and directories repeat a few expressions.
    return validate_cron(expr, loc="")


@lru_cache(maxsize=1024)
def _valid_timezone(name: str) -> str:
    return validate_timezone(name, loc="")


@cache
def secret_fields(kind: str, type_name: str) -> frozenset[str]:
    """The type's secret field names (cached: the registry computes them per call)."""
    return get_type(kind, type_name).secret_fields  # type: ignore[arg-type]


class _Strict(BaseModel):
    # strict: YAML already gives typed values, so "1" for an integer is a mistake to report.
    # Whitespace is stripped as the API strips it, so a padded value compares equal.
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class Parameters(_Strict):
    """Flow-run parameters: the connector id and nothing else (secrets never go here)."""

    connector_id: int = Field(
        ge=1, le=DB_BIGINT_MAX, description="The connector this deployment runs"
    )


class Schedule(_Strict):
    """One cron schedule (5 fields) in an IANA timezone; no ``schedule`` = manual runs only."""

    cron: str | None = Field(description="5-field cron expression, e.g. '0 */6 * * *'")
    timezone: str = Field(default="UTC", description="IANA timezone, e.g. 'Europe/Paris'")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else _valid_cron(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _valid_timezone(value)


class Endpoint(_Strict):
    """A source or destination: by name (an existing one), or inline with type and config."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    type: str | None = Field(default=None, description="Registered type, e.g. 'filesystem'")
    config: dict[str, Any] | None = Field(
        default=None,
        description="Type configuration; secrets as ${ENV_VAR}; local paths may be relative "
        "to the file's directory",
    )
    max_concurrent_runs: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="A destination's cap on runs writing to it at once, across all "
        "connectors (none: no cap)",
    )

    @model_validator(mode="after")
    def _complete(self) -> Endpoint:
        if self.type is None and self.config is not None:
            raise ValueError("give type together with config")
        if self.type is None and self.max_concurrent_runs is not None:
            raise ValueError("give type and config together with max_concurrent_runs")
        if self.type is None and self.name is None:
            raise ValueError("give name (an existing one), or type and config")
        return self

    @property
    def is_reference(self) -> bool:
        return self.type is None


class ConnectorBlock(_Strict):
    """The connector the deployment runs; matched across environments by ``name``."""

    name: str = _NAME
    active: bool = True
    source: Endpoint
    destination: Endpoint
    source_config_override: dict[str, Any] = Field(default_factory=dict)
    destination_config_override: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, description="User tags (merged with tags)")

    @field_validator("source", "destination", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        # `source: orders-db` is short for `source: {name: orders-db}`.
        return {"name": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _source_has_no_cap(cls, value: Endpoint) -> Endpoint:
        if value.max_concurrent_runs is not None:
            raise ValueError(
                "max_concurrent_runs: only a destination caps its concurrent runs; "
                "a source has no such setting"
            )
        return value


class _DeploymentBase(_Strict):
    """One file: a Prefect deployment of ``run_connector_pipeline`` for one connector."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        str_strip_whitespace=True,
        title="Conveyor deployment file",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="Prefect deployment name (default for new connectors: connector-<id>)",
    )
    description: str | None = Field(default=None, max_length=2000)
    flow_name: Literal["run_connector_pipeline"] = FLOW_NAME
    entrypoint: str = Field(
        default=ENTRYPOINT,
        description="Flow entrypoint; Conveyor always deploys " + ENTRYPOINT,
    )
    parameters: Parameters
    schedule: Schedule | None = None
    tags: list[str] = Field(
        default_factory=list,
        description="connector-<id> and scheduled are derived markers; the rest are user tags",
    )
    connector: ConnectorBlock | None = None

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str) -> str:
        if value.rpartition(":")[2] != FLOW_NAME:
            raise ValueError(f"must point at the flow function {FLOW_NAME} (e.g. '{ENTRYPOINT}')")
        return value

    # --- derived ----------------------------------------------------------------------

    def user_tags(self) -> list[str]:
        """Top-level tags without the derived markers, then the connector block's tags."""
        out: list[str] = []
        extra = self.connector.tags if self.connector else []
        for tag in [*self.tags, *extra]:
            if is_reserved_tag(tag) or tag in out:
                continue
            out.append(tag)
        return out

    def deployment_name(self) -> str | None:
        """The name to store: None when it is just the default connector-<id>."""
        return stored_deployment_name(self.parameters.connector_id, self.name)


if TYPE_CHECKING:
    # The connector's top-level plain fields come from the field list; type checkers see
    # them as Any.

    class DeploymentFile(_DeploymentBase):
        def __init__(self, **data: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    DeploymentFile = create_model(
        "DeploymentFile",
        __base__=_DeploymentBase,
        __module__=__name__,
        **{f.name: f.create_field() for f in TOP_LEVEL},
    )


def tag_problems(tags: list[str], connector_id: int) -> list[tuple[int, str]]:
    """(index, reason) for each tag that is malformed or a marker that contradicts the file."""
    problems = []
    for i, tag in enumerate(tags):
        if tag.startswith(CONNECTOR_TAG_PREFIX):
            if tag != connector_tag(connector_id):
                problems.append(
                    (i, f"tag '{tag}' does not match parameters.connector_id {connector_id}")
                )
        elif tag in MARKER_TAGS:
            continue
        elif not re.match(TAG_PATTERN, tag) or len(tag) > 100:
            problems.append((i, f"tag '{tag}' may hold only letters, digits and _ . : -"))
    return problems


def json_schema() -> dict[str, Any]:
    """JSON schema of a deployment file, with per-type configs for inline endpoints."""
    schema = DeploymentFile.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for kind, names in known_types().items():
        variants: list[dict[str, Any]] = [
            {"type": "string", "description": f"Name of an existing {kind}"},
        ]
        for type_name in names:
            info = get_type(kind, type_name)
            ref = f"{kind}_{type_name}_config"
            config_schema = info.json_schema()
            defs.update(config_schema.pop("$defs", {}))
            defs[ref] = config_schema
            variants.append(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type"],
                    "properties": {
                        "name": {"type": "string", "pattern": NAME_PATTERN},
                        "type": {"const": type_name},
                        "config": {"$ref": f"#/$defs/{ref}"},
                    },
                }
            )
        variants.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}},
            }
        )
        defs["ConnectorBlock"]["properties"][kind] = {"anyOf": variants}
    defs.pop("Endpoint", None)
    return schema
