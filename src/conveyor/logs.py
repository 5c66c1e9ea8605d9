"""Logging for every Conveyor process: plain text by default, one JSON object a line when
``CONVEYOR_LOG_JSON=true``; request ids and secret masking either way."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from conveyor.secrets import install_log_masking

# Set per request by the web app: log lines and audit entries carry the request id.
REQUEST_ID: ContextVar[str | None] = ContextVar("conveyor_request_id", default=None)

# LogRecord attributes that are not "extra" fields passed by the caller.
_SKIP = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class RequestIdFilter(logging.Filter):
    """Puts the current request id (if any) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Format strings do not apply; accepted (and ignored) so that logging configs such
        # as Prefect's, which pass one, can name this class.
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _SKIP and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [{rid}]" if rid else text


def configure_logging(*, json_logs: bool = False, level: str = "INFO") -> None:
    """Send this process's logs to stderr in the chosen format (idempotent)."""
    install_log_masking()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_conveyor", False)]:
        root.removeHandler(old)
    handler._conveyor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own handlers would print a second, differently formatted copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def dict_config(*, json_logs: bool = False, level: str = "INFO") -> dict[str, Any]:
    """The same set-up as a ``logging.config.dictConfig`` mapping.

    For uvicorn's ``log_config``, which it applies in every worker process it starts.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": {"()": JsonFormatter if json_logs else TextFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "main",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def settings_for_logging() -> tuple[bool, str]:
    """``(json, level)`` from the settings; text at INFO when they cannot be read."""
    try:
        from conveyor.settings import get_settings

        s = get_settings()
        level = s.log_level.upper()
        if not isinstance(logging.getLevelName(level), int):
            level = "INFO"
        return s.log_json, level
    except Exception:
        return False, "INFO"


def configure_from_environment() -> None:
    """Configure from ``CONVEYOR_LOG_JSON`` / ``CONVEYOR_LOG_LEVEL``; never fails.

    A bad setting is left for the command itself to report: logging falls back to text.
    """
    json_logs, level = settings_for_logging()
    configure_logging(json_logs=json_logs, level=level)


def prefect_logging_env(json_logs: bool) -> dict[str, str]:
    """Environment that makes a Prefect process (server, worker, flow run) log like Conveyor.

    Prefect's logging config takes overrides from ``PREFECT_LOGGING_*`` variables; with
    these its console handler writes this module's JSON lines.
    """
    if not json_logs:
        return {}
    return {
        "PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER": "json",
        "PREFECT_LOGGING_FORMATTERS_JSON_CLASS": "conveyor.logs.JsonFormatter",
    }
