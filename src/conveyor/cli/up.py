"""``conveyor up``: the whole platform from one command, on embedded defaults."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import typer
from rich.console import Console

from conveyor.cli.common import exit_code
from conveyor.errors import ConfigurationError, ConveyorError


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """One ``conveyor up`` per home: two would share (and fight over) one SQLite file."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        fh: IO[str] = open(home / "up.pid", "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use {home} as CONVEYOR_HOME: {exc.strerror}",
            hint="set CONVEYOR_HOME to a writable directory",
        ) from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "?"
        fh.close()
        raise ConfigurationError(
            f"another `conveyor up` (pid {other}) is already running with {home}",
            hint="stop it first, or use another CONVEYOR_HOME",
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        # Removed while still locked: nothing of this run is left for the next one to read.
        from conveyor.supervisor import state

        state.remove(home)
        fh.close()


def up(
    host: str = typer.Option("127.0.0.1", help="Interface the web app listens on"),
    port: int | None = typer.Option(
        None, help="Web app port [default: 8000, or the next free one]", show_default=False
    ),
    prefect_port: int | None = typer.Option(
        None,
        "--prefect-port",
        help="Prefect server port [default: 4200, or the next free one]",
        show_default=False,
    ),
    demo: bool = typer.Option(
        True, "--demo/--no-demo", help="Apply deployments/ when there is no connector yet"
    ),
    demo_dir: Path | None = typer.Option(
        None,
        "--deployments-dir",
        help="Where the demo deployment files are [default: ./deployments]",
    ),
) -> None:
    """Run everything (Prefect server, worker, reconciler, web app) until Ctrl-C."""
    console = Console(highlight=False, width=None if Console().is_terminal else 200)
    err = Console(stderr=True, highlight=False, width=None if Console().is_terminal else 200)
    try:
        code = _up(console, host, port, prefect_port, demo, demo_dir)
    except ConveyorError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(exit_code(exc)) from None
    raise typer.Exit(code)


def _up(
    console: Console,
    host: str,
    port: int | None,
    prefect_port: int | None,
    demo: bool,
    demo_dir: Path | None,
) -> int:
    # Nothing here may import prefect: the children get their Prefect settings through
    # their environment, and this process never talks to Prefect through its client.
    from conveyor.cli.worker import default_limit
    from conveyor.supervisor.config import load_settings, make_plan
    from conveyor.supervisor.report import Reporter, print_summary
    from conveyor.supervisor.startup import Options, StartFailed, StopRequested, Supervisor

    settings = load_settings()
    with _home_lock(settings.home.resolve()):
        plan = make_plan(
            settings, host=host, port=port, prefect_port=prefect_port, worker_limit=default_limit()
        )
        plan.settings = settings.model_copy(
            update={
                "home": plan.home,
                "prefect_api_url": plan.prefect_api_url,
                "prefect_ui_url": plan.prefect_ui_url,
            }
        )
        _publish(plan)
        reporter = Reporter(console)
        for part, wanted, default, got in (
            ("web app", port, 8000, plan.web_port),
            ("Prefect server", prefect_port, 4200, plan.prefect_port),
        ):
            if wanted is None and got != default:
                reporter.note(f"port {default} is in use: the {part} takes port {got}")
        sup = Supervisor(plan, reporter, Options(demo=demo, demo_dir=demo_dir))

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # Later signals are ignored: the stop below is already bounded (~10 s).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            sup.request_stop(signum)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        ready = False
        try:
            summary = sup.run_startup()
            ready = True
            print_summary(console, summary)
            sup.supervise()
        except StopRequested:
            reporter.close()
            console.print("Stopping ...")
        except StartFailed as exc:
            reporter.close()
            console.print(f"[red]✗ {exc.part} failed to start:[/] {exc.detail}", highlight=False)
            if exc.log_tail:
                console.print("  " + exc.log_tail.replace("\n", "\n  "), markup=False)
            if exc.hint:
                console.print(f"  {exc.hint}", markup=False)
            console.print("Stopping what was started ...")
            _stop(sup, console)
            return 1
        except BaseException:
            reporter.close()
            _stop(sup, console)
            raise
        _stop(sup, console)
        return 0 if ready else 130


def _publish(plan: object) -> None:
    """The ports chosen: in-process code (and anything it imports) sees the same Prefect as
    the children; other commands of this home (`conveyor doctor`) find them in up.json."""
    from conveyor.settings import get_settings
    from conveyor.supervisor import state
    from conveyor.supervisor.config import Plan

    assert isinstance(plan, Plan)
    os.environ.update(
        {
            "CONVEYOR_HOME": str(plan.home),
            "PREFECT_HOME": str(plan.prefect_home),
            "PREFECT_API_URL": plan.prefect_api_url,
            "CONVEYOR_PREFECT_UI_URL": plan.prefect_ui_url,
        }
    )
    get_settings.cache_clear()
    state.write(
        plan.home,
        state.UpState(
            pid=os.getpid(),
            web_url=plan.web_url,
            prefect_api_url=plan.prefect_api_url,
            prefect_ui_url=plan.prefect_ui_url,
            work_pool=plan.settings.default_work_pool,
        ),
    )


def _stop(sup: object, console: Console) -> None:
    from conveyor.supervisor.startup import Supervisor

    assert isinstance(sup, Supervisor)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not sup.children:
        return
    killed = sup.stop()
    note = f" ({len(killed)} process(es) had to be killed)" if killed else ""
    console.print(f"Stopped {len(sup.children)} part(s){note}.", highlight=False)
