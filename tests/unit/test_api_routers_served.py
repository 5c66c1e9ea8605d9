"""Every router in ``web/api/`` is served by the app (issue 22: ``GET /api/v1/sync`` was
written, documented and tested through a hand-built app, but ``create_app`` never included
its router, so the real server answered 404)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from conveyor.settings import Settings
from conveyor.web import api
from conveyor.web.app import API_PREFIX, create_app

# Modules whose routes are served at the root instead of under /api/v1, and why.
AT_ROOT = {"conveyor.web.api.metrics": "Prometheus scrapes /metrics at the root"}


def _api_routers() -> dict[str, list[APIRouter]]:
    """Every module-level APIRouter of every module in the package, by module name."""
    found: dict[str, list[APIRouter]] = {}
    for info in pkgutil.iter_modules(api.__path__, api.__name__ + "."):
        module = importlib.import_module(info.name)
        routers = [v for v in vars(module).values() if isinstance(v, APIRouter)]
        found[info.name] = routers
    return found


def _served(routes: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, included routers walked (as the authz matrix does)."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):  # an included router
            for ctx in route.effective_route_contexts():
                for method in getattr(ctx.original_route, "methods", None) or ():
                    yield method, ctx.path
        else:
            for method in getattr(route, "methods", None) or ():
                yield method, route.path


def test_every_api_router_is_served(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'conveyor.db'}",
        secret_key=Fernet.generate_key().decode(),
    )
    app = create_app(settings)
    served = set(_served(app.router.routes))
    routers = _api_routers()
    assert "conveyor.web.api.sync" in routers  # the test sees the package's modules
    missing = []
    for module, module_routers in routers.items():
        assert module_routers, f"{module} defines no APIRouter"
        prefix = "" if module in AT_ROOT else API_PREFIX
        for router in module_routers:
            for route in router.routes:
                assert isinstance(route, APIRoute)
                for method in route.methods:
                    if (method, prefix + route.path) not in served:
                        missing.append(f"{method} {prefix}{route.path} ({module})")
    assert missing == [], "routes of web/api/ the app does not serve: include their router"
