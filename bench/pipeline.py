"""Data movement: TPC-H lineitem (SF1, 6M rows) from PostgreSQL into DuckDB and PostgreSQL.

Conveyor's connector (default settings) beside three baselines measured in the same run:
draining ``COPY lineitem TO STDOUT`` (how fast PostgreSQL hands the data out at all), the
best dlt configuration (connectorx Arrow stream and Parquet loader files, through the same
connector with ``backend: connectorx``) and dlt's ``sql_table`` with its default settings (on
a 500k-row slice: at ~3k rows/s the full table would take half an hour). Every step runs
in its own process; peak memory is the RSS of that process tree, sampled every 100 ms.
Prints a Markdown table of medians.

    .venv/bin/python bench/pipeline.py [--repeat 3] [--scale 1] [--skip-defaults]
    .venv/bin/python bench/pipeline.py --incremental [--repeat 1] [--skip-dlt]

``--incremental`` measures a merge + cursor connector instead (``primary_key: [l_orderkey,
l_linenumber]``, ``cursor_column: updated_at``) on ``lineitem_inc``: ``lineitem`` with an
indexed ``updated_at timestamptz``. Each variant runs its first load, then a 1 % delta (half
updates, half inserts) is written to the source and the connector runs again, beside the
drain of ``COPY lineitem_inc TO STDOUT`` in the same run: the fast path (defaults) and dlt's
path (``backend: connectorx``, today's route before the fast path), into DuckDB and into
PostgreSQL. The delta changes the table, so later runs see a slightly larger one.

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


def ensure_lineitem(scale: float) -> int:
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
                [
                    str(tpchgen),
                    "csv",
                    "-s",
                    f"{scale:g}",
                    "--tables=lineitem",
                    f"--output-dir={tmp}",
                ],
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


def ensure_lineitem_inc() -> int:
    """``lineitem`` with an indexed ``updated_at`` (spread over a day), its row count."""
    import psycopg

    with psycopg.connect(TPCH_URL, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.lineitem_inc') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            conn.execute("CREATE EXTENSION IF NOT EXISTS tsm_system_rows")
            print("creating lineitem_inc (lineitem + updated_at, indexed) ...", flush=True)
            conn.execute(
                "CREATE TABLE lineitem_inc AS SELECT *, TIMESTAMPTZ '2024-01-01 00:00:00+00'"
                " + (l_orderkey % 86400) * INTERVAL '1 second' AS updated_at FROM lineitem"
            )
            conn.execute("ALTER TABLE lineitem_inc ALTER COLUMN updated_at SET NOT NULL")
            conn.execute("ALTER TABLE lineitem_inc ADD PRIMARY KEY (l_orderkey, l_linenumber)")
            conn.execute("CREATE INDEX lineitem_inc_updated_at ON lineitem_inc (updated_at)")
            conn.execute("VACUUM ANALYZE lineitem_inc")
        return int(conn.execute("SELECT count(*) FROM lineitem_inc").fetchone()[0])  # type: ignore[index]


def apply_delta(fraction: float = 0.01) -> tuple[int, int]:
    """Update ``fraction / 2`` of the rows and insert as many new ones, all with an
    ``updated_at`` past every existing one; (updated, inserted)."""
    import psycopg

    with psycopg.connect(TPCH_URL) as conn:
        total, newest, top = conn.execute(
            "SELECT count(*), max(updated_at), max(l_orderkey) FROM lineitem_inc"
        ).fetchone()  # type: ignore[misc]
        half = int(total * fraction / 2)
        at = newest + __import__("datetime").timedelta(seconds=1)
        updated = conn.execute(
            "UPDATE lineitem_inc SET l_quantity = l_quantity + 1, l_comment = 'updated',"
            " updated_at = %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM lineitem_inc"
            " TABLESAMPLE SYSTEM_ROWS(%s)))",
            (at, half),
        ).rowcount
        inserted = conn.execute(
            "INSERT INTO lineitem_inc SELECT l_orderkey + %s, l_partkey, l_suppkey, l_linenumber,"
            " l_quantity, l_extendedprice, l_discount, l_tax, l_returnflag, l_linestatus,"
            " l_shipdate, l_commitdate, l_receiptdate, l_shipinstruct, l_shipmode, 'new', %s"
            " FROM lineitem_inc LIMIT %s",
            (top, at, half),
        ).rowcount
        conn.commit()
    return updated, inserted


def step_drain() -> dict[str, Any]:
    import psycopg

    total = 0
    started = time.perf_counter()
    table = os.environ.get("CONVEYOR_BENCH_DRAIN_TABLE", "lineitem")
    with (
        psycopg.connect(TPCH_URL) as conn,
        conn.cursor().copy(f"COPY {table} TO STDOUT") as copy,
    ):
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


def step_conveyor(
    destination: str, dest_url: str | None, *, delta: bool = False, **source: Any
) -> dict[str, Any]:
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
    out = {"rows": result["rows_loaded"], "run_seconds": time.perf_counter() - started}
    if delta:
        assert result["status"] == "succeeded", result
        out["delta_changes"] = apply_delta()
        started = time.perf_counter()
        again = run_connector(cid, settings=settings)
        assert again["status"] == "succeeded", again
        out["delta_rows"] = again["rows_loaded"]
        out["delta_seconds"] = time.perf_counter() - started
    return out


INCREMENTAL = {
    "tables": ["lineitem_inc"],
    "primary_key": ["l_orderkey", "l_linenumber"],
    "cursor_column": "updated_at",
}


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
    "merge-fast-duckdb": lambda args: step_conveyor("duckdb", None, delta=True, **INCREMENTAL),
    "merge-fast-postgres": lambda args: step_conveyor(
        "postgres", args.dest_url, delta=True, **INCREMENTAL
    ),
    "merge-dlt-duckdb": lambda args: step_conveyor(
        "duckdb", None, delta=True, backend="connectorx", **INCREMENTAL
    ),
    "merge-dlt-postgres": lambda args: step_conveyor(
        "postgres", args.dest_url, delta=True, backend="connectorx", **INCREMENTAL
    ),
}


STEP_ORDER = (
    "drain",
    "conveyor-duckdb",
    "conveyor-postgres",
    "dlt-best-duckdb",
    "dlt-best-postgres",
)


# --- measuring -----------------------------------------------------------------------


def measure(
    step: str, extra: list[str] | None = None, env_extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one step in a child process; wall time and peak RSS of its process tree."""
    import psutil

    env = {**os.environ, "RUNTIME__LOG_LEVEL": "ERROR", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.update(env_extra or {})
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
    parser.add_argument("--scale", type=float, default=1)
    parser.add_argument("--skip-defaults", action="store_true")
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    if args.step:
        Path(args.out).write_text(json.dumps(STEPS[args.step](args)))
        return 0

    rows = ensure_lineitem(args.scale)
    if args.incremental:
        return incremental(args)
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


def incremental(args: Any) -> int:
    """First load and a 1 % delta of a merge + cursor connector, beside the drain."""
    rows = ensure_lineitem_inc()
    print(f"machine: {machine()}", flush=True)
    steps = ["drain", "merge-fast-duckdb", "merge-fast-postgres"]
    if not args.skip_dlt:
        steps += ["merge-dlt-duckdb", "merge-dlt-postgres"]
    if args.skip_postgres:
        steps = [s for s in steps if not s.endswith("postgres")]
    results: dict[str, list[dict[str, Any]]] = {}
    drain_env = {"CONVEYOR_BENCH_DRAIN_TABLE": "lineitem_inc"}
    for i in range(args.repeat):
        for step in steps:
            load = os.getloadavg()[0]
            if step.endswith("postgres"):
                with scratch_postgres() as url:
                    r = measure(step, ["--dest-url", _plain(url)])
            else:
                r = measure(step, env_extra=drain_env)
            r["load"] = load
            results.setdefault(step, []).append(r)
            extra = ""
            if "delta_seconds" in r:
                extra = (
                    f"; first load {r['run_seconds']:.1f} s, delta {r['delta_changes']} ->"
                    f" {r['delta_rows']} rows in {r['delta_seconds']:.1f} s"
                )
            print(
                f"run {i + 1} {step}: {r['seconds']:.1f} s, {r['peak_mib']:.0f} MiB,"
                f" load {load:.1f}{extra}",
                flush=True,
            )
    drain = statistics.median(r["run_seconds"] for r in results["drain"])
    print(f"\nlineitem_inc: {rows:,} rows; medians of {args.repeat}; drain {drain:.1f} s\n")
    print(
        "| variant | first load | x drain | 1 % delta | delta / first load"
        " | target: delta <= 5 % + 1 s | peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for step in steps[1:]:
        first = statistics.median(r["run_seconds"] for r in results[step])
        delta = statistics.median(r["delta_seconds"] for r in results[step])
        peak = max(r["peak_mib"] for r in results[step])
        budget = 0.05 * first + 1
        print(
            f"| {step} | {first:.1f} s | {first / drain:.2f} | {delta:.1f} s"
            f" | {delta / first:.3f} | {budget:.1f} s ({'met' if delta <= budget else 'not met'})"
            f" | {peak:.0f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
