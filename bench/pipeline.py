"""Data movement: TPC-H lineitem (SF1, 6M rows) from PostgreSQL into DuckDB and PostgreSQL.

Conveyor's connector (default settings) beside three baselines measured in the same run:
draining ``COPY lineitem TO STDOUT`` (how fast PostgreSQL hands the data out at all), the
best dlt configuration (connectorx Arrow stream and Parquet loader files, through the same
connector with ``backend: connectorx``) and dlt's ``sql_table`` with its default settings (on
a 500k-row slice: at ~3k rows/s the full table would take half an hour). Every step runs
in its own process; peak memory is the RSS of that process tree, sampled every 100 ms.
Prints a Markdown table of medians.

    .venv/bin/python bench/pipeline.py [--repeat 3] [--scale 1] [--skip-defaults]

The table is generated once with ``tpchgen-cli`` into the database ``conveyor_tpch``
(override with CONVEYOR_BENCH_TPCH_URL) and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import PG_ADMIN_URL, machine, scratch_postgres

TPCH_URL = os.environ.get(
    "CONVEYOR_BENCH_TPCH_URL", PG_ADMIN_URL.rsplit("/", 1)[0] + "/conveyor_tpch"
)
SLICE = 500_000

LINEITEM_DDL = """
CREATE TABLE lineitem (
    l_orderkey bigint NOT NULL, l_partkey bigint NOT NULL, l_suppkey bigint NOT NULL,
    l_linenumber integer NOT NULL, l_quantity decimal(15,2) NOT NULL,
    l_extendedprice decimal(15,2) NOT NULL, l_discount decimal(15,2) NOT NULL,
    l_tax decimal(15,2) NOT NULL, l_returnflag char(1) NOT NULL, l_linestatus char(1) NOT NULL,
    l_shipdate date NOT NULL, l_commitdate date NOT NULL, l_receiptdate date NOT NULL,
    l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL,
    l_comment varchar(44) NOT NULL, PRIMARY KEY (l_orderkey, l_linenumber)
)
"""


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# --- set-up --------------------------------------------------------------------------


def ensure_lineitem(scale: int) -> int:
    """Create and fill ``lineitem`` (and the slice) unless already there; its row count."""
    import psycopg

    admin = _plain(PG_ADMIN_URL)
    name = TPCH_URL.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(TPCH_URL, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.lineitem') IS NOT NULL").fetchone()
        if exists and exists[0]:
            count = conn.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = 'lineitem'"
            )
            return int(count.fetchone()[0])  # type: ignore[index]
        print(f"generating TPC-H lineitem at scale {scale} with tpchgen-cli ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            tpchgen = Path(sys.executable).parent / "tpchgen-cli"
            subprocess.run(
                [str(tpchgen), "csv", "-s", str(scale), "--tables=lineitem", f"--output-dir={tmp}"],
                check=True,
            )
            conn.execute(LINEITEM_DDL)
            with (
                open(Path(tmp) / "lineitem.csv", "rb") as fh,
                conn.cursor().copy("COPY lineitem FROM STDIN (FORMAT csv, HEADER true)") as cp,
            ):
                while chunk := fh.read(8 << 20):
                    cp.write(chunk)
        conn.execute("VACUUM ANALYZE lineitem")
        conn.execute(f"CREATE TABLE lineitem_slice AS SELECT * FROM lineitem LIMIT {SLICE}")
        conn.execute("ALTER TABLE lineitem_slice ADD PRIMARY KEY (l_orderkey, l_linenumber)")
        return int(conn.execute("SELECT count(*) FROM lineitem").fetchone()[0])  # type: ignore[index]


# --- steps (each runs in a child process) --------------------------------------------


def step_drain() -> dict[str, Any]:
    import psycopg

    total = 0
    started = time.perf_counter()
    with psycopg.connect(TPCH_URL) as conn, conn.cursor().copy("COPY lineitem TO STDOUT") as copy:
        for chunk in copy:
            total += len(chunk)
    # Like a connector's run alone: without the interpreter start and imports.
    return {"bytes": total, "run_seconds": time.perf_counter() - started}


def _settings(home: Path) -> Any:
    from cryptography.fernet import Fernet

    from conveyor.db.migrations import upgrade
    from conveyor.settings import Settings

    url = f"sqlite:///{home / 'conveyor.db'}"
    upgrade(url)
    return Settings(home=home, database_url=url, secret_key=Fernet.generate_key().decode())


def step_conveyor(destination: str, dest_url: str | None, **source: Any) -> dict[str, Any]:
    from conveyor.db.session import session_scope
    from conveyor.domain.models import ConnectorCreate, EndpointCreate
    from conveyor.pipelines.flow import run_connector
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog, connectors
    from conveyor.services.authz import SYSTEM

    home = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    settings = _settings(home)
    box = SecretBox(settings.secret_keys())
    dst_cfg: dict[str, Any] = {} if destination == "duckdb" else {"connection_string": dest_url}
    with session_scope(settings.effective_database_url) as s:
        src = catalog.create(
            "source",
            EndpointCreate(
                name="tpch",
                type="sql_database",
                config={"connection_string": TPCH_URL, "tables": ["lineitem"], **source},
            ),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        dst = catalog.create(
            "destination",
            EndpointCreate(name="target", type=destination, config=dst_cfg),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        c = connectors.create(
            ConnectorCreate(name="lineitem", source_id=src.id, destination_id=dst.id),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        cid = c.id
    started = time.perf_counter()
    result = run_connector(cid, settings=settings)
    # The run itself, as its run record times it: without the interpreter start, imports and
    # the scratch Conveyor database set up above.
    return {"rows": result["rows_loaded"], "run_seconds": time.perf_counter() - started}


def step_dlt_defaults() -> dict[str, Any]:
    """dlt as a user gets it out of the box: sqlalchemy backend, default file formats."""
    import dlt
    from dlt.sources.sql_database import sql_table

    home = Path(tempfile.mkdtemp(prefix="conveyor-bench-dlt-"))
    pipeline = dlt.pipeline(
        "bench_dlt_defaults",
        destination=dlt.destinations.duckdb(str(home / "d.duckdb")),
        dataset_name="tpch",
        pipelines_dir=str(home / "pipelines"),
    )
    pipeline.run(sql_table(credentials=TPCH_URL, table="lineitem_slice"))
    rows = pipeline.last_trace.last_normalize_info.row_counts["lineitem_slice"]
    return {"rows": rows}


STEPS = {
    "drain": lambda args: step_drain(),
    "conveyor-duckdb": lambda args: step_conveyor("duckdb", None),
    "conveyor-postgres": lambda args: step_conveyor("postgres", args.dest_url),
    # The best dlt configuration (what Conveyor's defaults were before whole tables went
    # database to database): connectorx Arrow stream, Parquet loader files, ADBC into
    # PostgreSQL. Choosing a backend explicitly keeps a table on dlt's path.
    "dlt-best-duckdb": lambda args: step_conveyor("duckdb", None, backend="connectorx"),
    "dlt-best-postgres": lambda args: step_conveyor(
        "postgres", args.dest_url, backend="connectorx"
    ),
    "dlt-defaults": lambda args: step_dlt_defaults(),
}


STEP_ORDER = (
    "drain",
    "conveyor-duckdb",
    "conveyor-postgres",
    "dlt-best-duckdb",
    "dlt-best-postgres",
)


# --- measuring -----------------------------------------------------------------------


def measure(step: str, extra: list[str] | None = None) -> dict[str, Any]:
    """Run one step in a child process; wall time and peak RSS of its process tree."""
    import psutil

    env = {**os.environ, "RUNTIME__LOG_LEVEL": "ERROR", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.setdefault("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never start a server
    fd, out_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, __file__, "--step", step, "--out", out_path, *(extra or [])]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"step {step} failed with exit code {proc.returncode}")
    result = json.loads(Path(out_path).read_text())
    os.unlink(out_path)
    return {"seconds": seconds, "peak_mib": peak / 2**20, **result}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", choices=sorted(STEPS))
    parser.add_argument("--out")
    parser.add_argument("--dest-url")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--skip-defaults", action="store_true")
    args = parser.parse_args()
    if args.step:
        Path(args.out).write_text(json.dumps(STEPS[args.step](args)))
        return 0

    rows = ensure_lineitem(args.scale)
    print(f"machine: {machine()}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.repeat):
        # Interleaved, so a busy spell on the machine hits every variant alike.
        for step in STEP_ORDER:
            if step.endswith("postgres"):
                with scratch_postgres() as url:
                    r = measure(step, ["--dest-url", _plain(url)])
            else:
                r = measure(step)
            results.setdefault(step, []).append(r)
            print(f"run {i + 1} {step}: {r['seconds']:.1f} s, {r['peak_mib']:.0f} MiB", flush=True)
    if not args.skip_defaults:
        r = measure("dlt-defaults")
        results["dlt-defaults"] = [r]
        print(f"dlt-defaults ({SLICE:,} rows): {r['seconds']:.1f} s", flush=True)

    drain = statistics.median(r["seconds"] for r in results["drain"])
    drain_alone = statistics.median(r["run_seconds"] for r in results["drain"])
    rows = results["conveyor-duckdb"][0]["rows"]  # exact, as loaded
    print(f"\nlineitem: {rows:,} rows; medians of {args.repeat}\n")
    print("| variant | rows | wall time | rows/s | x drain | run alone | x drain | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for step, label in (
        ("drain", "COPY lineitem TO STDOUT, drained (baseline)"),
        ("conveyor-duckdb", "Conveyor connector -> DuckDB (defaults)"),
        ("conveyor-postgres", "Conveyor connector -> PostgreSQL (defaults)"),
        ("dlt-best-duckdb", "best dlt configuration -> DuckDB (connectorx, Parquet)"),
        ("dlt-best-postgres", "best dlt configuration -> PostgreSQL (connectorx, Parquet, ADBC)"),
        ("dlt-defaults", f"dlt sql_table defaults -> DuckDB ({SLICE:,}-row slice, 1 run)"),
    ):
        if step not in results:
            continue
        seconds = statistics.median(r["seconds"] for r in results[step])
        peak = max(r["peak_mib"] for r in results[step])
        n = SLICE if step == "dlt-defaults" else rows
        ratio = f"{seconds / drain:.2f}" if step != "dlt-defaults" else "(slice)"
        alone, alone_ratio = "-", "-"
        if "run_seconds" in results[step][0]:
            run_s = statistics.median(r["run_seconds"] for r in results[step])
            # Run alone against the drain alone: both without process start-up.
            alone, alone_ratio = f"{run_s:.1f} s", f"{run_s / drain_alone:.2f}"
        print(
            f"| {label} | {n:,} | {seconds:.1f} s | {n / seconds:,.0f} | {ratio} | {alone} "
            f"| {alone_ratio} | {peak:.0f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
