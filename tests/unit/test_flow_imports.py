"""Every flow run is a new process that imports the flow module before it does anything: a
heavy import there is paid by every Run now (bench/run_latency.py). The data libraries are
imported by the step that uses them, never by the module."""

from __future__ import annotations

import subprocess
import sys

# Imported only by the step that needs them: dlt (~0.6 s of CPU), DuckDB, Arrow, pandas,
# the database drivers of sources and destinations, the SQL parser.
HEAVY = (
    "dlt",
    "duckdb",
    "pyarrow",
    "pandas",
    "numpy",
    "connectorx",
    "psycopg",
    "psycopg2",
    "pymysql",
    "sqlglot",
    "adbc_driver_postgresql",
    "fastapi",
)


def test_importing_the_flow_module_loads_no_data_library() -> None:
    code = (
        "import sys\n"
        "import conveyor.pipelines.flow\n"
        f"heavy = {HEAVY!r}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
