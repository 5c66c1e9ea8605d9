"""Turn what went wrong in a run into words a business user understands (secrets masked)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from conveyor.errors import ConveyorError, ValidationFailed
from conveyor.secrets import mask_text

_MAX = 600


@dataclass(frozen=True)
class Explanation:
    """``message`` for people; ``detail`` is the error class and its own text."""

    message: str
    detail: str
    transient: bool = False


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (dlt nests the real cause a few levels deep)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.append(getattr(current, "exception", None))  # dlt PipelineStepFailed
        stack.append(current.__cause__)
        stack.append(current.__context__)


def explain(exc: BaseException, secrets: Iterable[str] = ()) -> Explanation:
    """The most specific explanation found in the chain of causes."""
    secrets = list(secrets)
    chain = list(causes(exc))
    root = _innermost(chain)
    detail = mask_text(f"{type(root).__name__}: {_first_lines(str(root))}", secrets)
    for candidate in chain:
        found = _known(candidate)
        if found:
            message, transient = found
            return Explanation(_clip(mask_text(message, secrets)), _clip(detail), transient)
    return Explanation(_clip(detail), _clip(detail))


def _innermost(chain: list[BaseException]) -> BaseException:
    # Prefer the deepest non-dlt-wrapper exception for the technical detail.
    for exc in reversed(chain):
        module = type(exc).__module__
        if not module.startswith(("dlt.pipeline", "dlt.extract.exceptions")):
            return exc
    return chain[0]


def _first_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:n])


def _clip(text: str) -> str:
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"


def _known(exc: BaseException) -> tuple[str, bool] | None:
    name = type(exc).__name__
    module = type(exc).__module__
    text = str(exc)
    low = text.lower()

    if isinstance(exc, ValidationFailed):
        return f"The connector's configuration is invalid: {exc}", False
    if isinstance(exc, ConveyorError):
        return str(exc), exc.transient

    # --- files -------------------------------------------------------------------
    if name == "FileReadError":
        return f"A source file could not be read: {_first_lines(text)}", False
    if name == "TransferIncomplete":
        return text, True

    # --- SQL databases -------------------------------------------------------------
    if name == "NoSuchTableError":
        return (
            f"Table '{text}' does not exist in the source database "
            "(check the table name and the schema).",
            False,
        )
    if (
        "read-only transaction" in low
        or "readonly database" in low
        or "query_only" in low
        or "data-modifying statement" in low
    ):
        return (
            "The query tries to change data in the source; only read-only SELECT queries "
            "are allowed.",
            False,
        )
    if "password authentication failed" in low or "access denied for user" in low:
        user = re.search(r'for user "([^"]+)"', text)
        who = f" for user '{user.group(1)}'" if user else ""
        return f"The database refused the user name or password{who}.", False
    if "could not translate host name" in low or "name or service not known" in low:
        return f"The server name could not be found: {_first_lines(text, 1)}", True
    if (
        "connection refused" in low
        or "could not connect" in low
        or "connection timed out" in low
        or "timeout expired" in low
    ):
        where = _where(text)
        return (
            f"Cannot reach the server{where}: the connection was refused or timed out. "
            "Check the host and port and that the server is running.",
            True,
        )
    if re.search(r'database "[^"]+" does not exist', low):
        return f"{_first_lines(text, 1)}.", False
    if name in ("ProgrammingError", "UndefinedTable", "UndefinedColumn", "SyntaxError") or (
        module.startswith(("psycopg", "sqlalchemy")) and "syntax error" in low
    ):
        return f"The source database rejected the query: {_first_lines(text, 1)}", False
    if "could not set lock on file" in low:
        return (
            "The DuckDB file is in use by another process; try again when that run ends.",
            True,
        )

    # --- HTTP APIs -----------------------------------------------------------------
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 400:
        url = getattr(getattr(response, "request", None), "url", None) or getattr(
            response, "url", ""
        )
        reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", "")
        if status in (401, 403):
            return f"The API at {url} refused the credentials (HTTP {status} {reason}).", False
        if status == 404:
            return f"The API has no such endpoint: {url} (HTTP 404).", False
        kind = "is failing" if status >= 500 else "rejected the request"
        return f"The API at {url} {kind} (HTTP {status} {reason}).", status >= 500
    if name == "UploadFailed":
        return f"The destination endpoint did not accept the data: {text}", bool(
            getattr(exc, "transient", False)
        )
    if name in ("ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout") and (
        module.startswith(("requests", "httpx", "urllib3"))
    ):
        return f"Cannot reach the API: {_first_lines(text, 1)}", True

    # --- S3 / SFTP -----------------------------------------------------------------
    if name == "NoSuchBucket" or "nosuchbucket" in low or "bucket does not exist" in low:
        return f"The S3 bucket does not exist: {_first_lines(text, 1)}", False
    if name in ("InvalidAccessKeyId", "SignatureDoesNotMatch") or "invalidaccesskeyid" in low:
        return "S3 refused the access key or secret key.", False
    if name == "EndpointConnectionError":
        return f"Cannot reach the S3 endpoint: {_first_lines(text, 1)}", True
    if name in ("AuthenticationException", "BadAuthenticationType"):
        return "The SFTP server refused the user name, password or key.", False
    if name == "NoValidConnectionsError" or (name == "SSHException" and "banner" in low):
        return f"Cannot reach the SFTP server: {_first_lines(text, 1)}", True
    if isinstance(exc, PermissionError):
        return f"Permission denied: {_first_lines(text, 1)}", False
    if isinstance(exc, FileNotFoundError):
        return f"Not found: {_first_lines(text, 1)}", False
    return None


def _where(text: str) -> str:
    match = re.search(r'(?:server at|host) "?([\w.\-:]+)"?,? (?:\([^)]*\), )?port (\d+)', text)
    if match:
        return f" at {match.group(1)}:{match.group(2)}"
    match = re.search(r"\(([\d.]+)\), port (\d+)", text)
    return f" at {match.group(1)}:{match.group(2)}" if match else ""
