"""Structured logs: one JSON object a line, with request ids and masked secrets."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from conveyor.logs import REQUEST_ID, JsonFormatter, RequestIdFilter, dict_config


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("conveyor.test-json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_line_has_request_id_and_extras() -> None:
    logger, stream = _capture()
    token = REQUEST_ID.set("req-1")
    try:
        logger.info("GET %s %d", "/x", 200, extra={"status": 200})
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(stream.getvalue())
    assert line["message"] == "GET /x 200"
    assert line["request_id"] == "req-1"
    assert line["status"] == 200
    assert line["level"] == "INFO" and line["logger"] == "conveyor.test-json"


def test_json_line_masks_url_passwords() -> None:
    from conveyor.secrets import install_log_masking

    install_log_masking()
    logger, stream = _capture()
    logger.warning("cannot reach %s", "postgresql://app:hunter22@db/conveyor")
    assert "hunter22" not in stream.getvalue()


def test_dict_config_is_valid_for_uvicorn() -> None:
    cfg = dict_config(json_logs=True, level="warning")
    assert cfg["root"]["level"] == "WARNING"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(cfg)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
