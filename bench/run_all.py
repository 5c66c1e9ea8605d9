"""Run every benchmark in bench/ one after another (``make bench``).

Each script prints a Markdown table with Conveyor beside its baseline; copy the results,
with the machine line, into docs/benchmarks.md. Pass script names to run a subset:
``.venv/bin/python bench/run_all.py api_latency sync``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["api_latency", "sync", "pipeline", "deployments", "ui", "up"]


def main(names: list[str]) -> int:
    scripts = [HERE / f"{n}.py" for n in (names or ORDER)]
    failed = 0
    for script in scripts:
        if not script.exists():
            print(f"-- {script.name}: not present, skipped")
            continue
        print(f"\n== {script.name}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)])
        print(f"-- {script.name}: exit {code} after {time.perf_counter() - t0:.0f} s")
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
