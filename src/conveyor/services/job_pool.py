"""A connector's job variables checked against its work pool's base job template at save time.

The pool is read from Prefect (quickly, cached for ``TTL`` seconds). When Prefect cannot be
reached or the pool does not exist yet, the check uses the template of the configured pool
type (``work_pool_type``: the reconciler creates a missing pool with it): Prefect's process
template takes only ``env``; the Helm chart's kubernetes template takes every job variable.
A connector change never waits long on Prefect (invariant 2), and the gateway checks again
against the pool itself before it applies the deployment (a sync error naming the variable).
"""

from __future__ import annotations

import logging
import threading
from time import monotonic
from typing import Any

from conveyor.domain.job_variables import ALL_VARIABLES, PROCESS_VARIABLES, accepted_problems
from conveyor.errors import ExternalError, ValidationFailed
from conveyor.settings import Settings
from conveyor.sync.gateway import PoolInfo, read_work_pool

log = logging.getLogger("conveyor.services.job_pool")

TTL = 30.0
_cache: dict[tuple[str, str], tuple[float, PoolInfo | None]] = {}
_lock = threading.Lock()


def pool_info(settings: Settings, pool: str) -> PoolInfo:
    """The pool as Prefect has it, or as the reconciler would create it."""
    found: PoolInfo | None = None
    if settings.prefect_api_url:
        key = (settings.prefect_api_url, pool)
        with _lock:
            hit = _cache.get(key)
        if hit is not None and monotonic() - hit[0] < TTL:
            found = hit[1]
        else:
            try:
                found = read_work_pool(settings.prefect_api_url, pool)
            except ExternalError as exc:
                log.info(
                    "work pool %s not read (%s): checking against its configured type", pool, exc
                )
            with _lock:
                _cache[key] = (monotonic(), found)
    if found is not None:
        return found
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


def forget() -> None:
    """Drop the cache (tests)."""
    with _lock:
        _cache.clear()
