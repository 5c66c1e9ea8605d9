"""Connection checks and discovery for sources and destinations (called by the web API).

Both take the decrypted config; they never write it anywhere.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import importlib
from dataclasses import dataclass
from typing import Any

from conveyor.domain.vocabulary import secret_values
from conveyor.errors import ExternalError, ValidationFailed
from conveyor.pipelines import netguard
from conveyor.pipelines.explain import explain
from conveyor.pipelines.network import NetworkDenied, check_config
from conveyor.pipelines.registry import Kind, get_type, validate_config
from conveyor.settings import Settings

DEFAULT_TIMEOUT = 20.0

# Checks run in threads so a hung connection cannot hold the request past the timeout.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="conveyor-check")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


def _secrets(kind: Kind, type_name: str, config: dict[str, Any]) -> list[str]:
    return secret_values(config, get_type(kind, type_name).secret_fields)


def check(
    kind: Kind,
    type_name: str,
    config: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    settings: Settings | None = None,
) -> CheckResult:
    """Try the connection (and for a destination, write permission); ok or the reason."""
    try:
        settings = settings or Settings()
        model = validate_config(kind, type_name, config, settings=settings)
    except ValidationFailed as exc:
        return CheckResult(False, f"The configuration is invalid: {exc}")
    module = importlib.import_module(get_type(kind, type_name).module)
    try:
        # Checked here to name the field; netguard checks every connection of the check too.
        netguard.activate(settings)
        check_config(model, settings, prefix=f"{kind} config")
    except NetworkDenied as exc:
        return CheckResult(False, str(exc))
    # The pool thread runs in this context: the check's network policy goes with it.
    run_here = contextvars.copy_context().run
    if kind == "destination":
        future = _POOL.submit(run_here, module.check, model, settings=settings)
    else:
        future = _POOL.submit(run_here, module.check, model)
    try:
        message = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return CheckResult(False, f"No answer within {timeout:.0f} seconds.")
    except Exception as exc:
        return CheckResult(False, explain(exc, _secrets(kind, type_name, config)).message)
    return CheckResult(True, str(message))


def discover(
    type_name: str,
    config: dict[str, Any],
    *,
    timeout: float = 60.0,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Tables and columns (SQL) or matching files (filesystem) of a source."""
    model = validate_config("source", type_name, config, settings=settings)
    module = importlib.import_module(get_type("source", type_name).module)
    if not hasattr(module, "discover"):
        raise ValidationFailed.field("type", f"a {type_name} source has nothing to discover")
    settings = settings or Settings()
    try:
        netguard.activate(settings)
        check_config(model, settings, prefix="source config")
    except NetworkDenied as exc:
        raise ExternalError(exc.reason, transient=False) from None
    future = _POOL.submit(contextvars.copy_context().run, module.discover, model)
    try:
        return dict(future.result(timeout=timeout))
    except concurrent.futures.TimeoutError:
        raise ExternalError(f"no answer within {timeout:.0f} seconds", transient=True) from None
    except Exception as exc:
        why = explain(exc, _secrets("source", type_name, config))
        raise ExternalError(why.message, transient=why.transient) from None
