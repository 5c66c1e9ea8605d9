"""SQL sources are read-only for real: one parsed SELECT, in a session that cannot write.

Two independent locks, so that fooling one does not open the other:

- ``check_query``: a custom query must parse (with sqlglot, in the source's dialect) as
  exactly one ``SELECT`` / ``WITH ... SELECT`` — no second statement, no data-modifying
  CTE, no ``SELECT ... INTO``, no ``FOR UPDATE/SHARE`` lock. Checked on save (the config
  model) and again before each run.
- ``read_only_url`` and ``engine``: every session that reads a source (tables, a query,
  the database-to-database copy) is read-only for its whole life, surviving ``COMMIT``:
  PostgreSQL through the connection option ``default_transaction_read_only=on``,
  MySQL/MariaDB through ``SET SESSION TRANSACTION READ ONLY`` on connect, SQLite opened
  ``mode=ro`` with ``PRAGMA query_only``, DuckDB opened read-only without file access.

A read-only database role is still the best lock of all (docs/security.md).
"""

from __future__ import annotations

from typing import Any

# libpq ``options``; written without a space, which some clients (connectorx) would not
# decode from the URL's "+".
PG_READ_ONLY = "-cdefault_transaction_read_only=on"

# SQLAlchemy backend name -> sqlglot dialect; others parse with sqlglot's generic dialect.
_DIALECTS = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "duckdb": "duckdb",
    "mssql": "tsql",
    "oracle": "oracle",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "redshift": "redshift",
    "trino": "trino",
    "clickhouse": "clickhouse",
}


def backend_of(url_or_driver: str) -> str:
    """The SQLAlchemy backend name of a URL or a drivername (``postgresql+psycopg``)."""
    if "://" not in url_or_driver:
        return url_or_driver.split("+", 1)[0].lower()
    from sqlalchemy.engine import make_url

    try:
        return str(make_url(url_or_driver).get_backend_name())
    except Exception:
        return url_or_driver.split(":", 1)[0].split("+", 1)[0].lower()


def dialect_of(url_or_driver: str | None) -> str | None:
    return _DIALECTS.get(backend_of(url_or_driver)) if url_or_driver else None


def check_query(sql: str, dialect: str | None) -> None:
    """Raise ValueError (the reason) unless ``sql`` is exactly one read-only query."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if not sql.strip():
        raise ValueError("query is empty")
    if dialect == "mysql" and ("/*!" in sql or "/*M!" in sql):
        # MySQL runs the inside of these "comments": the parser would not see it.
        raise ValueError("query must not contain MySQL executable comments (/*! ... */)")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"query could not be parsed as SQL ({first})") from None
    if len(statements) != 1:
        raise ValueError(
            f"query must be exactly one SELECT statement, found {len(statements)} statements"
        )
    [stmt] = statements
    while isinstance(stmt, exp.Subquery):  # (SELECT ...)
        stmt = stmt.this
    if not isinstance(stmt, exp.Query) or isinstance(stmt, exp.Command):
        raise ValueError(f"query must be a SELECT statement, not {_kind(stmt)}")
    forbidden: tuple[type[exp.Expression], ...] = tuple(
        getattr(exp, name) for name in _FORBIDDEN if isinstance(getattr(exp, name, None), type)
    )
    for node in stmt.walk():
        if isinstance(node, exp.Into):
            raise ValueError("query must not be SELECT ... INTO (it creates a table)")
        if isinstance(node, exp.Lock):
            raise ValueError("query must not lock rows (FOR UPDATE / FOR SHARE)")
        if isinstance(node, forbidden):
            raise ValueError(f"query must only read, but it contains {_kind(node)}")


# Statement types that never belong inside a read-only query (a CTE with DELETE, ...).
_FORBIDDEN = (
    "DML",
    "Insert",
    "Update",
    "Delete",
    "Merge",
    "DDL",
    "Create",
    "Drop",
    "Alter",
    "TruncateTable",
    "Command",
    "Transaction",
    "Commit",
    "Rollback",
    "Set",
    "Pragma",
    "Copy",
    "Use",
    "Attach",
    "Detach",
    "Grant",
    "Revoke",
    "Analyze",
    "Kill",
    "Execute",
    "LoadData",
    "Export",
    "Install",
    "Cache",
    "Uncache",
    "Refresh",
    "Declare",
    "Comment",
)


def _kind(node: Any) -> str:
    key = getattr(node, "key", "") or type(node).__name__
    return str(key).upper().replace("_", " ")


# --- sessions ------------------------------------------------------------------------


def read_only_url(url: str) -> str:
    """``url`` with the connection option that makes the whole session read-only, where the
    URL can carry it (PostgreSQL: libpq ``options``; SQLite: ``mode=ro`` URI)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        options = u.query.get("options")
        current = options if isinstance(options, str) else " ".join(options or ())
        if "default_transaction_read_only=on" not in current.replace(" ", ""):
            current = f"{current} {PG_READ_ONLY}".strip()
        u = u.update_query_dict({"options": current})
    elif backend == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            u = u.set(database=f"file:{db}").update_query_dict({"mode": "ro", "uri": "true"})
        elif db.startswith("file:"):
            u = u.update_query_dict({"mode": "ro", "uri": "true"})
    return u.render_as_string(hide_password=False)


def engine(url: str, **kwargs: Any) -> Any:
    """A SQLAlchemy engine whose every connection is read-only for its whole life."""
    import sqlalchemy as sa

    url = read_only_url(url)
    backend = backend_of(url)
    if backend == "duckdb":
        config = dict(kwargs.pop("connect_args", {}).get("config", {}))
        config.update({"access_mode": "read_only", "enable_external_access": False})
        kwargs["connect_args"] = {"read_only": True, "config": config}
    eng = sa.create_engine(url, **kwargs)
    sa.event.listen(eng, "connect", _on_connect(backend))
    return eng


def _on_connect(backend: str) -> Any:
    def lock(dbapi_connection: Any, _record: Any) -> None:
        statement = {
            "mysql": "SET SESSION TRANSACTION READ ONLY",
            "mariadb": "SET SESSION TRANSACTION READ ONLY",
            "sqlite": "PRAGMA query_only = ON",
            "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        }.get(backend)
        if statement is None:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        if backend == "postgresql" and not getattr(dbapi_connection, "autocommit", False):
            dbapi_connection.commit()  # the SET ran in a transaction of its own

    return lock
