"""The chaos soak: the whole platform on PostgreSQL, changed and killed at random for N
minutes, then checked (``make soak``: 10 minutes; ``make soak-ci``: the 2-minute profile).

    python -m tests.system.soak --profile ci [--seed N] [--minutes M] [--connectors C]

What runs: scratch PostgreSQL databases on CONVEYOR_TEST_POSTGRES_URL's server (Conveyor's,
Prefect's, a source and a destination; dropped at the end), and the four parts of
``conveyor up`` (Prefect server, worker, reconciler, web app) with its own command lines.
Connectors copy small PostgreSQL tables into the destination database on minute schedules.

The machine has 2 cores and a flow run costs a few CPU seconds, so 200 runs a minute
cannot all execute: the work pool's concurrency limit (the worker's, sized to the machine)
queues the rest, which Prefect marks Late and the connectors' catch-up policy then runs or
skips. That is the realistic overload; the summary says how many runs executed.

Three loops run at once: the change loop (changes.py) changes schedules and tags, pauses,
resumes, deletes, creates and runs connectors through the REST API, logging each change;
the chaos loop SIGKILLs at random the Prefect server, the worker, a flow-run process, the
reconciler or the web app and starts it again after a random pause (and, as a supervisor
would, restarts a part that exited by itself). Then the chaos stops, every part is up, and
the checks (verify.py) are polled until all pass or the convergence bound passes.

Randomness is seeded (the seed is printed; ``--seed`` replays the same choices, though the
threads' timing differs from run to run). Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.fixtures.net import free_port
from tests.system import procs, verify
from tests.system.changes import Api, ChangeLoop


@dataclass(frozen=True)
class Profile:
    minutes: float
    connectors: int
    kill_every: tuple[float, float]  # seconds between kills
    down_for: tuple[float, float]  # seconds a killed part stays down
    change_every: tuple[float, float]  # seconds between API changes
    converge: float  # seconds allowed for convergence after the chaos


PROFILES = {
    "ci": Profile(2, 200, (6, 12), (0.5, 4), (0.2, 0.8), 240),
    "full": Profile(10, 200, (8, 20), (0.5, 6), (0.2, 0.8), 300),
}

# The soak's settings: the watchdog looks often and a run is declared lost after 30 s of
# silence (heartbeats every 10 s), so a killed flow run is closed within the soak; Prefect's
# scheduler keeps a few runs ahead per deployment rather than an hour's worth (200 minute
# schedules would otherwise be 12,000 scheduled flow runs).
SOAK_ENV = {
    "CONVEYOR_RUN_HEARTBEAT_TIMEOUT": "30",
    "CONVEYOR_WATCHDOG_INTERVAL": "5",
    "CONVEYOR_RECONCILE_INTERVAL": "20",
    "CONVEYOR_LOG_LEVEL": "INFO",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT5M",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "10",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
}
# The watchdog crashes a flow run held Pending/Running by nobody after max(heartbeat
# timeout, 60 s) (sync/watchdog.HELD_AFTER); then two of its passes and 30 s of slack.
STUCK_BOUND = 60 + 2 * 5 + 30
SOURCE_TABLES = {"items_small": 25, "items_medium": 60, "items_large": 150, "items_wide": 90}


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_sources(url: str, rng: random.Random) -> None:
    with psycopg.connect(url) as conn:
        for table, n in SOURCE_TABLES.items():
            conn.execute(
                f"CREATE TABLE {table} (id integer PRIMARY KEY, label text NOT NULL,"
                " amount numeric(12,2), happened_at timestamp)"
            )
            rows = [
                (i, f"{table}-{i}-{rng.randrange(10**6)}", round(rng.uniform(-1e5, 1e5), 2),
                 f"2024-0{1 + i % 9}-1{i % 10} 0{i % 10}:1{i % 6}:00")
                for i in range(1, n + 1)
            ]  # fmt: skip
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", rows)


class Chaos:
    """Kills one component at random every few seconds and starts it again.

    Runs in the main thread, which alone starts parts: a child is started with
    PR_SET_PDEATHSIG, which fires when the *thread* that forked it ends.
    """

    def __init__(self, platform: procs.Platform, rng: random.Random, profile: Profile) -> None:
        self.p = platform
        self.rng = rng
        self.profile = profile
        self.events: list[str] = []
        self.restart_at: dict[str, float] = {}  # killed part -> when to start it again
        self.retried: set[str] = set()  # components given a second chance this round

    def note(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {what}")

    def run(self, until: float, report: Any) -> None:
        order: list[str] = []
        next_kill = time.monotonic() + self.rng.uniform(*self.profile.kill_every)
        next_keep = next_report = time.monotonic()
        while (now := time.monotonic()) < until:
            for name, at in list(self.restart_at.items()):
                if now >= at:
                    self.p.start(name)
                    del self.restart_at[name]
            if now >= next_keep:  # a part that exited by itself starts again
                next_keep = now + 2
                for name in procs.PARTS:
                    if name not in self.restart_at and not self.p.running(name):
                        self.p.exits[name] += 1
                        self.note(f"{name} exited by itself")
                        self.p.start(name)
            if now >= next_kill:
                next_kill = now + self.rng.uniform(*self.profile.kill_every)
                if not order:  # each component once per round, in a random order
                    order = list(procs.COMPONENTS)
                    self.rng.shuffle(order)
                    self.retried = set()
                self.kill(order.pop(), order)
            if now >= next_report:
                next_report = now + 30
                report()
            time.sleep(0.2)

    def kill(self, name: str, order: list[str]) -> None:
        if name == procs.FLOW_RUN:
            if self.p.kill_flow_run(self.rng.choice):
                self.note("killed a flow run")
            elif name not in self.retried:  # none running now: try once more this round
                self.retried.add(name)
                order.insert(0, name)
        elif name not in self.restart_at and self.p.kill(name):
            self.note(f"killed {name}")
            self.restart_at[name] = time.monotonic() + self.rng.uniform(*self.profile.down_for)

    def finish(self) -> None:
        """Chaos over: every part up again."""
        self.restart_at.clear()
        for name in procs.PARTS:
            if not self.p.running(name):
                self.p.start(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--connectors", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the databases and the home")
    args = ap.parse_args(argv)
    # SIGTERM (CI's timeout, Ctrl-C's cousin) still stops the parts and drops the databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prof = PROFILES[args.profile]
    minutes = args.minutes if args.minutes is not None else prof.minutes
    n_connectors = args.connectors or prof.connectors
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    say(f"profile {args.profile}: {minutes:g} min of chaos, {n_connectors} connectors, seed {seed}")
    say(f"replay with: python -m tests.system.soak --profile {args.profile} --seed {seed}")
    master = random.Random(seed)
    rng_data, rng_changes, rng_chaos = (random.Random(master.random()) for _ in range(3))

    tag = f"soak_{os.getpid()}"
    names = {k: f"{tag}_{k}" for k in ("conveyor", "prefect", "src", "dst")}
    home = Path(tempfile.mkdtemp(prefix="conveyor-soak-"))
    procs.create_databases(list(names.values()))
    platform: procs.Platform | None = None
    ok = False
    try:
        seed_sources(procs.db_url(names["src"]), rng_data)
        os.environ.update(SOAK_ENV)
        os.environ.update(
            {
                "CONVEYOR_HOME": str(home),
                "CONVEYOR_DATABASE_URL": procs.db_url(names["conveyor"]),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": procs.db_url(
                    names["prefect"], "postgresql+asyncpg"
                ),
            }
        )
        os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        platform = procs.Platform(home, free_port(), free_port())
        ok = soak(platform, names, home, prof, minutes, n_connectors, seed, rng_changes, rng_chaos)
        return 0 if ok else 1
    finally:
        if platform is not None:
            if not ok:
                print(platform.log_tails(), flush=True)
            platform.stop()
        if not args.keep:
            procs.drop_databases(list(names.values()))
            if ok:
                shutil.rmtree(home, ignore_errors=True)
        if not ok or args.keep:
            say(f"kept for a look: {home} (logs/, changes.jsonl)")


def soak(
    p: procs.Platform,
    names: dict[str, str],
    home: Path,
    prof: Profile,
    minutes: float,
    n_connectors: int,
    seed: int,
    rng_changes: random.Random,
    rng_chaos: random.Random,
) -> bool:
    t0 = time.monotonic()
    conveyor_url = procs.db_url(names["conveyor"])
    p.conveyor("db", "upgrade")
    p.conveyor("users", "create", "soak", "--role", "admin", "--password-stdin",
               stdin="soak-password-8462\n")  # fmt: skip
    token = p.conveyor("tokens", "create", "soak").strip().splitlines()[-1]
    p.start("prefect-server")
    if not procs.wait_http(p.prefect_api + "/health", 240):
        say("the Prefect server did not start")
        return False
    for name in ("worker", "reconciler", "web"):
        p.start(name)
    if not procs.wait_http(p.web_url + "/api/v1/health", 120, ok=(200, 503)):
        say("the web app did not start")
        return False
    say(f"platform up in {time.monotonic() - t0:.0f} s (worker limit {p.worker_limit})")

    api = Api(p.web_url, token)
    tables: dict[int, str] = {}
    for table in SOURCE_TABLES:
        resp = api.call("POST", "/sources", json={
            "name": f"src-{table}".replace("_", "-"), "type": "sql_database",
            "config": {"connection_string": procs.db_url(names["src"]), "tables": [table]},
        })  # fmt: skip
        resp.raise_for_status()
        tables[int(resp.json()["id"])] = table
    resp = api.call("POST", "/destinations", json={
        "name": "dst", "type": "postgres",
        "config": {"connection_string": procs.db_url(names["dst"])},
    })  # fmt: skip
    resp.raise_for_status()
    log_path = home / "changes.jsonl"
    changes = ChangeLoop(
        api, rng_changes, log_path, list(tables), int(resp.json()["id"]), n_connectors
    )
    for i in range(n_connectors):
        changes.create(f"soak-initial-{i}")
    t_sync = time.monotonic()
    synced = _wait(lambda: _all_synced(conveyor_url), 240)
    took = time.monotonic() - t_sync
    say(f"{n_connectors} connectors created; synced to Prefect in {took:.0f} s" if synced
        else "the first sync did not finish")  # fmt: skip

    stop = threading.Event()
    chaos = Chaos(p, rng_chaos, prof)
    changer = threading.Thread(target=changes.run, args=(stop, prof.change_every), daemon=True)
    initial = changes.changes_made()
    t_chaos = time.monotonic()
    say(f"chaos and changes for {minutes:g} min")
    changer.start()
    chaos.run(
        t_chaos + minutes * 60,
        lambda: say(f"  {changes.changes_made() - initial} changes, kills {_kills(p)}"),
    )
    stop.set()
    changer.join(timeout=120)
    chaos_seconds = time.monotonic() - t_chaos
    chaos.finish()
    say(f"chaos stopped after {chaos_seconds:.0f} s; converging (at most {prof.converge:.0f} s)")

    # Deployments and the log are polled until they agree; runs are judged once the bound
    # has passed since the chaos ended (a run killed at the last moment has had its time).
    t_conv = time.monotonic()
    deadline = t_conv + prof.converge
    settle_at = t_conv + STUCK_BOUND
    converged_after: float | None = None
    unknown: dict[str, int] = {}
    while True:
        try:
            conns = verify.connectors(conveyor_url)
            checks = verify.check_deployments(conns, verify.deployments(p.prefect_api))
            log_check, unknown = verify.check_log(
                conns, changes.expected, changes.pending_creates, changes.mismatches
            )
            checks.append(log_check)
            if converged_after is None and all(c.ok for c in checks):
                converged_after = time.monotonic() - t_conv
                say(f"deployments match the connectors and the log {converged_after:.1f} s after")
            if time.monotonic() >= settle_at:
                checks.append(verify.stuck_runs(conveyor_url, p.prefect_api, STUCK_BOUND))
        except Exception as exc:  # Prefect still starting: try again
            checks = [verify.Check("the checks could run", [f"{type(exc).__name__}: {exc}"])]
        if time.monotonic() >= settle_at and all(c.ok for c in checks):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(3)
    data_check, compared = verify.check_data(
        conveyor_url, procs.db_url(names["src"]), procs.db_url(names["dst"]), tables
    )
    api_check = verify.Check("the API never answered 5xx", list(changes.server_errors))
    checks += [data_check, api_check]
    counts = verify.run_counts(conveyor_url, p.prefect_api)

    summary = {
        "seed": seed,
        "chaos_minutes": round(chaos_seconds / 60, 2),
        "connectors_at_end": len(verify.connectors(conveyor_url)),
        "changes_during_chaos": changes.changes_made() - initial,
        "changes_by_action": changes.counts,
        "change_outcomes": changes.outcomes,
        "requests_resent_while_web_down": api.connect_retries,
        **unknown,
        "kills": dict(p.kills),
        "exited_by_themselves": dict(p.exits),
        "runs_conveyor_records": counts["conveyor"],
        "flow_runs_prefect": counts["prefect"],
        "flow_runs_started": counts["prefect_started"],
        "flow_runs_late_at_end": counts["prefect_late"],
        **compared,
        "converged_after_s": round(converged_after, 1) if converged_after is not None else None,
        "total_s": round(time.monotonic() - t0),
    }
    (home / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n== chaos soak summary", flush=True)
    for key, value in summary.items():
        print(f"  {key}: {value}")
    print("  chaos events: " + "; ".join(chaos.events))
    print("== checks")
    for c in checks:
        print(c.line())
        for problem in c.problems[1:6]:
            print(f"         {problem}")
    passed = sum(c.ok for c in checks)
    print(f"soak: {passed} passed, {len(checks) - passed} failed", flush=True)
    return passed == len(checks)


def _kills(p: procs.Platform) -> str:
    return ", ".join(f"{k} {v}" for k, v in p.kills.items())


def _all_synced(url: str) -> bool:
    return all(c["sync_status"] == "synced" for c in verify.connectors(url).values())


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


if __name__ == "__main__":
    sys.exit(main())
