"""schemathesis hooks for the fuzz runs (loaded through SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

The one thing kept from the fuzzer: the session's OWN credentials. A case that would revoke
the token it runs with (DELETE /tokens/<own>), or delete, demote, disable or reset the
password of the user it runs as (/users/<own>...), is sent for an id that does not exist
instead (a 404, checked like any other answer). Everything else — other users, other
tokens, every other route — is fuzzed as generated (``?wait`` capped, see below).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

from conveyor.domain.models import DB_BIGINT_MAX

OWN_USER_ID = int(os.environ.get("CONVEYOR_FUZZ_OWN_USER_ID", "0"))
OWN_TOKEN_ID = int(os.environ.get("CONVEYOR_FUZZ_OWN_TOKEN_ID", "0"))


def _own(case: Any) -> str | None:
    params = case.path_parameters or {}
    path = case.operation.path
    if path.startswith("/api/v1/tokens/") and params.get("token_id") == OWN_TOKEN_ID:
        return "token_id"
    if path.startswith("/api/v1/users/") and params.get("user_id") == OWN_USER_ID:
        return "user_id" if case.method.upper() != "GET" else None
    return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    name = _own(case)
    if name is not None:
        case.path_parameters[name] = DB_BIGINT_MAX  # no such row: a 404
    # ?wait=N holds a connector write until the reconciler syncs it, up to N seconds; no
    # reconciler runs here, so every such case would take N seconds. One at most.
    query = case.query or {}
    try:
        too_long = float(query.get("wait", 0)) > 1
    except (TypeError, ValueError):
        too_long = False  # not a number: refused with a 422 at once
    if too_long:
        query["wait"] = 1
