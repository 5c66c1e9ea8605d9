"""Connectors cannot reach the platform's own services (issue 15, point 5).

Real servers on loopback: the session's Prefect server, recording HTTP servers (one stands in
for the Prefect API where a test must show it received nothing), the real PostgreSQL. Checked
at save, at check and at run, and at every connection: a name resolving to a denied address,
a redirect and a paginator's next link are refused too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from conveyor.errors import ValidationFailed
from conveyor.pipelines import netguard
from conveyor.pipelines.check import check, discover
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.pipelines.network import NetworkDenied
from conveyor.pipelines.registry import validate_config
from conveyor.settings import Settings
from tests.fixtures.pipelines import ConnectorFactory, pg_exec

OWN = "connectors cannot reach Conveyor's own services"


class Recorder:
    """An HTTP server on loopback that records every request and answers from ``routes``."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.routes: dict[str, Callable[[str], tuple[int, dict[str, str], Any]]] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                recorder.paths.append(self.path)
                route = recorder.routes.get(self.path.split("?", 1)[0])
                status, headers, body = route(self.path) if route else (200, {}, [])
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_OPTIONS = do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for r in made:
        r.close()


def rest_config(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "resources": [{"name": "items", "endpoint": {"path": "items", "data_selector": "data"}}],
        **extra,
    }


def stored_connector(factory: ConnectorFactory, source_config: dict[str, Any]) -> int:
    """A connector whose source config is written straight to the database, past save-time
    validation (as if stored before the policy existed): the run must refuse it itself."""
    cid = factory(("rest_api", rest_config("http://127.0.0.1:9/")), ("duckdb", {}))
    factory.update_source(cid, source_config)
    return cid


def with_prefect(s: Settings, url: str) -> Settings:
    return s.model_copy(update={"prefect_api_url": url})


# --- the Prefect API itself -----------------------------------------------------------


def test_rest_source_at_the_prefect_api_refused_at_save_check_and_run(
    factory: ConnectorFactory, prefect_api_url: str
) -> None:
    s = with_prefect(factory.settings, prefect_api_url)
    factory.settings = s
    base = prefect_api_url.rsplit("/api", 1)[0]
    config = rest_config(prefect_api_url)

    with pytest.raises(ValidationFailed) as saved:
        model = validate_config("source", "rest_api", config)
        from conveyor.pipelines.network import validate_config as network_validate

        network_validate(model, s)
    assert saved.value.problems[0].loc == "config.base_url"

    result = check("source", "rest_api", config, settings=s)
    assert not result.ok
    assert f"config.base_url: {prefect_api_url} is the Prefect API; {OWN}" in result.message

    cid = stored_connector(factory, config)
    with pytest.raises(
        RunFailed, match=f"source(\\.| config\\.)base_url: {base}.* is the Prefect API"
    ):
        run_connector(cid, settings=s)


def test_a_name_resolving_to_the_prefect_api_is_refused(prefect_api_url: str) -> None:
    port = urlsplit(prefect_api_url).port
    result = check("source", "rest_api", rest_config(f"http://localhost:{port}/api"))
    assert not result.ok
    assert "(localhost → " in result.message and "is the Prefect API" in result.message


def test_the_stand_in_prefect_api_receives_nothing_at_check_or_run(
    factory: ConnectorFactory, recorders: Callable[[], Recorder]
) -> None:
    prefect = recorders()
    s = with_prefect(factory.settings, prefect.url + "/api")
    factory.settings = s
    config = rest_config(prefect.url + "/api")
    assert not check("source", "rest_api", config, settings=s).ok
    with pytest.raises(RunFailed, match="is the Prefect API"):
        run_connector(stored_connector(factory, config), settings=s)
    # Below the field check: the connection itself is refused (netguard's socket hook).
    from conveyor.pipelines.sources import rest_api

    netguard.activate(s)
    model = validate_config("source", "rest_api", config)
    with pytest.raises(NetworkDenied, match=f"is the Prefect API; {OWN}"):
        rest_api.check(model)  # type: ignore[arg-type]
    assert prefect.paths == []


# --- second hops: redirects and next links ----------------------------------------------


def test_redirect_to_the_prefect_api_is_refused(
    factory: ConnectorFactory, recorders: Callable[[], Recorder]
) -> None:
    api, prefect = recorders(), recorders()
    s = with_prefect(factory.settings, prefect.url + "/api")
    factory.settings = s
    api.routes["/items"] = lambda _: (302, {"Location": prefect.url + "/api/flows"}, {})
    cid = factory(("rest_api", rest_config(api.url)), ("duckdb", {}))
    with pytest.raises(RunFailed, match=f"is the Prefect API; {OWN}"):
        run_connector(cid, settings=s)
    assert api.paths == ["/items"]
    assert prefect.paths == []
    # The check follows no redirect into it either.
    result = check("source", "rest_api", rest_config(api.url), settings=s)
    assert prefect.paths == []
    assert not result.ok


def test_next_link_to_the_prefect_api_is_refused(
    factory: ConnectorFactory, recorders: Callable[[], Recorder]
) -> None:
    api, prefect = recorders(), recorders()
    s = with_prefect(factory.settings, prefect.url + "/api")
    factory.settings = s
    api.routes["/items"] = lambda _: (
        200,
        {},
        {"data": [{"id": 1}], "next": prefect.url + "/api/flows?page=2"},
    )
    paginator = {"type": "json_link", "next_url_path": "next"}
    cid = factory(("rest_api", rest_config(api.url, paginator=paginator)), ("duckdb", {}))
    with pytest.raises(RunFailed, match=f"is the Prefect API; {OWN}"):
        run_connector(cid, settings=s)
    assert api.paths == ["/items"]
    assert prefect.paths == []


def test_a_normal_paginated_run_on_loopback_still_works(
    factory: ConnectorFactory, recorders: Callable[[], Recorder]
) -> None:
    api = recorders()
    pages = {1: {"data": [{"id": 1}], "next": api.url + "/items?page=2"}, 2: {"data": [{"id": 2}]}}
    api.routes["/items"] = lambda path: (200, {}, pages[2 if "page=2" in path else 1])
    paginator = {"type": "json_link", "next_url_path": "next"}
    cid = factory(("rest_api", rest_config(api.url, paginator=paginator)), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["tables"] == {"items": 2}


# --- metadata, loopback in production, Conveyor's database --------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://0.0.0.0/"],
)
def test_metadata_addresses_refused(url: str) -> None:
    result = check("source", "rest_api", rest_config(url))
    assert not result.ok and "connectors cannot reach it" in result.message


def test_production_refuses_a_loopback_postgres_source_local_mode_allows_it(
    factory: ConnectorFactory, pg_database: Any
) -> None:
    url = pg_database()
    pg_exec(url, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)")
    config = {"connection_string": url, "tables": ["t"]}
    local = factory.settings
    production = local.model_copy(update={"env": "production"})
    assert check("source", "sql_database", config, settings=local).ok
    refused = check("source", "sql_database", config, settings=production)
    assert not refused.ok and "loopback" in refused.message
    assert "config.connection_string: 127.0.0.1:5432/" in refused.message

    cid = factory(("sql_database", config), ("duckdb", {}))
    assert run_connector(cid, settings=local)["tables"] == {"t": 1}
    with pytest.raises(RunFailed, match="loopback"):
        run_connector(cid, settings=production)


@pytest.fixture
def pg_conveyor_settings(factory: ConnectorFactory, pg_database: Any) -> Settings:
    """Settings whose Conveyor database is a (migrated) PostgreSQL database."""
    from conveyor.db.migrations import upgrade

    url = pg_database().replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    return factory.settings.model_copy(update={"database_url": url})


@pytest.mark.postgres
def test_sql_source_naming_conveyors_own_database_refused(
    pg_conveyor_settings: Settings, pg_database: Any
) -> None:
    s = pg_conveyor_settings
    own = s.effective_database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    by_name = own.replace("127.0.0.1", "localhost")
    for url in (own, by_name):
        result = check("source", "sql_database", {"connection_string": url}, settings=s)
        assert not result.ok
        assert "is Conveyor's own database; " + OWN in result.message
    with pytest.raises(Exception, match="Conveyor's own database"):
        discover("sql_database", {"connection_string": by_name}, settings=s)
    # Another database on the same server is a source like any other.
    other = pg_database()
    assert check("source", "sql_database", {"connection_string": other}, settings=s).ok

    # Below the field check, at connect time: a connector engine (SQLAlchemy do_connect), a
    # libpq hostaddr pointing at it behind an innocent host name, psycopg's conninfo.
    from conveyor.pipelines import direct
    from conveyor.pipelines.sources import sql_database

    netguard.activate(s)
    model = validate_config("source", "sql_database", {"connection_string": own})
    with pytest.raises(NetworkDenied, match="Conveyor's own database"):
        sql_database.discover(model)  # type: ignore[arg-type]
    name = own.rsplit("/", 1)[1]
    sneaky = f"postgresql://postgres@db.invalid:5432/{name}?hostaddr=127.0.0.1"
    with pytest.raises(NetworkDenied, match="Conveyor's own database"):
        netguard.pin_conninfo(direct.conninfo(sneaky))


@pytest.mark.postgres
def test_postgres_destination_at_conveyors_own_database_refused(
    pg_conveyor_settings: Settings,
) -> None:
    s = pg_conveyor_settings
    own = s.effective_database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    result = check("destination", "postgres", {"connection_string": own}, settings=s)
    assert not result.ok and "Conveyor's own database" in result.message


# --- the platform's own connections keep working -----------------------------------------


@pytest.mark.prefect
@pytest.mark.timeout(300)
def test_prefect_state_updates_and_log_shipping_work_with_the_guard_installed(
    factory: ConnectorFactory,
    prefect_api_url: str,
    recorders: Callable[[], Recorder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flow run in this process, against the real Prefect server, with the socket hook
    installed and a connector reading a slow API meanwhile: the run ends Completed in
    Prefect and its log lines arrive there."""
    import asyncio
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from conveyor.pipelines.flow import run_connector_pipeline

    s = with_prefect(factory.settings, prefect_api_url)
    assert s.secret_key is not None
    for key, value in {
        "CONVEYOR_HOME": str(s.home),
        "CONVEYOR_DATABASE_URL": s.effective_database_url,
        "CONVEYOR_SECRET_KEY": s.secret_key.get_secret_value(),
    }.items():
        monkeypatch.setenv(key, value)
    api = recorders()

    def slow(path: str) -> tuple[int, dict[str, str], Any]:
        time.sleep(0.5)
        page = 2 if "page=2" in path else 1
        body: dict[str, Any] = {"data": [{"id": page}]}
        if page == 1:
            body["next"] = api.url + "/items?page=2"
        return 200, {}, body

    api.routes["/items"] = slow
    paginator = {"type": "json_link", "next_url_path": "next"}
    cid = factory(("rest_api", rest_config(api.url, paginator=paginator)), ("duckdb", {}))
    state = run_connector_pipeline(cid, return_state=True)  # type: ignore[call-overload]
    assert state.is_completed(), state.message
    assert netguard._installed
    flow_run_id = state.state_details.flow_run_id

    async def logs() -> list[str]:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            assert run.state is not None and run.state.is_completed()
            found = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            return [log.message for log in found]

    deadline = time.monotonic() + 30
    while True:
        messages = asyncio.run(logs())
        if any("Loaded 2 rows" in m for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any("Loaded 2 rows" in m for m in messages), messages
    assert api.paths == ["/items", "/items?page=2"]
