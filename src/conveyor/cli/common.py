"""Shared CLI plumbing: settings, sessions, and turning errors into exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from conveyor.errors import (
    ConfigurationError,
    Conflict,
    ConveyorError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from conveyor.secrets import SecretBox
from conveyor.settings import Settings, get_settings

err_console = Console(stderr=True, highlight=False)
console = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES: dict[type[ConveyorError], int] = {
    ValidationFailed: 3,
    NotFound: 4,
    Conflict: 5,
    PermissionDenied: 6,
    ConfigurationError: 7,
}


def exit_code(exc: ConveyorError) -> int:
    for cls, code in EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    return 1


def handle_errors(func: F) -> F:
    """The CLI's error boundary: a ConveyorError ends as one line on stderr and the exit code
    of its class; Ctrl-C as ``interrupted`` and 130. ``install_error_boundary`` puts it
    around every command of the app."""
    if getattr(func, "__conveyor_boundary__", False):
        return func

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConveyorError as exc:
            err_console.print(f"error: {exc}", markup=False)
            raise typer.Exit(exit_code(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    wrapper.__conveyor_boundary__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def install_error_boundary(app: typer.Typer) -> None:
    """Wrap every command of ``app`` and of its groups in ``handle_errors``."""
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = handle_errors(command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            install_error_boundary(group.typer_instance)


def settings() -> Settings:
    return get_settings()


def secret_box(s: Settings | None = None) -> SecretBox:
    return SecretBox((s or settings()).secret_keys())


def read_stdin_line() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\r\n")
