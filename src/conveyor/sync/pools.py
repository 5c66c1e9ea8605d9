"""Work pools as Conveyor sees them: a pool's type and the job variables its base job
template takes (``PoolInfo``), Prefect's default template of a pool type, and reading a pool
or creating a missing one with the configured type and limit. The gateway caches the answer
and refuses an owned pool of another type (``PrefectGateway.work_pool``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from conveyor.errors import ExternalError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

# The gateway's logger: pool creation is one of its calls.
log = logging.getLogger("conveyor.sync.gateway")

T = TypeVar("T")


class Call(Protocol):
    """The gateway's ``_call``: counted, errors translated, busy answers retried."""

    def __call__(
        self, kind: str, doing: str, call: Callable[[], Awaitable[T]], /
    ) -> Awaitable[T]: ...


@dataclass(frozen=True)
class PoolInfo:
    """What Conveyor needs to know of a work pool: its type and the job variables its base
    job template takes."""

    type: str
    variables: frozenset[str]

    @classmethod
    def of(cls, pool_type: str, base_job_template: dict[str, Any] | None) -> PoolInfo:
        props = ((base_job_template or {}).get("variables") or {}).get("properties") or {}
        return cls(pool_type, frozenset(props))


def default_base_job_template(pool_type: str) -> dict[str, Any]:
    """Prefect's default base job template of a pool type (the worker's own)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    if pool_type == "kubernetes":
        from prefect_kubernetes.worker import KubernetesWorker

        return dict(KubernetesWorker.get_default_base_job_template())
    raise ExternalError(f"unknown work pool type {pool_type!r}")


async def read_or_create_pool(
    call: Call, client: PrefectClient, name: str, *, pool_type: str, concurrency: int | None
) -> PoolInfo:
    """The pool as Prefect has it; a missing one is created with ``pool_type`` and the
    ``concurrency`` limit (a pool created meanwhile by someone else is read)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async def read() -> PoolInfo | None:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            return None
        return PoolInfo.of(pool.type, pool.base_job_template)

    found = await call("read_work_pool", f"read work pool '{name}'", read)
    if found is not None:
        return found
    template = default_base_job_template(pool_type)
    pool = WorkPoolCreate(
        name=name,
        type=pool_type,
        base_job_template=template,
        concurrency_limit=concurrency,
    )

    async def create() -> PoolInfo | None:
        try:
            await client.create_work_pool(pool)
            log.info("created %s work pool %s (limit %s)", pool.type, name, pool.concurrency_limit)
        except ObjectAlreadyExists:
            return None  # created meanwhile by someone else (a worker): read it
        return PoolInfo.of(pool.type, template)

    created = await call("create_work_pool", f"create work pool '{name}'", create)
    if created is not None:
        return created
    found = await call("read_work_pool", f"read work pool '{name}'", read)
    if found is None:
        raise ExternalError(f"work pool '{name}' vanished while it was created", transient=True)
    return found
