"""Init container of the kubernetes worker: make the work pool a kubernetes pool with this chart's
base job template.

- pool missing: create it (type kubernetes, the template, the configured concurrency limit:
  worker.poolConcurrency, none when null);
- pool of type kubernetes (also when Conveyor's reconciler created it first, with the configured
  type and limit and Prefect's default kubernetes template): replace its base job template with
  this chart's; its limit is left as it is;
- pool of another type (an install that used the process worker): stop with an error that says
  what to do. Changing a pool's type is not possible in Prefect, and deleting a pool under
  running deployments is not something to do silently.
Usage: python sync-work-pool.py POOL TEMPLATE.json [LIMIT|none]   (PREFECT_API_URL set)
"""

import asyncio
import json
import sys
import time


async def main(pool_name: str, template_path: str, limit: int | None = None) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with open(template_path) as fh:
        template = json.load(fh)
    async with get_client() as client:
        deadline = time.monotonic() + 300
        while (error := await client.api_healthcheck()) is not None:
            if time.monotonic() > deadline:
                print(f"Prefect API not reachable after 300 s: {error}", file=sys.stderr)
                return 1
            print(f"waiting for the Prefect API: {error}", flush=True)
            await asyncio.sleep(3)
        try:
            pool = await client.read_work_pool(pool_name)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=pool_name,
                        type="kubernetes",
                        base_job_template=template,
                        concurrency_limit=limit,
                    )
                )
                print(f"created kubernetes work pool {pool_name!r} (limit {limit})")
                return 0
            except ObjectAlreadyExists:
                pool = await client.read_work_pool(pool_name)
        if pool.type != "kubernetes":
            print(
                f"work pool {pool_name!r} exists with type {pool.type!r}, not 'kubernetes'. "
                "Either set worker.workPool to a new pool name (the reconciler moves every "
                "connector's deployment to it on its next full pass), or delete the pool "
                f"(`prefect work-pool delete {pool_name}`) so that it is created again as a "
                "kubernetes pool.",
                file=sys.stderr,
            )
            return 2
        await client.update_work_pool(pool_name, WorkPoolUpdate(base_job_template=template))
        print(f"updated the base job template of kubernetes work pool {pool_name!r}")
        return 0


if __name__ == "__main__":
    raw = sys.argv[3] if len(sys.argv) > 3 else "none"
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], None if raw == "none" else int(raw))))
