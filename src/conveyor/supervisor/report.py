"""What ``conveyor up`` shows: one progress row per part while starting, then one block.

On a terminal the rows are a live Rich progress display; elsewhere (a pipe, a log file,
a test) each row is one plain line when it finishes, so the output stays readable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

READY_LINE = "Conveyor is ready"


class Reporter:
    """Progress rows keyed by part name."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        if console.is_terminal:
            self.progress = Progress(
                SpinnerColumn(finished_text=" "),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.progress.start()
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}

    def begin(self, key: str, text: str) -> None:
        self._started[key] = time.monotonic()
        if self.progress is not None:
            self._tasks[key] = self.progress.add_task(text, total=1)

    def update(self, key: str, text: str) -> None:
        if self.progress is not None and key in self._tasks:
            self.progress.update(self._tasks[key], description=text)

    def done(self, key: str, text: str) -> None:
        self._finish(key, f"[green]✓[/] {text}", "✓", text)

    def fail(self, key: str, text: str) -> None:
        self._finish(key, f"[red]✗[/] {text}", "✗", text)

    def skip(self, key: str, text: str) -> None:
        self._finish(key, f"[yellow]-[/] {text}", "-", text)

    def _finish(self, key: str, rich_text: str, mark: str, text: str) -> None:
        seconds = time.monotonic() - self._started.get(key, time.monotonic())
        if self.progress is not None and key in self._tasks:
            self.progress.update(self._tasks[key], description=rich_text, completed=1)
        elif self.progress is None:
            self.console.print(f"{mark} {text} ({seconds:.1f} s)", markup=False, highlight=False)

    def note(self, text: str, style: str = "") -> None:
        """A line above the progress rows (or just a line)."""
        self.console.print(text, style=style or None, markup=False, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@dataclass
class Summary:
    web_url: str
    prefect_url: str
    admin: str
    admin_password: str | None
    data: str
    logs: str
    pid: int
    seconds: float


def print_summary(console: Console, s: Summary) -> None:
    """The block printed once every part is healthy."""
    if s.admin_password:
        login = f"{s.admin} / {s.admin_password}   (shown this once; only a hash is stored)"
    else:
        login = (
            f"{s.admin} (password shown at first start; "
            "`conveyor users create NAME --role admin` adds another)"
        )
    rows = [
        ("Conveyor", s.web_url),
        ("Prefect dashboard", s.prefect_url),
        ("Admin login", login),
        ("Data lands in", s.data),
        ("Logs", s.logs),
        ("Stop", f"Ctrl-C (or kill -TERM {s.pid})"),
    ]
    console.print(f"[bold green]{READY_LINE}[/] in {s.seconds:.1f} s", highlight=False)
    for label, value in rows:
        console.print(Text.assemble((f"  {label:<18} ", "bold"), value), soft_wrap=True)
