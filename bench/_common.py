"""Helpers shared by the benchmarks: free ports, a PostgreSQL scratch database, percentiles."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "CONVEYOR_BENCH_POSTGRES_URL",
    os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL database; yields its psycopg URL."""
    admin = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg")
    name = f"conveyor_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds."""
    ordered = sorted(samples)
    qs = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": qs[49] * 1000, "p90": qs[89] * 1000, "p99": qs[98] * 1000}


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{platform.machine()}, {cpus} cores, {mem:.0f} GiB RAM, Python "
        f"{platform.python_version()}, {pg}"
    )
