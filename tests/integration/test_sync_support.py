"""Shared by the tests/integration/test_sync_*.py modules (holds no tests itself).

A real Prefect server (the session's), a real Conveyor database, connectors changed
through the services exactly as the API does, and Prefect read back with the official
client, independently of the gateway under test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from conveyor.db.models import Connector, OutboxEntry
from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate
from conveyor.secrets import SecretBox
from conveyor.services import catalog, connectors
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync.gateway import PrefectGateway
from conveyor.sync.reconciler import PassReport, Reconciler
from tests.fixtures.net import wait_for as wait_for  # re-exported for test_sync_*.py

WORK_POOL = "conveyor-sync-tests"
_names = itertools.count(1)


async def _with_client(fn: Callable[[Any], Any]) -> Any:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=os.environ["PREFECT_API_URL"]) as client:
        return await fn(client)


def prefect(fn: Callable[[Any], Any]) -> Any:
    """Run ``await fn(client)`` with a plain PrefectClient (reading back, UI-like edits)."""
    return asyncio.run(_with_client(fn))


def deployments_tagged(*tags: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    async def read(client: Any) -> list[Any]:
        out: list[Any] = []
        while True:
            page = await client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=list(tags))),
                limit=200,
                offset=len(out),
            )
            out.extend(page)
            if len(page) < 200:
                return out

    return prefect(read)  # type: ignore[no-any-return]


def delete_all_conveyor_deployments() -> None:
    async def wipe(client: Any) -> None:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

        while True:
            page = await client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["conveyor"])),
                limit=200,
            )
            if not page:
                return
            for d in page:
                await client.delete_deployment(d.id)

    prefect(wipe)


@dataclass
class SyncEnv:
    settings: Settings
    box: SecretBox
    source_id: int
    destination_id: int

    @property
    def url(self) -> str:
        return self.settings.effective_database_url

    # --- changing connectors the way the API does ----------------------------------

    def create(self, schedule: str | None = "0 */6 * * *", **fields: Any) -> int:
        with session_scope(self.url) as s:
            c = connectors.create(
                ConnectorCreate(
                    name=fields.pop("name", f"sync-{next(_names)}"),
                    source_id=self.source_id,
                    destination_id=self.destination_id,
                    schedule=schedule,
                    source_config_override={"tables": ["orders"]},
                    **fields,
                ),
                session=s,
                actor=SYSTEM,
                box=self.box,
            )
            return int(c.id)

    def patch(self, cid: int, **fields: Any) -> None:
        with session_scope(self.url) as s:
            connectors.update(cid, ConnectorPatch(**fields), session=s, actor=SYSTEM, box=self.box)

    def delete(self, cid: int) -> None:
        with session_scope(self.url) as s:
            connectors.delete(cid, session=s, actor=SYSTEM)

    def sql(self, statement: str, **params: Any) -> None:
        with session_scope(self.url) as s:
            s.execute(text(statement), params)

    def row(self, cid: int) -> Connector:
        with session_scope(self.url) as s:
            c = s.get(Connector, cid)
            assert c is not None
            s.expunge(c)
            return c

    def rows(self) -> list[Connector]:
        with session_scope(self.url) as s:
            out = list(s.scalars(select(Connector).order_by(Connector.id)).unique())
            s.expunge_all()
            return out

    def queued(self) -> int:
        with session_scope(self.url) as s:
            return len(list(s.scalars(select(OutboxEntry))))

    def synced_count(self) -> int:
        return sum(1 for r in self.rows() if r.sync_status == "synced")

    # --- reconciling -----------------------------------------------------------------

    def outbox_pass(self) -> PassReport:
        return self._run("outbox_pass")

    def outbox_pass_calls(self) -> tuple[PassReport, dict[str, int]]:
        """An outbox pass and the Prefect calls it made, by kind."""
        calls: dict[str, int] = {}
        report = self._run("outbox_pass", calls)
        return report, calls

    def full_pass(self) -> tuple[PassReport, dict[str, int]]:
        calls: dict[str, int] = {}
        report = self._run("full_pass", calls)
        return report, calls

    def _run(self, method: str, calls: dict[str, int] | None = None) -> Any:
        async def go() -> Any:
            assert self.settings.prefect_api_url
            async with PrefectGateway(self.settings.prefect_api_url) as gw:
                report = await getattr(Reconciler(self.settings, gw), method)()
                if calls is not None:
                    calls.update(gw.calls)
                return report

        return asyncio.run(go())

    # --- Prefect, read back ----------------------------------------------------------

    def deployment_of(self, cid: int) -> Any:
        """The one deployment tagged as this connector's (fails on none or several)."""
        found = deployments_tagged("conveyor", f"connector-{cid}")
        assert len(found) == 1, f"connector {cid} has {len(found)} deployments"
        return found[0]

    # --- a reconciler process --------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONVEYOR_DATABASE_URL=self.url,
            CONVEYOR_HOME=str(self.settings.home),
            CONVEYOR_DEFAULT_WORK_POOL=WORK_POOL,
            CONVEYOR_RECONCILE_INTERVAL="2",
            PREFECT_API_URL=str(self.settings.prefect_api_url),
        )
        assert self.settings.secret_key is not None
        env["CONVEYOR_SECRET_KEY"] = self.settings.secret_key.get_secret_value()
        return env

    def start_reconciler(self, log: Path, *extra: str) -> subprocess.Popen[bytes]:
        """``conveyor reconcile`` in its own process (short intervals for tests)."""
        cmd = [
            str(Path(sys.executable).parent / "conveyor"),
            "reconcile",
            "--poll",
            "0.2",
            "--lease-ttl",
            "3",
            "--retry-base",
            "0.5",
            "--retry-cap",
            "3",
            *extra,
        ]
        with open(log, "ab") as fh:
            return subprocess.Popen(cmd, env=self.env(), stdout=fh, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(name="sync_env")
def sync_env_fixture(settings: Settings, prefect_api_url: str) -> Iterator[SyncEnv]:
    """A Conveyor database (both backends) talking to the session's Prefect server."""
    delete_all_conveyor_deployments()
    settings = settings.model_copy(
        update={"default_work_pool": WORK_POOL, "prefect_api_url": prefect_api_url}
    )
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as s:
        src = catalog.create(
            "source",
            EndpointCreate(
                name="warehouse",
                type="sql_database",
                config={"host": "db", "port": 5432, "database": "d", "username": "u"},
            ),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        dst = catalog.create(
            "destination",
            EndpointCreate(name="lake", type="duckdb", config={}),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        ids = (int(src.id), int(dst.id))
    yield SyncEnv(settings, box, *ids)
