"""/health (no auth) and /me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conveyor import __version__
from conveyor.services import health
from conveyor.web.deps import CurrentActor, SettingsDep

router = APIRouter(tags=["meta"])


@router.get("/health", summary="Health of each component (no authentication)")
async def get_health(settings: SettingsDep) -> JSONResponse:
    components = await run_in_threadpool(health.check_all, settings)
    body = {
        "status": "ok" if all(c.ok for c in components) else "degraded",
        "version": __version__,
        "components": {c.name: c.as_dict() for c in components},
    }
    # 503 only when this process cannot serve at all (no database).
    code = 200 if components[0].ok else 503
    return JSONResponse(body, status_code=code)


@router.get("/health/live", summary="Liveness: the process serves requests (no checks)")
async def get_liveness() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/me", summary="Who am I")
def me(actor: CurrentActor) -> dict[str, Any]:
    return {"username": actor.username, "role": actor.role, "id": actor.user_id}
