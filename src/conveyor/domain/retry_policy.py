"""A connector's retry policy: how often a transiently failed run is tried again, and after
how long. Only ``transient`` failures are retried (network, timeout, a server restarting, a
lock, HTTP 5xx/429); a config, data or internal failure needs a person.

Stored as JSON on the connector (``connectors.retry_policy``); null means the defaults.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WrapSerializer,
    field_validator,
)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_SECONDS = (60, 300, 900)
MAX_ATTEMPTS_LIMIT = 10
MAX_BACKOFF_SECONDS = 7 * 24 * 3600  # a week: beyond that a person should look


class RetryPolicy(BaseModel):
    """``max_attempts`` counts the first attempt (1 = never retried); attempt ``n`` that
    failed waits ``backoff_seconds[min(n-1, len-1)]`` before attempt ``n+1``."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=MAX_ATTEMPTS_LIMIT,
        description="Attempts in all, the first included (1 = no automatic retry)",
    )
    backoff_seconds: list[int] = Field(
        default_factory=lambda: list(DEFAULT_BACKOFF_SECONDS),
        min_length=1,
        max_length=MAX_ATTEMPTS_LIMIT,
        description="Seconds to wait after attempt 1, 2, ...; the last value repeats",
        # What _non_negative enforces, said in the schema (its message names the item).
        json_schema_extra={
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS}
        },
    )

    @field_validator("backoff_seconds")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        for i, seconds in enumerate(value):
            if seconds < 0 or seconds > MAX_BACKOFF_SECONDS:
                raise ValueError(
                    f"item {i} ({seconds}) must be between 0 and {MAX_BACKOFF_SECONDS} seconds"
                )
        return value

    def backoff_after(self, attempt: int) -> int:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return self.backoff_seconds[min(max(attempt, 1) - 1, len(self.backoff_seconds) - 1)]


def _as_dict(policy: RetryPolicy) -> dict[str, Any]:
    return policy.model_dump()


def _serialise(value: Any, handler: SerializerFunctionWrapHandler) -> Any:
    # The field holds the stored dict: serialise it as the policy it is (no warning, and
    # the schema stays the model's).
    return handler(RetryPolicy.model_validate(value) if isinstance(value, dict) else value)


# The connector field's type: checked as a RetryPolicy (defaults filled in), kept as the
# plain dict the JSON column stores.
RetryPolicyField = Annotated[RetryPolicy, AfterValidator(_as_dict), WrapSerializer(_serialise)]


def default_policy() -> dict[str, Any]:
    """The policy a stored null stands for, as the API and exports show it."""
    return RetryPolicy().model_dump()


def effective(stored: dict[str, Any] | None) -> RetryPolicy:
    """The policy a connector runs with (its stored one, else the defaults). A stored value
    that no longer validates (written past the API) falls back to the defaults."""
    if not stored:
        return RetryPolicy()
    try:
        return RetryPolicy.model_validate(stored)
    except ValueError:
        return RetryPolicy()
