"""Where a connector's runs happen against where its destination keeps its data.

A DuckDB file (or a DuckLake with a catalog file) lives on one machine's disk. Flow runs of
a Kubernetes work pool are Jobs in pods of their own: each would write its own copy, lost
when the pod ends. Such a destination is refused for a connector whose work pool is not a
local process pool (``CONVEYOR_WORK_POOL_TYPE``), at save time (API, UI, deployment files)
and flagged by ``conveyor doctor``. The type says whether a config is bound to one machine
(``DestinationType.single_machine``); the pool's type comes from settings.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.contract import DestinationType
from conveyor.pipelines.registry import get_type
from conveyor.settings import Settings

INSTEAD = (
    "use a DuckLake destination (catalog in PostgreSQL, data on S3 or a shared volume) or "
    "PostgreSQL instead"
)


def pool_type(settings: Settings, work_pool_name: str | None) -> str | None:
    """The type of the connector's pool as configured: the default pool's is
    ``work_pool_type``; another pool's is not known here (None)."""
    if work_pool_name in (None, "", settings.default_work_pool):
        return settings.work_pool_type
    return None


def problem(
    settings: Settings,
    destination_type: str,
    config: Any,
    work_pool_name: str | None,
    *,
    loc: str = "destination_id",
    destination_name: str = "",
) -> FieldProblem | None:
    """A problem on ``loc`` when the destination is bound to one machine and the
    connector's pool does not run local processes; None otherwise. ``config`` is the
    decrypted destination config (a dict, or its validated model)."""
    kind = pool_type(settings, work_pool_name)
    if kind is None or kind == "process":
        return None
    info = get_type("destination", destination_type)
    if not isinstance(info, DestinationType):
        return None
    model = config
    if isinstance(config, dict):
        try:
            model = info.config_model.model_validate(config)
        except Exception:
            return None  # the config's own check names what is wrong with it
    why = info.single_machine(model, settings)
    if why is None:
        return None
    named = f"destination '{destination_name}'" if destination_name else "the destination"
    pool = work_pool_name or settings.default_work_pool
    return FieldProblem(
        loc,
        f"{named} ({info.title}) {why}, but work pool '{pool}' is a {kind} pool: each flow "
        f"run is a pod of its own and its data would be lost when the pod ends; {INSTEAD}",
    )


def check(
    settings: Settings,
    destination_type: str,
    config: Any,
    work_pool_name: str | None,
    *,
    loc: str = "destination_id",
    destination_name: str = "",
) -> None:
    """``problem`` as a ``ValidationFailed`` (422 in the API, the field's error in the UI)."""
    found = problem(
        settings,
        destination_type,
        config,
        work_pool_name,
        loc=loc,
        destination_name=destination_name,
    )
    if found is not None:
        raise ValidationFailed([found], hint=INSTEAD)
