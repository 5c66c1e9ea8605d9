"""Check on save: a source or destination that active connectors use is tried before a
change to it is saved, so a wrong password shows on the form, not at the next run.

A failing check saves nothing; the page asks "Save anyway?". That second submit cannot
resend the form (secrets are never echoed into the page), so the change it confirms travels
sealed: encrypted with the secret key (invariant 4: never in clear) and bound to the
endpoint, the user and the endpoint's last change, so it cannot be replayed elsewhere or
over a newer change.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.errors import ConveyorError, FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind
from conveyor.secrets import SecretBox
from conveyor.services import catalog
from conveyor.settings import Settings
from conveyor.web.ui import checks

CONFIRM = "confirm_save"  # the form field of "Save anyway"
SEALED = "pending_change"  # the sealed change it confirms


def active_users(used_by: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The connectors that would run with the change (paused ones run nothing)."""
    return [c for c in used_by if c.get("is_active")]


def try_change(
    kind: Kind,
    type_name: str,
    stored_plain: dict[str, Any],
    change: dict[str, Any],
    settings: Settings,
) -> checks.CheckResult:
    """Check the config the change would store: the stored one (decrypted) with the form's
    values on top, stored secrets kept where the form left them empty (as "Test
    connection" does). Call it outside any database transaction: it goes on the network."""
    config = catalog.with_stored_secrets(
        kind, type_name, stored_plain, change["values"], set(change["cleared"])
    )
    return checks.check(kind, type_name, config, settings)


def _binding(endpoint_id: int, username: str, stamp: Any) -> list[Any]:
    return [endpoint_id, username, str(stamp)]


def seal(
    box: SecretBox, change: dict[str, Any], endpoint_id: int, username: str, stamp: Any
) -> str:
    """The change, encrypted, for the "Save anyway" form."""
    body = {"for": _binding(endpoint_id, username, stamp), "change": change}
    return box.encrypt(json.dumps(body, default=str))


def unseal(
    box: SecretBox, token: str, endpoint_id: int, username: str, stamp: Any
) -> dict[str, Any]:
    """The change a "Save anyway" confirms, or a clear refusal when it no longer applies."""
    stale = ValidationFailed(
        [
            FieldProblem(
                SEALED,
                "the change to confirm no longer applies (it was changed since, or "
                "the change was not yours): submit the form again",
            )
        ]
    )
    try:
        body = json.loads(box.decrypt(token)) if token.startswith("fernet:") else None
    except (ConveyorError, ValueError):
        raise stale from None
    if not isinstance(body, dict) or body.get("for") != _binding(endpoint_id, username, stamp):
        raise stale
    change = body.get("change")
    if not isinstance(change, dict):
        raise stale
    return change
