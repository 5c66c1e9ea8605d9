"""Conveyor's errors: each carries a reason, and where useful a hint and the field at fault.

The web app maps them to HTTP status codes (``web/errors.py``), the CLI to exit codes
(``cli/common.py``, put around every command by ``cli/main.py``). ``ExternalError.transient``
says whether trying again later can help: the reconciler retries a transient Prefect error
with backoff and leaves a terminal one on the connector; the flow does not retry (Prefect's
next scheduled run, or "Run now", is the retry).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with the input: where (dotted field path or file:line) and why."""

    loc: str
    reason: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.reason}" if self.loc else self.reason


class ConveyorError(Exception):
    """Base error: a human reason and an optional hint on what to do about it."""

    transient = False

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.reason} ({self.hint})" if self.hint else self.reason


class ConfigurationError(ConveyorError):
    """A setting is missing or wrong."""


class ValidationFailed(ConveyorError, ValueError):
    """Input was rejected; ``problems`` lists every field at fault.

    A ValueError too, so pydantic validators can raise it and have it reported per field.
    """

    def __init__(self, problems: list[FieldProblem] | FieldProblem, hint: str | None = None):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("; ".join(str(p) for p in self.problems), hint)

    @classmethod
    def field(cls, loc: str, reason: str) -> ValidationFailed:
        return cls([FieldProblem(loc, reason)])


class NotFound(ConveyorError):
    """The thing asked for does not exist."""


class Conflict(ConveyorError):
    """The change clashes with the current state (duplicate name, stale version, in use)."""


class PermissionDenied(ConveyorError):
    """The caller may not do this."""


class NotAuthenticated(ConveyorError):
    """No valid session or token."""


class TooManyAttempts(ConveyorError):
    """Too many failed logins for an account or from an address: wait ``retry_after`` s."""

    def __init__(self, reason: str, retry_after: int, hint: str | None = None) -> None:
        super().__init__(reason, hint)
        self.retry_after = retry_after


class ExternalError(ConveyorError):
    """A system Conveyor talks to (Prefect, a source, a destination) failed."""

    def __init__(self, reason: str, hint: str | None = None, *, transient: bool = False):
        super().__init__(reason, hint)
        self.transient = transient
