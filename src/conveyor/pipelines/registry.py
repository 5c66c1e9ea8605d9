"""The registry of source and destination types.

Adding a type is adding one module under ``sources/`` or ``destinations/`` and one line
here. Type modules import dlt lazily, so loading the registry stays cheap for the web app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines import network, paths
from conveyor.pipelines.config import TypeConfig
from conveyor.pipelines.destinations.duckdb import DuckdbConfig
from conveyor.pipelines.destinations.filesystem import FilesystemDestinationConfig
from conveyor.pipelines.destinations.postgres import PostgresDestinationConfig
from conveyor.pipelines.destinations.rest_api import RestApiDestinationConfig
from conveyor.pipelines.destinations.sftp import SftpConfig
from conveyor.pipelines.sources.filesystem import FilesystemSourceConfig
from conveyor.pipelines.sources.rest_api import RestApiSourceConfig
from conveyor.pipelines.sources.sql_database import SqlDatabaseConfig
from conveyor.settings import Settings, get_settings

Kind = Literal["source", "destination"]


@dataclass(frozen=True)
class TypeInfo:
    kind: Kind
    name: str
    title: str
    config_model: type[TypeConfig]
    module: str  # where the runtime code for the type lives

    @property
    def secret_fields(self) -> frozenset[str]:
        return self.config_model.secret_fields()

    @property
    def connection_fields(self) -> frozenset[str]:
        """Fields that say where the type connects (see ``TypeConfig``)."""
        return self.config_model.connection_fields()

    def json_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema(by_alias=True)


_TYPES: dict[tuple[Kind, str], TypeInfo] = {}


def register(kind: Kind, name: str, title: str, model: type[TypeConfig], module: str) -> None:
    _TYPES[(kind, name)] = TypeInfo(kind, name, title, model, module)


_S = "conveyor.pipelines.sources."
_D = "conveyor.pipelines.destinations."
register("source", "sql_database", "SQL database", SqlDatabaseConfig, _S + "sql_database")
register(
    "source", "filesystem", "Files (local, NFS, S3)", FilesystemSourceConfig, _S + "filesystem"
)
register("source", "rest_api", "REST API", RestApiSourceConfig, _S + "rest_api")
register("destination", "duckdb", "DuckDB", DuckdbConfig, _D + "duckdb")
register("destination", "postgres", "PostgreSQL", PostgresDestinationConfig, _D + "postgres")
register(
    "destination",
    "filesystem",
    "Files (local, NFS, S3)",
    FilesystemDestinationConfig,
    _D + "filesystem",
)
register("destination", "sftp", "SFTP", SftpConfig, _D + "sftp")
register("destination", "rest_api", "REST endpoint", RestApiDestinationConfig, _D + "rest_api")


def get_type(kind: Kind, name: str) -> TypeInfo:
    """The registered type, or a NotFound naming the known ones."""
    try:
        return _TYPES[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in _TYPES if k == kind))
        raise ValidationFailed.field(
            "type", f"unknown {kind} type '{name}' (known: {known})"
        ) from None


def list_types(kind: Kind) -> list[TypeInfo]:
    return sorted((t for (k, _), t in _TYPES.items() if k == kind), key=lambda t: t.name)


def validate_config(
    kind: Kind,
    type_name: str,
    config: dict[str, Any],
    *,
    loc: str = "config",
    settings: Settings | None = None,
) -> TypeConfig:
    """Validate ``config`` against the type's model; every problem names its field.

    Local paths must lie inside the allowed roots of ``settings`` (default: the process's).
    """
    info = get_type(kind, type_name)
    if not isinstance(config, dict):
        raise ValidationFailed.field(loc, "must be an object")
    try:
        model = info.config_model.model_validate(config)
    except ValidationError as exc:
        raise ValidationFailed(pydantic_problems(exc, loc)) from None
    paths.confine(kind, type_name, model, settings=settings or get_settings(), loc=loc)
    # Addresses the network policy refuses (the platform's own services, metadata, loopback
    # in production); names are resolved and judged at each run, check and connection.
    network.validate_config(model, settings or get_settings(), prefix=loc)
    return model


def pydantic_problems(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    """pydantic errors as FieldProblems with dotted locations under ``prefix``."""
    problems = []
    for err in exc.errors(include_url=False):
        parts = [str(p) for p in err["loc"] if not _is_union_tag(p)]
        loc = ".".join(([prefix] if prefix else []) + parts)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(FieldProblem(loc, msg))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member ("str", "TableSpec", ...) in the location path.
    return isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "dict[str,any]"))


def known_types() -> dict[Kind, list[str]]:
    return {
        "source": [t.name for t in list_types("source")],
        "destination": [t.name for t in list_types("destination")],
    }
