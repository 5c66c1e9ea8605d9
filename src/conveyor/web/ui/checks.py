"""'Test connection' and 'Discover tables', wrapped so the page always gets an answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from conveyor.domain.vocabulary import secret_values
from conveyor.errors import ConveyorError
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import mask_text
from conveyor.settings import Settings

log = logging.getLogger("conveyor.web.ui")


@dataclass
class CheckResult:
    ok: bool
    message: str


@dataclass
class Discovery:
    """What a source offers: table (or file, or resource) names, or why we could not tell."""

    names: list[str] = field(default_factory=list)
    error: str | None = None
    what: str = "tables"
    items: list[Any] = field(default_factory=list)  # as discovered: tables with their columns


def _secrets_of(kind: Kind, type_name: str, config: dict[str, Any]) -> list[str]:
    """The values of the type's secret fields: what must never reach the page."""
    try:
        fields = get_type(kind, type_name).secret_fields
    except ConveyorError:
        return []
    return secret_values(config, fields)


def check(
    kind: Kind, type_name: str, config: dict[str, Any], settings: Settings | None = None
) -> CheckResult:
    """Try the connection; any failure becomes a reason with secrets masked."""
    try:
        from conveyor.pipelines.check import check as run_check
    except ImportError:
        return CheckResult(False, "Connection checks are not available in this build.")
    try:
        result = run_check(kind, type_name, config, settings=settings)
    except ConveyorError as exc:
        return CheckResult(False, mask_text(str(exc), _secrets_of(kind, type_name, config)))
    except Exception as exc:  # a driver's own error: show it, never the secrets in it
        log.info("connection check failed: %s", type(exc).__name__)
        return CheckResult(
            False, mask_text(f"{type(exc).__name__}: {exc}", _secrets_of(kind, type_name, config))
        )
    message = str(getattr(result, "message", "") or ("Connected" if result.ok else "Failed"))
    return CheckResult(bool(result.ok), mask_text(message, _secrets_of(kind, type_name, config)))


def _names_from(items: Any) -> list[str]:
    out = []
    for item in items or []:
        if isinstance(item, dict):
            name = item.get("name") or item.get("path") or item.get("table")
            if name:
                out.append(str(name))
        elif item:
            out.append(str(item))
    return out


def discover(type_name: str, config: dict[str, Any], settings: Settings | None = None) -> Discovery:
    """Table names (SQL), file names (files) or resources (REST) the source offers."""
    try:
        from conveyor.pipelines.check import discover as run_discover
    except ImportError:
        return Discovery(error="Discovery is not available in this build: type the names.")
    try:
        found = run_discover(type_name, config, settings=settings)
    except ConveyorError as exc:
        return Discovery(error=mask_text(str(exc), _secrets_of("source", type_name, config)))
    except Exception as exc:  # a driver's own error
        return Discovery(
            error=mask_text(
                f"{type(exc).__name__}: {exc}", _secrets_of("source", type_name, config)
            )
        )
    if isinstance(found, dict):
        for key in ("tables", "files", "resources"):
            if key in found:
                items = found[key] if isinstance(found[key], list) else []
                return Discovery(_names_from(found[key]), what=key, items=items)
        return Discovery(_names_from(found.keys()))
    return Discovery(_names_from(found))
