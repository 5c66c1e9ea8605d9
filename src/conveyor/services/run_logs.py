"""A run's full log, kept by Conveyor: what the flow logged while it ran (Conveyor's loggers,
dlt's, Prefect's flow and task run loggers, and so the flow's prints), secrets masked, stored
in ``connector_run_logs`` with the run and deleted with it (foreign key cascade), so it stays
readable after Prefect purges its own logs.

``LogCapture`` is entered by the flow around its work (``pipelines/flow.execute``): a logging
handler buffers formatted lines in memory and a daemon thread writes them as one chunk every
``interval`` seconds and at exit, so a slow database never slows the copy. At most
``settings.run_log_max_bytes`` are stored per run; past that, lines are only counted and a
last line says how much was left out (``log_bytes``, ``log_truncated`` on the record).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from types import TracebackType

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.db.models import ConnectorRun, RunLogChunk
from conveyor.db.session import session_scope
from conveyor.errors import NotFound
from conveyor.secrets import MASKING_FILTER, mask_text
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.run_logs")

# Loggers the capture listens on: the root sees every logger that propagates (conveyor.*,
# prefect.flow_runs and prefect.task_runs, where log_prints sends prints); dlt's does not.
CAPTURED_LOGGERS = ("", "dlt")
FLUSH_INTERVAL = 2.0
TAIL_MAX = 100_000
_current: LogCapture | None = None  # the capture open in this process, if any


def format_line(record: logging.LogRecord) -> str:
    """``2026-12-06 12:00:01 INFO conveyor.pipelines: text`` (UTC), traceback appended."""
    at = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = f"{at} {record.levelname} {record.name}: {record.getMessage()}"
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return mask_text(text, MASKING_FILTER.secrets())


class _Handler(logging.Handler):
    def __init__(self, capture: LogCapture) -> None:
        super().__init__(logging.INFO)
        self.capture = capture
        self.addFilter(MASKING_FILTER)

    def emit(self, record: logging.LogRecord) -> None:
        # A record reaching both the root and dlt's logger is kept once.
        if getattr(record, "_conveyor_capture", None) == id(self) or self.capture.in_flush():
            return
        record._conveyor_capture = id(self)
        try:
            self.capture.add(format_line(record))
        except Exception:  # a log line must never fail the run
            self.handleError(record)


class LogCapture:
    """Stores the log lines of this process while open, for run ``run_id``."""

    def __init__(
        self, run_id: int, *, settings: Settings, interval: float = FLUSH_INTERVAL
    ) -> None:
        self.run_id = run_id
        self.settings = settings
        self.interval = interval
        self.cap = settings.run_log_max_bytes
        self.stored = 0  # bytes stored (or buffered to be)
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._buffer: list[str] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._handler = _Handler(self)
        self._thread = threading.Thread(
            target=self._loop, name=f"conveyor-run-log-{run_id}", daemon=True
        )
        self._levels: list[tuple[logging.Logger, int]] = []

    # --- lines in -------------------------------------------------------------------

    def add(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace")) + 1
        with self._lock:
            if self.dropped_lines or self.stored + size > self.cap:
                self.dropped_lines += 1
                self.dropped_bytes += size
                return
            self.stored += size
            self._buffer.append(line)

    def in_flush(self) -> bool:
        return bool(getattr(self._local, "flushing", False))

    # --- lines out ------------------------------------------------------------------

    def flush(self, *, final: bool = False) -> None:
        """Write what is buffered as one chunk (and, at the end, the truncation notice)."""
        with self._write_lock:
            self._local.flushing = True
            try:
                with self._lock:
                    lines, self._buffer = self._buffer, []
                    truncated = bool(self.dropped_lines)
                    if final and truncated:
                        lines.append(self._notice())
                if lines or final:
                    text = "".join(line + "\n" for line in lines)
                    _write(self.run_id, text, self.settings, self.stored, truncated)
            finally:
                self._local.flushing = False

    def _notice(self) -> str:
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"{at} WARNING conveyor.run_logs: log truncated: {self.dropped_lines} more "
            f"line(s), {self.dropped_bytes} bytes, were not kept (the cap is "
            f"CONVEYOR_RUN_LOG_MAX_BYTES={self.cap})"
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # keep buffering; the next flush or the exit retries
                log.warning("could not store the log of run %s: %s", self.run_id, exc)

    # --- context --------------------------------------------------------------------

    def __enter__(self) -> LogCapture:
        # A later attempt of the same run adds to its log, within the same cap.
        with session_scope(self.settings.effective_database_url) as session:
            run = session.get(ConnectorRun, self.run_id)
            self.stored = int(run.log_bytes or 0) if run is not None else 0
        # Conveyor's INFO lines belong in the run's log even where the process logs only
        # warnings (Prefect's flow processes default the root logger to WARNING).
        conveyor = logging.getLogger("conveyor")
        if conveyor.getEffectiveLevel() > logging.INFO:
            self._levels.append((conveyor, conveyor.level))
            conveyor.setLevel(logging.INFO)
        dlt = logging.getLogger("dlt")
        if not dlt.handlers:
            # dlt formats the first handler it finds on its logger as its own console one;
            # give it one so that it does not take this capture's.
            dlt.addHandler(logging.StreamHandler())
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        self._thread.start()
        global _current
        _current = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _current
        if _current is self:
            _current = None
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        for logger, level in self._levels:
            logger.setLevel(level)
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.flush(final=True)
        except Exception as exc:
            log.warning("could not store the end of the log of run %s: %s", self.run_id, exc)


def flush_current() -> None:
    """Store what the open capture holds now: called just before the run's record is
    closed, so that whoever sees the run closed finds its whole log."""
    capture = _current
    if capture is None:
        return
    try:
        capture.flush()
    except Exception as exc:  # the exit flush tries again
        log.warning("could not store the log of run %s: %s", capture.run_id, exc)


def _write(run_id: int, text: str, settings: Settings, stored: int, truncated: bool) -> None:
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is None:  # deleted while running: nothing to keep
            return
        if text:
            append_chunk(run_id, text, session=session)
        run.log_bytes = stored
        run.log_truncated = truncated


def append_chunk(run_id: int, text: str, *, session: Session) -> None:
    """Add ``text`` (whole lines) after the run's last chunk."""
    last = session.scalar(select(func.max(RunLogChunk.seq)).where(RunLogChunk.run_id == run_id))
    session.add(RunLogChunk(run_id=run_id, seq=(last or 0) + 1, text=text))


def append_line(run_id: int, message: str, *, session: Session, level: str = "INFO") -> None:
    """One line written by Conveyor itself outside the flow (e.g. who cancelled the run)."""
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = f"{at} {level} conveyor.services: {message}\n"
    append_chunk(run_id, line, session=session)
    run = session.get(ConnectorRun, run_id)
    if run is not None:
        run.log_bytes = (run.log_bytes or 0) + len(line.encode())


# --- reading -------------------------------------------------------------------------


def read(run_id: int, *, session: Session, tail: int | None = None) -> str:
    """The run's stored log; with ``tail``, its last ``tail`` lines only."""
    if session.get(ConnectorRun, run_id) is None:
        raise NotFound(f"run {run_id} does not exist")
    order = (RunLogChunk.seq.desc(), RunLogChunk.id.desc())
    chunks = session.scalars(
        select(RunLogChunk.text).where(RunLogChunk.run_id == run_id).order_by(*order)
    )
    if tail is None:
        return "".join(reversed(list(chunks)))
    kept: deque[str] = deque()
    count = 0
    for text in chunks:  # newest first: stop once enough lines are in hand
        kept.appendleft(text)
        count += text.count("\n")
        if count > tail:
            break
    lines = "".join(kept).splitlines(keepends=True)
    return "".join(lines[-tail:]) if tail > 0 else ""
