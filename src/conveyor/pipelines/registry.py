"""The registry of source and destination types: the built-ins and the plugins.

Adding a built-in type is adding one module under ``sources/`` or ``destinations/`` (its
config model and its ``ConveyorType`` class, see ``contract``) and one line in ``BUILT_IN``.
A Python package adds types through the ``conveyor.types`` entry point group: each entry
names a type class (or a list of them); they are loaded once, on first use, and a plugin
that fails to load is reported by name and left out. Type modules import dlt lazily, so
loading the registry stays cheap for the web app.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines import network
from conveyor.pipelines.config import TypeConfig
from conveyor.pipelines.contract import ConveyorType, Kind
from conveyor.pipelines.destinations.duckdb import DuckdbDestination
from conveyor.pipelines.destinations.ducklake import DucklakeDestination
from conveyor.pipelines.destinations.filesystem import FilesystemDestination
from conveyor.pipelines.destinations.postgres import PostgresDestination
from conveyor.pipelines.destinations.rest_api import RestApiDestination
from conveyor.pipelines.destinations.sftp import SftpDestination
from conveyor.pipelines.failures import GENERIC, TypeFailure
from conveyor.pipelines.sources.filesystem import FilesystemSource
from conveyor.pipelines.sources.rest_api import RestApiSource
from conveyor.pipelines.sources.sql_database import SqlDatabaseSource
from conveyor.settings import Settings, get_settings

__all__ = ["ENTRY_POINT_GROUP", "Kind", "TypeInfo", "get_type", "list_types", "validate_config"]

log = logging.getLogger("conveyor.pipelines.registry")

ENTRY_POINT_GROUP = "conveyor.types"
TypeInfo = ConveyorType  # the name callers used before types were classes

BUILT_IN: tuple[type[ConveyorType], ...] = (
    SqlDatabaseSource,
    FilesystemSource,
    RestApiSource,
    DuckdbDestination,
    DucklakeDestination,
    PostgresDestination,
    FilesystemDestination,
    SftpDestination,
    RestApiDestination,
)

_TYPES: dict[tuple[Kind, str], ConveyorType] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_plugins_loaded = False
_loading = False  # a plugin module being imported may itself look types up
_lock = threading.RLock()


class PluginError(Exception):
    """A ``conveyor.types`` entry point that could not be loaded or is not a valid type."""


def register(type_class: type[ConveyorType] | ConveyorType, *, origin: str = "built-in") -> None:
    """Add a type; a second type of the same kind and name is refused."""
    instance = type_class() if isinstance(type_class, type) else type_class
    if not isinstance(instance, ConveyorType):
        raise PluginError(f"{origin}: {instance!r} is not a Conveyor type (ConveyorType)")
    for attr in ("kind", "name", "title", "config_model"):
        if not hasattr(instance, attr):
            raise PluginError(f"{origin}: type {type(instance).__name__} declares no {attr}")
    key = (instance.kind, instance.name)
    if key in _TYPES and type(_TYPES[key]) is not type(instance):
        raise PluginError(
            f"{origin}: a {instance.kind} type named '{instance.name}' is already registered "
            f"({_TYPES[key].module})"
        )
    _TYPES[key] = instance


def unregister(kind: Kind, name: str) -> None:
    """Remove a type (tests that register their own)."""
    _TYPES.pop((kind, name), None)


for _built_in in BUILT_IN:
    register(_built_in)


def load_plugins(*, force: bool = False) -> dict[str, str]:
    """Register the types of every ``conveyor.types`` entry point (once per process);
    the plugins that failed, by entry point, with the reason."""
    global _plugins_loaded, _loading
    with _lock:
        if (_plugins_loaded and not force) or _loading:
            return dict(_PLUGIN_ERRORS)
        _loading = True
        try:
            for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                _load_entry(entry)
        finally:
            _loading = False
            _plugins_loaded = True
        return dict(_PLUGIN_ERRORS)


def _load_entry(entry: importlib.metadata.EntryPoint) -> None:
    name = _describe(entry)
    try:
        for found in _as_types(entry.load(), name):
            register(found, origin=f"plugin {name}")
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        _PLUGIN_ERRORS[name] = reason
        log.error("Conveyor type plugin %s could not be loaded: %s", name, reason)
    else:
        _PLUGIN_ERRORS.pop(name, None)


def _describe(entry: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    package = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"'{entry.name}' ({entry.value}{package})"


def _as_types(loaded: Any, origin: str) -> Iterable[Any]:
    if isinstance(loaded, (type, ConveyorType)):
        return [loaded]
    if isinstance(loaded, (list, tuple)):
        return loaded
    raise PluginError(f"{origin} is neither a type class nor a list of them: {loaded!r}")


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, with the reason (for ``doctor`` and the logs)."""
    return load_plugins()


def _types() -> dict[tuple[Kind, str], ConveyorType]:
    if not _plugins_loaded:
        load_plugins()
    return _TYPES


def failure_classes() -> list[type[TypeFailure]]:
    """Every registered type's failure classes, in registry order, the generic ones last."""
    out: list[type[TypeFailure]] = []
    for t in _types().values():
        out += [f for f in t.failures if f not in out]
    return out + [f for f in GENERIC if f not in out]


def get_type(kind: Kind, name: str) -> ConveyorType:
    """The registered type, or a NotFound naming the known ones."""
    types = _types()
    try:
        return types[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in types if k == kind))
        broken = "".join(f"; plugin {p} failed to load: {why}" for p, why in _PLUGIN_ERRORS.items())
        raise ValidationFailed.field(
            "type", f"unknown {kind} type '{name}' (known: {known}){broken}"
        ) from None


def list_types(kind: Kind) -> list[ConveyorType]:
    return sorted((t for (k, _), t in _types().items() if k == kind), key=lambda t: t.name)


def default_type(kind: Kind) -> str:
    """The type a new source or destination form starts with."""
    return list_types(kind)[0].name


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
    info.confine(model, settings or get_settings(), loc=loc)
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
