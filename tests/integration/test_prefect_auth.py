"""Prefect's basic auth (the chart's prefectAuth): a real Prefect server started with
PREFECT_SERVER_API_AUTH_STRING refuses Conveyor's calls without the client's
PREFECT_API_AUTH_STRING and takes them with it, for the reconciler's gateway (deployments,
pools) and for the web app's health checks; its /health stays open for probes."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx
import pytest

from conveyor.errors import ExternalError
from conveyor.services import health
from conveyor.settings import Settings
from conveyor.sync.gateway import PrefectGateway
from tests.fixtures.net import free_port
from tests.fixtures.prefect import PrefectServer

AUTH = "conveyor:Pr3fect-Basic-Pass"


@pytest.fixture(scope="module")
def locked_prefect() -> object:
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_SERVER_API_AUTH_STRING", AUTH)
    server = PrefectServer(
        f"http://127.0.0.1:{free_port()}/api", Path(tempfile.mkdtemp(prefix="prefect-auth-"))
    )
    try:
        server.start()
    finally:
        mp.undo()  # only the server process has it
    yield server
    server.stop()


async def _make_pool(url: str, auth: str | None, pool: str) -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    with temporary_settings({PREFECT_API_AUTH_STRING: auth}):
        async with PrefectGateway(url) as gw:
            await gw.ensure_work_pool(pool)


def test_clients_authenticate_with_prefect_api_auth_string(locked_prefect, monkeypatch) -> None:
    url = locked_prefect.api_url
    assert httpx.get(url + "/health").status_code == 200  # probes need no credentials
    assert httpx.get(url + "/work_pools/default").status_code == 401

    # The reconciler's gateway: refused without the auth string or with a wrong one ...
    for auth in (None, "conveyor:wrong"):
        with pytest.raises(ExternalError):
            asyncio.run(_make_pool(url, auth, "auth-pool"))
    # ... and it creates the pool with it.
    asyncio.run(_make_pool(url, AUTH, "auth-pool"))
    basic = httpx.BasicAuth(*AUTH.split(":", 1))
    assert httpx.get(url + "/work_pools/auth-pool", auth=basic).status_code == 200

    # The web app's health checks.
    settings = Settings(prefect_api_url=url, default_work_pool="auth-pool")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    refused = health.check_work_pool(settings)
    assert not refused.ok and "HTTP 401" in refused.detail
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", AUTH)
    assert health.check_work_pool(settings).ok
    worker = health.check_worker(settings)
    assert "401" not in worker.detail and "no worker has polled" in worker.detail
