"""Connection checks and discovery for sources and destinations (called by the web API).

Both take the decrypted config; they never write it anywhere. Each calls the type's own
``check`` / ``discover`` (one signature for every type: ``(config, context)``).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from conveyor.domain.vocabulary import secret_values
from conveyor.errors import ExternalError, ValidationFailed
from conveyor.pipelines import netguard
from conveyor.pipelines.contract import ConveyorType, TypeContext
from conveyor.pipelines.explain import explain
from conveyor.pipelines.network import NetworkDenied, check_config
from conveyor.pipelines.registry import Kind, get_type, validate_config
from conveyor.settings import Settings

DEFAULT_TIMEOUT = 20.0
T = TypeVar("T")

# Checks run in threads so a hung connection cannot hold the request past the timeout.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="conveyor-check")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


def _secrets(kind: Kind, type_name: str, config: dict[str, Any]) -> list[str]:
    return secret_values(config, get_type(kind, type_name).secret_fields)


def _prepare(
    kind: Kind, type_name: str, config: dict[str, Any], settings: Settings
) -> tuple[ConveyorType, Any, TypeContext]:
    """The type, its validated model and the context; the network policy made current."""
    model = validate_config(kind, type_name, config, settings=settings)
    return get_type(kind, type_name), model, TypeContext(settings=settings)


def _guard(kind: Kind, model: Any, settings: Settings) -> None:
    # Checked here to name the field; netguard checks every connection of the call too.
    netguard.activate(settings)
    check_config(model, settings, prefix=f"{kind} config")


def _in_thread(call: Callable[[], T], timeout: float) -> T:
    # The pool thread runs in this context: the call's network policy goes with it.
    return _POOL.submit(contextvars.copy_context().run, call).result(timeout=timeout)


def check(
    kind: Kind,
    type_name: str,
    config: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    settings: Settings | None = None,
) -> CheckResult:
    """Try the connection (and for a destination, write permission); ok or the reason."""
    settings = settings or Settings()
    try:
        info, model, context = _prepare(kind, type_name, config, settings)
    except ValidationFailed as exc:
        return CheckResult(False, f"The configuration is invalid: {exc}")
    try:
        _guard(kind, model, settings)
    except NetworkDenied as exc:
        return CheckResult(False, str(exc))
    try:
        message = _in_thread(lambda: info.check(model, context), timeout)
    except concurrent.futures.TimeoutError:
        return CheckResult(False, f"No answer within {timeout:.0f} seconds.")
    except Exception as exc:
        return CheckResult(False, explain(exc, _secrets(kind, type_name, config)).message)
    return CheckResult(True, str(message))


def discover(
    type_name: str,
    config: dict[str, Any],
    *,
    kind: Kind = "source",
    timeout: float = 60.0,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """What there is to copy: tables and columns (SQL), matching files, resources."""
    settings = settings or Settings()
    info, model, context = _prepare(kind, type_name, config, settings)
    if not info.discovers:
        raise ValidationFailed.field("type", f"a {type_name} {kind} has nothing to discover")
    try:
        _guard(kind, model, settings)
    except NetworkDenied as exc:
        raise ExternalError(exc.reason, transient=False) from None
    try:
        return dict(_in_thread(lambda: info.discover(model, context), timeout))
    except concurrent.futures.TimeoutError:
        raise ExternalError(f"no answer within {timeout:.0f} seconds", transient=True) from None
    except Exception as exc:
        why = explain(exc, _secrets(kind, type_name, config))
        raise ExternalError(why.message, transient=why.transient) from None
