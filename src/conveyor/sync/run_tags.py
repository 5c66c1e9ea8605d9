"""The tags of a flow run Conveyor starts itself ("Run now", a retry).

Prefect's server gives a flow run created from a deployment the deployment's tags as well
as the ones asked for. A connector's deployment carries ``scheduled`` (the connector has a
schedule), so every "Run now" flow run carried it too, and Prefect's dashboard and filters
counted manual runs as scheduled ones (issue 22). Runs Prefect's scheduler creates keep it.
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.vocabulary import SCHEDULED_TAG


def without_inherited_schedule_tag(run_tags: list[str], requested: list[str]) -> list[str] | None:
    """The tags the flow run should have, or None when they are right already."""
    if SCHEDULED_TAG not in run_tags or SCHEDULED_TAG in requested:
        return None
    return [tag for tag in run_tags if tag != SCHEDULED_TAG]


def drop_inherited_schedule_tag(client: Any, run: Any, requested: list[str]) -> None:
    """Remove ``scheduled`` from a flow run just created from a deployment (a Prefect
    ``SyncPrefectClient`` and the run it returned); no call when it is not there."""
    tags = without_inherited_schedule_tag(list(run.tags or []), requested)
    if tags is not None:
        client.update_flow_run(run.id, tags=tags)
        run.tags = tags
