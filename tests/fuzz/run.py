"""Fuzz the REST API against its own OpenAPI document with schemathesis, every check on.

    python -m tests.fuzz.run --profile ci     # make fuzz-ci: a few thousand cases per role
    python -m tests.fuzz.run --profile full   # make fuzz: >= 50,000 cases in all

A real uvicorn server of the app on a fresh PostgreSQL database (CONVEYOR_TEST_POSTGRES_URL)
with seed data (users of each role with a token, sources, destinations, connectors), then
``schemathesis run --checks all`` once per role, the roles one after another (viewer,
editor, admin: the admin's run may delete the others' users). Prefect is not running:
routes that call it answer 502, as documented. Prints, per role, the cases run, the
failures and the seed; exits non-zero if any check failed. ``--seed`` replays a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROLES = ("viewer", "editor", "admin")
# Cases per API operation and per role, and the request workers.
PROFILES = {"ci": {"max_examples": 8, "workers": 2}, "full": {"max_examples": 300, "workers": 2}}


@dataclass
class Account:
    role: str
    user_id: int
    token_id: int
    token: str


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_engine(url: str):  # type: ignore[no-untyped-def]
    admin = make_url(url).set(drivername="postgresql+psycopg")
    return create_engine(admin, isolation_level="AUTOCOMMIT")


def make_database(pg_url: str) -> str:
    """A new, migrated Conveyor database on the PostgreSQL server at ``pg_url``."""
    from conveyor.db.migrations import upgrade

    name = f"conveyor_fuzz_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = make_url(pg_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    upgrade(rendered)
    return rendered


def drop_database(pg_url: str, url: str) -> None:
    from conveyor.db.session import dispose_all

    dispose_all()
    engine = _admin_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def seed_accounts(database_url: str) -> dict[str, Account]:
    from conveyor.db.session import session_scope
    from conveyor.domain.models import UserCreate
    from conveyor.services import users
    from conveyor.services.authz import SYSTEM

    accounts = {}
    with session_scope(database_url) as session:
        for role in ("admin", *ROLES[:2]):
            data = UserCreate(username=f"fuzz-{role}", password="fuzz-password-1", role=role)  # type: ignore[arg-type]
            user = users.create_user(data, session=session, actor=SYSTEM)
            row, token = users.create_token(user.username, "fuzz", session=session, actor=SYSTEM)
            session.flush()
            accounts[role] = Account(role, user.id, row.id, token)
    return accounts


def seed_catalog(base: str, admin: Account) -> None:
    """A few sources, destinations and connectors, so ids the fuzzer draws can exist."""
    h = {"Authorization": f"Bearer {admin.token}"}
    with httpx.Client(base_url=base, headers=h, timeout=30) as c:
        for i in range(3):
            src = c.post(
                "/api/v1/sources",
                json={
                    "name": f"fuzz-src-{i}",
                    "type": "sql_database",
                    "config": {
                        "host": "127.0.0.1",
                        "port": 9,
                        "database": "sales",
                        "username": "reader",
                        "password": "s3cret-pw",
                    },
                },
            )
            src.raise_for_status()
            dst = c.post("/api/v1/destinations", json={"name": f"fuzz-dst-{i}", "type": "duckdb"})
            dst.raise_for_status()
            for j in range(2):
                c.post(
                    "/api/v1/connectors",
                    json={
                        "name": f"fuzz-conn-{i}-{j}",
                        "source_id": src.json()["id"],
                        "destination_id": dst.json()["id"],
                        "schedule": "0 */6 * * *",
                        "source_config_override": {"tables": ["orders"]},
                    },
                ).raise_for_status()


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "--factory",
        "conveyor.web.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    out = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited at start:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code < 600:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not start in 60 s")


def fuzz_role(base: str, account: Account, seed: int, profile: dict[str, int], out: Path) -> dict:  # type: ignore[type-arg]
    """One schemathesis run as ``account``; returns its figures."""
    report = out / f"{account.role}.json"
    cmd = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(profile["max_examples"]),
        "--workers",
        str(profile["workers"]),
        "--header",
        f"Authorization: Bearer {account.token}",
        "--request-timeout",
        "30",
        "--warnings",
        "off",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
        "CONVEYOR_FUZZ_OWN_USER_ID": str(account.user_id),
        "CONVEYOR_FUZZ_OWN_TOKEN_ID": str(account.token_id),
        "PYTHONPATH": str(ROOT),
    }
    started = time.monotonic()
    # From the run's own folder: schemathesis keeps a .schemathesis/ cache where it runs.
    done = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True)
    took = time.monotonic() - started
    figures = _figures(report)
    figures.update(role=account.role, seconds=round(took, 1), exit=done.returncode)
    if done.returncode != 0:
        print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    return figures


def _figures(report: Path) -> dict:  # type: ignore[type-arg]
    if not report.exists():
        return {"cases": 0, "failures": -1}
    data = json.loads(report.read_text())
    return {
        "cases": int(data["test_cases"]["generated"]),
        "failures": sum(int(f.get("count", 1)) for f in data.get("failures", [])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--max-examples", type=int, default=None)
    args = parser.parse_args()
    pg_url = os.environ.get("CONVEYOR_TEST_POSTGRES_URL")
    if not pg_url:
        sys.exit("CONVEYOR_TEST_POSTGRES_URL is not set (the fuzz runs on PostgreSQL)")
    profile = dict(PROFILES[args.profile])
    if args.max_examples:
        profile["max_examples"] = args.max_examples
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"fuzz: profile {args.profile}, seed {seed} (replay with --seed {seed})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="conveyor-fuzz-"))
    database_url = make_database(pg_url)
    proc = None
    try:
        accounts = seed_accounts(database_url)
        port = _free_port()
        env = {
            **os.environ,
            "CONVEYOR_HOME": str(work / "home"),
            "CONVEYOR_DATABASE_URL": database_url,
            "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
            # Nothing listens there: routes that call Prefect answer 502 at once.
            "CONVEYOR_PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api",
            "CONVEYOR_ALLOWED_PATHS": str(work),
        }
        proc = start_server(env, port, work / "server.log")
        base = f"http://127.0.0.1:{port}"
        seed_catalog(base, accounts["admin"])
        results = []
        for role in args.roles.split(","):
            figures = fuzz_role(base, accounts[role], seed, profile, work)
            results.append(figures)
            print(
                f"fuzz: {role}: {figures['cases']} cases, {figures['failures']} failures, "
                f"{figures['seconds']} s, seed {seed}",
                flush=True,
            )
        total = sum(r["cases"] for r in results)
        seconds = sum(r["seconds"] for r in results)
        failed = [r["role"] for r in results if r["exit"] != 0]
        print(f"fuzz: {total} cases in {seconds:.0f} s, seed {seed}; failed: {failed or 'none'}")
        if failed:
            print(f"fuzz: the server's log is {work / 'server.log'}")
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(pg_url, database_url)
        if "failed" in locals() and not failed:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
