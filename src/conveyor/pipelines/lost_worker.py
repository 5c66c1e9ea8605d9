"""A flow process outlives its worker.

A process worker starts each flow run in a session of its own and reads the run's output
through a pipe. When the worker dies (killed, OOM, a node drained), the pipe's reading end
closes and the next log line the flow writes to the console meets a broken pipe. Prefect's
console handler renders with rich, whose ``Console.on_broken_pipe`` answers that with
``SystemExit(1)`` — raised inside whatever logging call met it, so a load that had nothing
to do with the console was aborted half way and Prefect's crash hook recorded the run
crashed (measured: the data had landed, or was about to).

Rich documents ``on_broken_pipe`` as the hook to change that behaviour. ``survive`` sets it,
on every console a logging handler holds, to send the process's console output to the null
device and carry on: the run's log still reaches Prefect's API and Conveyor's own copy
(``services/run_logs``), only the dead worker's console stops getting it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any


def _quietly(console: Any) -> None:
    console.quiet = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _consoles() -> list[Any]:
    loggers: list[logging.Logger | logging.PlaceHolder] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    found: dict[int, Any] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            console = getattr(handler, "console", None)
            if console is not None and hasattr(console, "on_broken_pipe"):
                found[id(console)] = console
    return list(found.values())


def survive() -> int:
    """Make every rich console of this process's log handlers survive a broken pipe; how
    many it changed."""
    consoles = _consoles()
    for console in consoles:
        console.on_broken_pipe = lambda console=console: _quietly(console)
    return len(consoles)
