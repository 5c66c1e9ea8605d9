"""Deployment files: export, plan and apply of 1,000 connectors, beside baselines.

    .venv/bin/python bench/deployments.py [--connectors 1000] [--backend sqlite|postgres|both]

Each connector has its own SQL source (with a password, so every file has a secret
reference), a shared DuckDB destination, a schedule, tags and an override. Baselines in
the same run, on the same database:
- export  vs a plain dump: one SELECT of the rows and a C-accelerated YAML dump of each to a file
  (no secrets handling, no determinism rules);
- plan    vs parsing the same files with PyYAML's C loader + one SELECT of all rows:
  the floor of any plan (no checks, no comparison, no line numbers);
- apply into an empty database vs creating the same sources and connectors in a plain
  loop through the connector services in one transaction (what the API path costs:
  validation, encryption, outbox, audit) — apply goes through that same path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, scratch_postgres

from conveyor.db.migrations import upgrade
from conveyor.db.models import Connector
from conveyor.db.session import dispose_all, session_scope
from conveyor.deployments_io import (
    apply_directory,
    export_directory,
    load_directory,
    make_plan,
)
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate
from conveyor.secrets import SecretBox
from conveyor.services import catalog
from conveyor.services import connectors as svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


@contextmanager
def database(backend: str, tmp: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'{name}.db'}"
        upgrade(url)
        yield url
        return
    with scratch_postgres() as url:
        upgrade(url)
        yield url
        dispose_all()


def make_settings(tmp: Path, url: str) -> Settings:
    home = tmp / f"home-{abs(hash(url)) % 10**6}"
    home.mkdir(exist_ok=True)
    return Settings(home=home, database_url=url, secret_key=Fernet.generate_key().decode())


def create_connectors(cfg: Settings, n: int, prefix: str = "") -> None:
    """The benchmark's connectors, through the services (also the apply baseline)."""
    box = SecretBox(cfg.secret_keys())
    with session_scope(cfg.effective_database_url) as s:
        dst = catalog.create(
            "destination",
            EndpointCreate(name=f"{prefix}warehouse", type="duckdb", config={}),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        for i in range(1, n + 1):
            src = catalog.create(
                "source",
                EndpointCreate(
                    name=f"{prefix}shop-{i:04d}-db",
                    type="sql_database",
                    config={
                        "host": f"db{i % 7}.example.com",
                        "database": "shop",
                        "username": "reader",
                        "password": f"pw-{i}",
                    },
                ),
                session=s,
                actor=SYSTEM,
                box=box,
            )
            svc.create(
                ConnectorCreate(
                    name=f"{prefix}shop-{i:04d}",
                    source_id=src.id,
                    destination_id=dst.id,
                    schedule=f"{i % 60} */6 * * *",
                    timezone="Europe/Paris" if i % 3 else "UTC",
                    tags=["bench", f"team-{i % 5}"],
                    source_config_override={"tables": ["orders", "customers"]},
                    description=f"Shop {i} orders and customers",
                ),
                session=s,
                actor=SYSTEM,
                box=box,
            )


def env_for(n: int) -> dict[str, str]:
    return {f"DEPLOY_SECRET_SOURCE_SHOP_{i:04d}_DB_PASSWORD": f"pw-{i}" for i in range(1, n + 1)}


def baseline_export(cfg: Settings, out: Path) -> None:
    out.mkdir(exist_ok=True)
    with session_scope(cfg.effective_database_url) as s:
        for c in s.scalars(select(Connector)).unique():
            row = {
                "name": c.deployment_name or f"connector-{c.id}",
                "parameters": {"connector_id": c.id},
                "schedule": {"cron": c.schedule, "timezone": c.timezone},
                "tags": c.tags,
                "connector": {
                    "name": c.name,
                    "source": {"name": c.source.name, "config": c.source.config},
                    "destination": {"name": c.destination.name, "config": c.destination.config},
                    "source_config_override": c.source_config_override,
                },
            }
            (out / f"{c.id}.yaml").write_text(
                yaml.dump(row, Dumper=yaml.CSafeDumper, sort_keys=False)
            )


def baseline_plan(cfg: Settings, directory: Path) -> None:
    for p in sorted(directory.glob("*.yaml")):
        yaml.load(p.read_text(), Loader=yaml.CSafeLoader)
    with session_scope(cfg.effective_database_url) as s:
        list(s.scalars(select(Connector)).unique())


def plan_dir(cfg: Settings, directory: Path, env: dict[str, str]) -> Any:
    box = SecretBox(cfg.secret_keys())
    loaded = load_directory(directory, env=env)
    with session_scope(cfg.effective_database_url) as s:
        return make_plan(loaded, session=s, box=box, settings=cfg)


def apply_dir(cfg: Settings, directory: Path, env: dict[str, str]) -> Any:
    box = SecretBox(cfg.secret_keys())
    with session_scope(cfg.effective_database_url) as s:
        return apply_directory(directory, session=s, box=box, actor=SYSTEM, settings=cfg, env=env)


def best(rounds: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of ``rounds`` runs (the machine is shared; the minimum is the signal)."""
    results = [timed(fn) for _ in range(rounds)]
    return min(r[0] for r in results), results[-1][1]


def run(backend: str, n: int, rounds: int) -> list[tuple[str, float, float | None, str]]:
    rows: list[tuple[str, float, float | None, str]] = []
    env = env_for(n)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with database(backend, tmp, "source") as src_url:
            src = make_settings(tmp, src_url)
            t_setup, _ = timed(lambda: create_connectors(src, n))
            out = tmp / "export"
            fresh = iter(range(1000))

            def export(target: Path) -> Any:
                with session_scope(src_url) as s:
                    return export_directory(target, session=s, settings=src)

            t_export, _ = best(rounds, lambda: export(tmp / f"fresh-{next(fresh)}"))
            export(out)
            t_export_again, again = best(rounds, lambda: export(out))
            assert again.unchanged and not again.written, "export is not deterministic"
            t_base_export, _ = best(rounds, lambda: baseline_export(src, tmp / "plain"))
            rows.append(
                (f"export {n:,} connectors to files", t_export, t_base_export, "plain dump")
            )
            rows.append(("export again (nothing to write)", t_export_again, None, ""))

            t_plan, the_plan = best(rounds, lambda: plan_dir(src, out, env))
            # Created through the services, so unchanged content and "adopt" as file-managed.
            assert the_plan.counts() == {"adopt": n}, the_plan.counts()
            t_base_plan, _ = best(rounds, lambda: baseline_plan(src, out))
            rows.append(("plan, contents unchanged", t_plan, t_base_plan, "parse + SELECT"))

            box = SecretBox(src.secret_keys())
            with session_scope(src_url) as s:
                for c in s.scalars(select(Connector)).unique():
                    svc.update(
                        c.id, ConnectorPatch(schedule="5 4 * * *"), session=s, actor=SYSTEM, box=box
                    )
            t_plan_changes, changed = best(rounds, lambda: plan_dir(src, out, env))
            assert changed.counts() == {"update": n}, changed.counts()
            rows.append(
                (f"plan, {n:,} connectors changed", t_plan_changes, t_base_plan, "parse + SELECT")
            )

        applies, baselines, noops = [], [], []
        for i in range(rounds):
            # Alternate the two so both see the same share of the machine's noise.
            with database(backend, tmp, f"apply{i}") as dst_url:
                dst = make_settings(tmp, dst_url)
                t, result = timed(partial(apply_dir, dst, out, env))
                assert len(result.created) == n
                applies.append(t)
                t, noop = timed(partial(apply_dir, dst, out, env))
                assert not noop.changed
                noops.append(t)
            with database(backend, tmp, f"base{i}") as base_url:
                base = make_settings(tmp, base_url)
                baselines.append(timed(partial(create_connectors, base, n))[0])
        rows.append(("apply into an empty database", min(applies), min(baselines), "services loop"))
        rows.append(("apply again (no changes)", min(noops), None, ""))
    print(f"(setup: {n} connectors created through the services in {t_setup:.1f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connectors", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="best of N for each timing")
    args = parser.parse_args()
    os.environ.setdefault("CONVEYOR_HOME", tempfile.mkdtemp(prefix="conveyor-bench-"))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"machine: {machine()}")
    for backend in backends:
        rows = run(backend, args.connectors, args.rounds)
        print(f"\n{backend}, {args.connectors} connectors, best of {args.rounds}\n")
        print("| operation | Conveyor | baseline | ratio |")
        print("|---|---:|---:|---:|")
        for what, t, baseline, label in rows:
            if baseline is None:
                print(f"| {what} | {t:.2f} s | | |")
            else:
                print(f"| {what} | {t:.2f} s | {baseline:.2f} s ({label}) | {t / baseline:.1f}x |")


if __name__ == "__main__":
    main()
