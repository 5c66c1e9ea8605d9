"""The HTML UI: server-rendered pages (Jinja2) with htmx for the parts that update live.

``router`` holds every page; ``install(app)`` adds it and the static files to an app.
Every unsafe request through this router must carry the session's CSRF token.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from conveyor.web.ui import (
    admin,
    auth,
    connector_edit,
    connectors,
    csrf,
    endpoints,
    history,
    not_found,
    notifications,
    runs,
)
from conveyor.web.ui.base import WEB_DIR

router = APIRouter(dependencies=[Depends(csrf.verify)], include_in_schema=False)
# connector_edit first: its fixed paths (/connectors/new, /connectors/form/...) must win
# over the detail pages' /connectors/{id} patterns.
for _module_router in (
    auth.router,
    connector_edit.router,
    connectors.router,
    runs.router,
    endpoints.sources,
    endpoints.destinations,
    history.router,
    admin.router,
    notifications.router,
):
    router.include_router(_module_router)


def install(app: FastAPI) -> None:
    """Serve the UI pages at the root and the static assets under /static."""
    app.include_router(router)
    not_found.install(app)
    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
