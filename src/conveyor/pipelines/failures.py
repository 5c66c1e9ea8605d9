"""Failure classes: what went wrong in a type's terms, for people, and which kind of failure.

Each type declares the failure classes it can produce (``ConveyorType.failures``). A failure
class is an exception class whose ``failure_class`` decides what happens next
(``conveyor.domain.vocabulary.FAILURE_CLASSES``): ``TransientFailure`` (network, timeout,
server unavailable, lock, HTTP 5xx/429: the run is retried automatically), ``ConfigFailure``
(authentication, permission, a missing table, path, database or bucket, a bad query: a person
must fix the configuration) or ``DataFailure`` (types, constraints, schema conflicts: the
data or the destination must change). ``TerminalFailure`` is the older name of "not worth
retrying" and counts as config. Whatever nothing recognises is ``internal`` (a bug). ``recognise``
turns a library's exception (psycopg, botocore, paramiko, httpx, ...) into one, with the
message a business user reads; ``conveyor.pipelines.explain`` asks every registered type's
classes, in registry order, for each exception in the chain of causes.

The families below are shared by the types that speak the same protocol (a SQL source and a
PostgreSQL destination both meet a refused password); a type lists the families it uses.
"""

from __future__ import annotations

import re
from typing import ClassVar

from conveyor.domain.vocabulary import FailureClass


class TypeFailure(Exception):
    """A failure a type recognised; ``str()`` is the message for people."""

    failure_class: ClassVar[FailureClass] = "internal"
    transient: ClassVar[bool] = False  # failure_class == "transient", kept for older callers

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        """An instance of this class when ``exc`` is this failure, else None."""
        return exc if isinstance(exc, cls) else None


class TerminalFailure(TypeFailure):
    """Retrying will not help: the configuration or the data must change (config unless a
    subclass says data)."""

    failure_class: ClassVar[FailureClass] = "config"
    transient = False


class ConfigFailure(TerminalFailure):
    """A person must fix the configuration: credentials, permissions, names, the query."""

    failure_class: ClassVar[FailureClass] = "config"


class DataFailure(TerminalFailure):
    """The data does not fit: types, constraints, schema conflicts."""

    failure_class: ClassVar[FailureClass] = "data"


class TransientFailure(TypeFailure):
    """The target may recover: a later attempt can succeed (retried automatically)."""

    failure_class: ClassVar[FailureClass] = "transient"
    transient = True


def first_lines(text: str, n: int = 3) -> str:
    """The first ``n`` non-empty lines of ``text``, joined by spaces."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:n])


def _class_of(module: str, name: str) -> type[BaseException] | None:
    """A library's exception class, or None when the library is not installed."""
    import importlib

    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _is(exc: BaseException, *classes: tuple[str, str]) -> bool:
    return any(
        (klass := _class_of(module, name)) is not None and isinstance(exc, klass)
        for module, name in classes
    )


# --- databases (SQL sources, PostgreSQL and DuckDB destinations) ---------------------


class TableMissing(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if _is(exc, ("sqlalchemy.exc", "NoSuchTableError")):
            return cls(
                f"Table '{exc}' does not exist in the source database "
                "(check the table name and the schema)."
            )
        return None


_WRITES = ("read-only transaction", "readonly database", "query_only", "data-modifying statement")


class WriteRefused(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if any(w in str(exc).lower() for w in _WRITES):
            return cls(
                "The query tries to change data in the source; only read-only SELECT queries "
                "are allowed."
            )
        return None


class LoginRefused(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        text = str(exc)
        low = text.lower()
        if "password authentication failed" in low or "access denied for user" in low:
            user = re.search(r'for user "([^"]+)"', text)
            who = f" for user '{user.group(1)}'" if user else ""
            return cls(f"The database refused the user name or password{who}.")
        return None


class HostUnknown(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        low = str(exc).lower()
        if "could not translate host name" in low or "name or service not known" in low:
            return cls(f"The server name could not be found: {first_lines(str(exc), 1)}")
        return None


_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "connection timed out",
    "timeout expired",
)


class ServerUnreachable(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        text = str(exc)
        if any(u in text.lower() for u in _UNREACHABLE):
            return cls(
                f"Cannot reach the server{_where(text)}: the connection was refused or timed "
                "out. Check the host and port and that the server is running."
            )
        return None


class DatabaseMissing(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if re.search(r'database "[^"]+" does not exist', str(exc).lower()):
            return cls(f"{first_lines(str(exc), 1)}.")
        return None


_QUERY_ERRORS = ("ProgrammingError", "UndefinedTable", "UndefinedColumn", "SyntaxError")


class QueryRejected(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        # Any driver's DB-API ProgrammingError (psycopg, psycopg2, pymysql, sqlite3, ...) and
        # its subclasses, found by the DB-API's own name rather than one driver's class.
        names = {klass.__name__ for klass in type(exc).__mro__}
        module = type(exc).__module__
        if names & set(_QUERY_ERRORS) or (
            module.startswith(("psycopg", "sqlalchemy")) and "syntax error" in str(exc).lower()
        ):
            return cls(f"The source database rejected the query: {first_lines(str(exc), 1)}")
        return None


_LOST = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "could not receive data from server",
    "ssl connection has been closed unexpectedly",
    "connection reset by peer",
    "the connection is closed",
    "connection already closed",
    "too many connections",
    "remaining connection slots are reserved",
    "deadlock detected",
    "could not serialize access",
    "canceling statement due to lock timeout",
    "canceling statement due to statement timeout",
)


class ConnectionLost(TransientFailure):
    """The server went away, restarted or was too busy in the middle of a run."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        text = str(exc)
        if any(phrase in text.lower() for phrase in _LOST):
            return cls(
                f"The database server{_where(text)} broke off the work: "
                f"{first_lines(text, 1)}. A later attempt can succeed."
            )
        return None


# DB-API DataError and IntegrityError (psycopg, sqlite3, DuckDB's ConversionException and
# ConstraintException derive from them) and DuckDB's own type errors, found by class name.
_DATA_ERRORS = frozenset(
    {"DataError", "IntegrityError", "TypeMismatchException", "OutOfRangeException"}
)


class DataRejected(DataFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        names = {klass.__name__ for klass in type(exc).__mro__}
        if names & _DATA_ERRORS:
            return cls(
                f"The data does not fit the destination (a type or a constraint): "
                f"{first_lines(str(exc), 1)}"
            )
        return None


_SCHEMA_CONFLICTS = (
    ("dlt.common.schema.exceptions", "CannotCoerceColumnException"),
    ("dlt.common.schema.exceptions", "CannotCoerceNullException"),
    ("dlt.common.schema.exceptions", "DataValidationError"),
    ("dlt.common.schema.exceptions", "TablePropertiesConflictException"),
    ("dlt.common.schema.exceptions", "ColumnNameConflictException"),
    ("dlt.common.schema.exceptions", "UnboundColumnException"),
    ("dlt.common.schema.exceptions", "SchemaIdentifierNormalizationCollision"),
)


class SchemaConflict(DataFailure):
    """dlt's schema and contract errors: a column changed type, a contract refused a row."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if _is(exc, *_SCHEMA_CONFLICTS):
            return cls(
                f"The data conflicts with the destination's schema: {first_lines(str(exc), 1)}"
            )
        return None


def _where(text: str) -> str:
    match = re.search(r'(?:server at|host) "?([\w.\-:]+)"?,? (?:\([^)]*\), )?port (\d+)', text)
    if match:
        return f" at {match.group(1)}:{match.group(2)}"
    match = re.search(r"\(([\d.]+)\), port (\d+)", text)
    return f" at {match.group(1)}:{match.group(2)}" if match else ""


DATABASE: tuple[type[TypeFailure], ...] = (
    TableMissing,
    WriteRefused,
    LoginRefused,
    HostUnknown,
    ServerUnreachable,
    DatabaseMissing,
    QueryRejected,
    ConnectionLost,
    DataRejected,
)


# --- HTTP APIs -------------------------------------------------------------------------


def _http_status(exc: BaseException) -> tuple[int, str, str] | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(status, int) or status < 400:
        return None
    url = getattr(getattr(response, "request", None), "url", None) or getattr(response, "url", "")
    reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", "")
    return status, str(url), str(reason)


class ApiRefused(ConfigFailure):
    """HTTP 4xx but 429: credentials, a missing endpoint or a request the API rejects."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        found = _http_status(exc)
        if found is None or found[0] >= 500 or found[0] == 429:
            return None
        status, url, reason = found
        if status in (401, 403):
            return cls(f"The API at {url} refused the credentials (HTTP {status} {reason}).")
        if status == 404:
            return cls(f"The API has no such endpoint: {url} (HTTP 404).")
        return cls(f"The API at {url} rejected the request (HTTP {status} {reason}).")


class ApiFailing(TransientFailure):
    """HTTP 5xx, and 429 (too many requests: later)."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        found = _http_status(exc)
        if found is None or (found[0] < 500 and found[0] != 429):
            return None
        status, url, reason = found
        if status == 429:
            return cls(f"The API at {url} asks to slow down (HTTP 429 {reason}).")
        return cls(f"The API at {url} is failing (HTTP {status} {reason}).")


_HTTP_CONNECT = (
    ("requests.exceptions", "ConnectionError"),
    ("requests.exceptions", "ReadTimeout"),
    ("httpx", "ConnectError"),
    ("httpx", "ConnectTimeout"),
    ("httpx", "ReadTimeout"),
)


class ApiUnreachable(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if _is(exc, *_HTTP_CONNECT):
            return cls(f"Cannot reach the API: {first_lines(str(exc), 1)}")
        return None


HTTP: tuple[type[TypeFailure], ...] = (ApiRefused, ApiFailing, ApiUnreachable)


# --- S3 and SFTP -----------------------------------------------------------------------


def _s3_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) if isinstance(error, dict) else ""


class BucketMissing(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        low = str(exc).lower()
        if (
            _s3_code(exc) == "NoSuchBucket"
            or "nosuchbucket" in low
            or "bucket does not exist" in low
        ):
            return cls(f"The S3 bucket does not exist: {first_lines(str(exc), 1)}")
        return None


class S3KeyRefused(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        code = _s3_code(exc)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch") or (
            "invalidaccesskeyid" in str(exc).lower()
        ):
            return cls("S3 refused the access key or secret key.")
        return None


class S3Unreachable(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if _is(exc, ("botocore.exceptions", "EndpointConnectionError")):
            return cls(f"Cannot reach the S3 endpoint: {first_lines(str(exc), 1)}")
        return None


S3: tuple[type[TypeFailure], ...] = (BucketMissing, S3KeyRefused, S3Unreachable)


class SftpLoginRefused(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if _is(
            exc,
            ("paramiko.ssh_exception", "AuthenticationException"),
            ("paramiko.ssh_exception", "BadAuthenticationType"),
        ):
            return cls("The SFTP server refused the user name, password or key.")
        return None


class SftpUnreachable(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        banner = _is(exc, ("paramiko.ssh_exception", "SSHException")) and (
            "banner" in str(exc).lower()
        )
        if banner or _is(exc, ("paramiko.ssh_exception", "NoValidConnectionsError")):
            return cls(f"Cannot reach the SFTP server: {first_lines(str(exc), 1)}")
        return None


SFTP: tuple[type[TypeFailure], ...] = (SftpLoginRefused, SftpUnreachable)


# --- local files (every type that reads or writes them; asked last) --------------------


class AccessDenied(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if isinstance(exc, PermissionError):
            return cls(f"Permission denied: {first_lines(str(exc), 1)}")
        return None


class NotThere(ConfigFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if isinstance(exc, FileNotFoundError):
            return cls(f"Not found: {first_lines(str(exc), 1)}")
        return None


class NetworkDown(TransientFailure):
    """The operating system's own network errors: refused, reset, timed out."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return cls(f"The network failed: {first_lines(str(exc), 1) or type(exc).__name__}")
        return None


GENERIC: tuple[type[TypeFailure], ...] = (
    AccessDenied,
    NotThere,
    NetworkDown,
    DataRejected,
    SchemaConflict,
)
