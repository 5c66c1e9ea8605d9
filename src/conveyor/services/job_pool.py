"""A connector's job variables checked at save time against the base job template of its
work pool's configured type.

A connector change never waits on Prefect (invariant 2): the save does not read the pool
from Prefect (a refused connection alone cost 1.5-3 s of Prefect client set-up, 12 s under
load in the fuzz). It checks against the template of the configured pool type
(``work_pool_type``, the chart's ``worker.type``; the reconciler creates the pool with that
type and the worker puts its template on it): Prefect's process template takes only
``env``; the Helm chart's kubernetes template takes every job variable. The gateway checks
again against the pool itself, as Prefect has it, before it applies the deployment (a sync
error naming the variable).
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.job_variables import ALL_VARIABLES, PROCESS_VARIABLES, accepted_problems
from conveyor.errors import ValidationFailed
from conveyor.services.authz import Actor, require_role
from conveyor.settings import Settings
from conveyor.sync.pools import PoolInfo


def pool_info(settings: Settings, pool: str) -> PoolInfo:
    """The pool as the reconciler creates it (its configured type's template)."""
    pool_type = settings.work_pool_type
    return PoolInfo(pool_type, ALL_VARIABLES if pool_type == "kubernetes" else PROCESS_VARIABLES)


def check(settings: Settings, variables: dict[str, Any] | None, work_pool_name: str | None) -> None:
    """Refuse job variables the connector's pool does not take, each on its field."""
    if not variables:
        return
    pool = work_pool_name or settings.default_work_pool
    info = pool_info(settings, pool)
    problems = accepted_problems(variables, info.variables, pool=pool, pool_type=info.type)
    if problems:
        raise ValidationFailed(
            problems, hint="set only what the pool's base job template has a variable for"
        )


def check_image(actor: Actor, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """Only an admin chooses the image a connector's flow runs in: the run holds the
    platform's key and its endpoints' secrets, and an image is any code at all."""
    if (after or {}).get("image") != (before or {}).get("image") and (after or {}).get("image"):
        require_role(actor, "admin", "choose the image a connector runs in")


def forget() -> None:
    """Nothing is cached any more; kept for the tests that call it between settings."""
