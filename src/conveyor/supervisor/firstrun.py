"""``python -m conveyor.supervisor.firstrun ID...``: start a manual run of each connector.

A separate short-lived process, so that the supervisor never imports the Prefect client
(its memory and threads would stay in the long-running supervisor for one call).
Prints one JSON object per connector: ``{"connector_id": 1, "run_id": 7}`` or ``"error"``.
"""

from __future__ import annotations

import json
import sys

from conveyor.errors import ConveyorError
from conveyor.services import runs
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync.flow_runs import create_flow_run


def main(argv: list[str]) -> int:
    settings = Settings()
    failed = 0
    for raw in argv:
        connector_id = int(raw)
        try:
            run = runs.trigger(connector_id, settings=settings, actor=SYSTEM, start=create_flow_run)
            out: dict[str, object] = {"connector_id": connector_id, "run_id": run.id}
        except ConveyorError as exc:
            failed += 1
            out = {"connector_id": connector_id, "error": str(exc)}
        print(json.dumps(out), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
