"""``conveyor doctor``: check each part a deployment needs and say how to fix what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from conveyor.errors import ConveyorError
from conveyor.secrets import mask_text
from conveyor.settings import SECRET_KEY_FILE, Settings


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _settings_check() -> tuple[Settings | None, Finding]:
    from conveyor.supervisor.config import load_settings

    try:
        s = load_settings()
    except ConveyorError as exc:
        return None, Finding("settings", "fail", exc.reason, exc.hint or "")
    return s, Finding("settings", "ok", f"CONVEYOR_ENV={s.env}, home {s.home}")


def _secrets_check(s: Settings) -> Finding:
    from conveyor.secrets import SecretBox

    if s.secret_key is None:
        if s.env == "production":
            return Finding(
                "secrets key",
                "fail",
                "CONVEYOR_SECRET_KEY is not set",
                "generate one with `conveyor secrets generate-key` and set CONVEYOR_SECRET_KEY",
            )
        if not (s.home / SECRET_KEY_FILE).exists():
            return Finding(
                "secrets key",
                "ok",
                f"none yet: generated into {s.home / SECRET_KEY_FILE} at first use",
            )
    try:
        box = SecretBox(s.secret_keys())
    except ConveyorError as exc:
        return Finding("secrets key", "fail", exc.reason, exc.hint or "")
    where = "CONVEYOR_SECRET_KEY" if s.secret_key is not None else str(s.home / SECRET_KEY_FILE)
    sample = _one_stored_secret(s)
    if sample is None:
        return Finding("secrets key", "ok", f"valid key from {where}; no stored secret to test")
    try:
        box.decrypt(sample)
    except ConveyorError:
        return Finding(
            "secrets key",
            "fail",
            f"the key from {where} cannot decrypt the secrets stored in the database",
            "set CONVEYOR_SECRET_KEY to the key they were encrypted with (after a rotation, "
            "list the new key first and the old one after it, comma-separated)",
        )
    return Finding("secrets key", "ok", f"valid key from {where}; decrypts stored secrets")


def _one_stored_secret(s: Settings) -> str | None:
    from conveyor.db.session import session_scope
    from conveyor.services import catalog

    try:
        with session_scope(s.effective_database_url) as session:
            return catalog.one_stored_secret(session=session)
    except Exception:
        return None  # the database check reports why


def _database_check(s: Settings) -> Finding:
    from alembic.script import ScriptDirectory

    from conveyor.db import migrations

    url = mask_text(s.effective_database_url)
    parsed = make_url(s.effective_database_url)
    sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None,
        "",
        ":memory:",
    )
    if sqlite_file and not Path(str(parsed.database)).exists():
        # Connecting would create an empty file: looking must not change anything.
        return Finding(
            "database",
            "fail",
            f"{url}: the file does not exist yet",
            "run `conveyor db upgrade` (or `conveyor up`), or fix CONVEYOR_DATABASE_URL",
        )
    try:
        current = migrations.current_revision(s.effective_database_url)
    except Exception as exc:
        reason = getattr(exc, "orig", None) or exc
        return Finding(
            "database",
            "fail",
            f"{url} is not reachable: {reason}",
            "check CONVEYOR_DATABASE_URL, that the server runs and accepts this user",
        )
    head = ScriptDirectory.from_config(
        migrations.alembic_config(s.effective_database_url)
    ).get_current_head()
    if current != head:
        return Finding(
            "database",
            "fail",
            f"{url} is at schema {current or 'empty'}, the code needs {head}",
            "run `conveyor db upgrade`",
        )
    return Finding("database", "ok", f"{url} at schema {current} (latest)")


def _up_check(s: Settings) -> tuple[Settings, Finding | None]:
    """A ``conveyor up`` running with this home: its Prefect API unless PREFECT_API_URL is
    set (up chooses its ports at start and tells only its children), and a finding."""
    from conveyor.supervisor import state

    up = state.running(s.home.resolve())
    if up is None:
        return s, None
    where = f"`conveyor up` (pid {up.pid}) runs here"
    if s.prefect_api_url and s.prefect_api_url.rstrip("/") != up.prefect_api_url:
        return s, Finding(
            "conveyor up",
            "warn",
            f"{where} with Prefect at {up.prefect_api_url}, "
            f"but PREFECT_API_URL is {s.prefect_api_url}",
            f"checking {s.prefect_api_url}; to check what `up` runs, unset PREFECT_API_URL "
            f"or set it to {up.prefect_api_url}",
        )
    s = s.model_copy(update={"prefect_api_url": up.prefect_api_url})
    try:
        live = httpx.get(up.web_url + "/api/v1/health/live", timeout=5).status_code == 200
    except httpx.HTTPError:
        live = False
    if not live:
        return s, Finding(
            "conveyor up",
            "fail",
            f"{where}, but its web app at {up.web_url} does not answer",
            f"see {s.home.resolve() / 'logs' / 'web.log'}; `up` restarts a part that exits",
        )
    return s, Finding(
        "conveyor up",
        "ok",
        f"{where}: web app at {up.web_url}, Prefect API at {up.prefect_api_url}",
    )


def _prefect_check(s: Settings, *, from_up: bool = False) -> Finding:
    if not s.prefect_api_url:
        return Finding(
            "Prefect API",
            "fail",
            "PREFECT_API_URL is not set and no `conveyor up` runs with this CONVEYOR_HOME",
            "start everything with `conveyor up` (its Prefect takes port 4200 or the next "
            "free one), or set PREFECT_API_URL to your Prefect server's API "
            "(http://HOST:PORT/api; `conveyor prefect-server` listens on 4200 unless --port)",
        )
    url = s.prefect_api_url.rstrip("/")
    try:
        resp = httpx.get(url + "/health", timeout=5)
        version = httpx.get(url + "/admin/version", timeout=5)
    except httpx.HTTPError as exc:
        fix = (
            f"`conveyor up` started it on port {httpx.URL(url).port}: see "
            f"{s.home.resolve() / 'logs' / 'prefect-server.log'}"
            if from_up
            else "start it (`conveyor prefect-server`, or `conveyor up` for everything) "
            "or fix PREFECT_API_URL"
        )
        return Finding("Prefect API", "fail", f"{url} is not reachable ({type(exc).__name__})", fix)
    if resp.status_code != 200:
        return Finding(
            "Prefect API",
            "fail",
            f"{url}/health answered HTTP {resp.status_code}",
            "see the Prefect server's log; is PREFECT_API_URL the /api URL?",
        )
    ver = version.json() if version.status_code == 200 else "?"
    return Finding("Prefect API", "ok", f"{url} answers (Prefect {ver})")


def _pool_check(s: Settings) -> Finding:
    from conveyor.services import health

    c = health.check_work_pool(s)
    if not c.ok:
        fix = "start a worker (`conveyor worker`), which creates it"
        if "paused" in c.detail:
            fix = f"resume it: `prefect work-pool resume {s.default_work_pool}`"
        return Finding("work pool", "fail", c.detail, fix)
    if "no concurrency limit" in c.detail:
        return Finding(
            "work pool",
            "warn",
            c.detail,
            f"set one: `prefect work-pool set-concurrency-limit {s.default_work_pool} 4` "
            "(a process worker without a limit starts every queued run at once)",
        )
    return Finding("work pool", "ok", c.detail)


def _worker_check(s: Settings) -> Finding:
    from conveyor.services import health

    c = health.check_worker(s)
    if c.ok:
        return Finding("worker", "ok", c.detail)
    return Finding(
        "worker",
        "fail",
        c.detail,
        f"start one: `conveyor worker` (polls pool '{s.default_work_pool}'); "
        "scheduled runs wait until a worker is online",
    )


def _reconciler_check(s: Settings) -> Finding:
    from conveyor.db.session import session_scope
    from conveyor.services import connectors, health

    c = health.check_reconciler(s)
    if not c.ok:
        return Finding(
            "reconciler",
            "fail",
            c.detail,
            "start it: `conveyor reconcile`; until then connector changes wait in the outbox",
        )
    try:
        with session_scope(s.effective_database_url) as session:
            errors = connectors.count_sync_errors(session=session)
    except Exception:
        errors = 0
    if errors:
        return Finding(
            "reconciler",
            "warn",
            f"{c.detail}; {errors} connector(s) failed to sync",
            "see `conveyor sync status` for each error",
        )
    return Finding("reconciler", "ok", c.detail)


def _placement_check(s: Settings) -> Finding:
    """Connectors whose destination is bound to one machine (a DuckDB file) on a work pool
    whose runs are not local processes: each run's data would stay in its pod."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from conveyor.db.models import Connector
    from conveyor.db.session import session_scope
    from conveyor.domain.vocabulary import merged_config
    from conveyor.pipelines.registry import get_type
    from conveyor.secrets import SecretBox
    from conveyor.services import placement

    if s.work_pool_type == "process":
        return Finding(
            "destinations", "ok", f"work pool '{s.default_work_pool}' runs local processes"
        )
    box = SecretBox(s.secret_keys())
    bad: list[str] = []
    with session_scope(s.effective_database_url) as session:
        rows = session.scalars(select(Connector).options(selectinload(Connector.destination)))
        for c in rows:
            dst = c.destination
            try:
                secrets = get_type("destination", dst.type).secret_fields
                config = box.decrypt_config(
                    merged_config(dst.config or {}, c.destination_config_override or {}), secrets
                )
                found = placement.problem(s, dst.type, config, c.work_pool_name)
            except Exception:
                continue  # an unknown type or an unreadable secret: other checks say so
            if found is not None:
                bad.append(f"{c.name} → {dst.name} ({dst.type})")
    if not bad:
        return Finding(
            "destinations",
            "ok",
            f"no connector keeps its data on one machine's disk (pool type {s.work_pool_type})",
        )
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return Finding(
        "destinations",
        "fail",
        f"{len(bad)} connector(s) write a local DuckDB file but run on the "
        f"{s.work_pool_type} pool '{s.default_work_pool}', whose flow runs are pods of their "
        f"own (the data is lost when each ends): {shown}",
        "move them to a DuckLake destination (catalog in PostgreSQL, data on S3 or a shared "
        "volume) or PostgreSQL",
    )


def run_checks() -> Iterator[Finding]:
    """Every finding, in the order a deployment depends on them."""
    s, first = _settings_check()
    yield first
    if s is None:
        return
    given = s.prefect_api_url
    s, up = _up_check(s)
    if up is not None:
        yield up
    yield _secrets_check(s)
    database = _database_check(s)
    yield database
    prefect = _prefect_check(s, from_up=given != s.prefect_api_url)
    yield prefect
    if prefect.status == "ok":
        yield _pool_check(s)
        yield _worker_check(s)
    else:
        yield Finding("work pool", "fail", "not checked: the Prefect API is not reachable")
        yield Finding("worker", "fail", "not checked: the Prefect API is not reachable")
    if database.status == "ok":
        yield _reconciler_check(s)
        yield _placement_check(s)
    else:
        yield Finding("reconciler", "fail", "not checked: the database is not ready")


MARKS = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}


def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """Check settings, secrets key, database, Prefect API, work pool, worker, reconciler
    (those of the `conveyor up` running with this CONVEYOR_HOME, if one does)."""
    console = Console(highlight=False)
    findings: list[Finding] = []
    for finding in run_checks():
        findings.append(finding)
        if not as_json:
            console.print(f"{MARKS[finding.status]} [bold]{finding.check:<12}[/] ", end="")
            console.print(finding.detail, markup=False, soft_wrap=True)
            if finding.fix:
                console.print(
                    f"  {'':<12} fix: {finding.fix}", markup=False, style="dim", soft_wrap=True
                )
    failed = [f for f in findings if f.status == "fail"]
    if as_json:
        body: dict[str, Any] = {"ok": not failed, "checks": [asdict(f) for f in findings]}
        console.print_json(json.dumps(body))
    elif failed:
        console.print(f"{len(failed)} problem(s) found.", style="red")
    else:
        console.print("Everything Conveyor needs is in place.", style="green")
    raise typer.Exit(1 if failed else 0)
