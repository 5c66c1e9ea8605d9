"""Apply the network policy to every connection connector code makes, at connect time.

Two ways in, because connectors connect two ways:

- Python sockets (requests in dlt's rest_api source, httpx in the rest_api destination,
  s3fs/aiobotocore, paramiko, pymysql): an audit hook on ``socket.connect`` checks the real
  peer address of every connection — redirects and a paginator's next link included.
- C clients that never touch a Python socket (libpq through psycopg, psycopg2, dlt's
  postgres destination and ADBC, DuckDB's postgres scanner; connectorx): the host is
  resolved here, every address checked, and the connection pinned to the checked address
  (libpq ``hostaddr``), at each connection: a SQLAlchemy ``do_connect`` listener for every
  engine, and ``pin_url`` / ``pin_conninfo`` where URLs are handed to C code. DuckDB's
  MySQL scanner (libmysqlclient) is handed the checked address as its host (``pin_mysql``).

Whose connection it is decides whether it is checked: the innermost frame on the stack that
belongs to connector code (dlt, fsspec, the type modules, ...) or to the platform (Prefect's
client, Conveyor's database layer) wins; connections with neither are the platform's own
(e.g. Prefect's client in a helper task). The policy comes from the settings of the run or
check (``activate``), falling back to the last one activated in this process.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import socket
import sys
import threading
from types import FrameType
from typing import Any

from conveyor.pipelines.network import (
    NetworkDenied,
    NetworkPolicy,
    check_config,
    parse_ip,
    policy_for,
)
from conveyor.settings import Settings

# Modules whose connections are a connector's (top-level packages, or exact prefixes).
_CONNECTOR_PACKAGES = frozenset(
    {
        "dlt",
        "fsspec",
        "s3fs",
        "aiobotocore",
        "botocore",
        "boto3",
        "s3transfer",
        "aiohttp",
        "aiohappyeyeballs",
        "paramiko",
        "sshfs",
        "asyncssh",
        "requests",
        "urllib3",
        "pymysql",
        "MySQLdb",
        "connectorx",
    }
)
_CONNECTOR_PREFIXES = (
    "conveyor.pipelines.sources",
    "conveyor.pipelines.destinations",
    "conveyor.pipelines.direct",
    "conveyor.pipelines.transfer",
    "conveyor.pipelines.runner",
    "conveyor.pipelines.storage",
    "conveyor.pipelines.check",
)
_PLATFORM_PACKAGES = frozenset({"prefect", "uvicorn"})
_PLATFORM_PREFIXES = (
    "conveyor.db",
    "conveyor.sync",
    "conveyor.services",
    "conveyor.web",
    "conveyor.supervisor",
    "conveyor.pipelines.flow",
)

_POLICY: contextvars.ContextVar[NetworkPolicy | None] = contextvars.ContextVar(
    "conveyor_network_policy", default=None
)
_last: NetworkPolicy | None = None
_installed = False
_install_lock = threading.Lock()


def activate(settings: Settings) -> NetworkPolicy:
    """Install the guards (once per process) and make ``settings``' policy the current one."""
    global _last
    policy = policy_for(settings)
    _last = policy
    _POLICY.set(policy)
    install()
    return policy


def current_policy() -> NetworkPolicy:
    """The policy of this context's run or check, else the last one activated here."""
    policy = _POLICY.get() or _last
    if policy is None:
        policy = policy_for(Settings())
    return policy


def install() -> None:
    """Add the audit hook and the SQLAlchemy listener (idempotent; hooks cannot be removed)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "do_connect", _do_connect)
        sys.addaudithook(_audit)
        _installed = True


def check_connector(connector: Any, settings: Settings) -> None:
    """Refuse a run whose source or destination fields reach a denied address."""
    check_config(connector.source, settings, prefix="source config")
    check_config(connector.destination, settings, prefix="destination config")


# --- whose connection ---------------------------------------------------------------


def owner(frame: FrameType | None) -> str | None:
    """Whose connection: connector or platform, by the innermost frame that says which."""
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name.partition(".")[0] in _CONNECTOR_PACKAGES or name.startswith(_CONNECTOR_PREFIXES):
            return "connector"
        if name.partition(".")[0] in _PLATFORM_PACKAGES or name.startswith(_PLATFORM_PREFIXES):
            return "platform"
        frame = frame.f_back
    return None


# --- Python sockets -----------------------------------------------------------------


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect":
        return
    if owner(sys._getframe(1)) != "connector":
        return
    sock, address = args
    policy = current_policy()
    family = getattr(sock, "family", None)
    if family == socket.AF_UNIX:
        policy.check(None, 0, shown=f"connection to {address!r}")
    elif family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host, port = str(address[0]), int(address[1])
        policy.check(host, port, shown=f"connection to {_hostport(host, port)}")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- libpq and other C clients --------------------------------------------------------


def pin_conninfo_params(
    params: dict[str, Any], policy: NetworkPolicy | None = None
) -> dict[str, Any]:
    """libpq connection parameters checked and pinned: ``hostaddr`` is the checked address.

    A connection without a host goes to a Unix socket on this machine (loopback)."""
    policy = policy or current_policy()
    if params.get("service") or os.environ.get("PGSERVICE"):
        raise NetworkDenied("connections through a libpq service file are not supported")
    host = str(params.get("host") or os.environ.get("PGHOST") or "")
    hostaddr = str(params.get("hostaddr") or os.environ.get("PGHOSTADDR") or "")
    port_text = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    if "," in host or "," in hostaddr or "," in port_text:
        raise NetworkDenied(
            f"{host or hostaddr}: several hosts in one connection are not supported"
        )
    port = int(port_text)
    database = str(
        params.get("dbname")
        or params.get("database")
        or os.environ.get("PGDATABASE")
        or params.get("user")
        or os.environ.get("PGUSER")
        or getpass.getuser()
    )
    shown = f"connection to {_hostport(hostaddr or host or 'local socket', port)}/{database}"
    out = dict(params)
    if hostaddr:
        policy.check(hostaddr, port, database=database, shown=shown)
    elif host and not host.startswith("/"):
        out["hostaddr"] = str(policy.check(host, port, database=database, shown=shown)[0])
    else:
        policy.check(None, port, database=database, shown=shown)
    return out


def pin_url(url: str, policy: NetworkPolicy | None = None) -> str:
    """A SQLAlchemy URL checked; a PostgreSQL one pinned with ``hostaddr`` in its query."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    backend = u.get_backend_name()
    if backend != "postgresql":
        from conveyor.pipelines.network import database_target

        target = database_target(url)
        if target is not None:
            host, port, database = target
            (policy or current_policy()).check(
                host, port, database=database, shown=f"connection to {host}:{port}/{database}"
            )
        return url
    params: dict[str, Any] = {k: v for k, v in u.query.items() if isinstance(v, str)}
    for key, value in (
        ("host", u.host),
        ("port", u.port),
        ("dbname", u.database),
        ("user", u.username),
    ):
        if value is not None:
            params.setdefault(key, value)
    pinned = pin_conninfo_params(params, policy)
    if "hostaddr" in pinned:
        u = u.update_query_dict({"hostaddr": pinned["hostaddr"]})
    return u.render_as_string(hide_password=False)


def pin_conninfo(conninfo: str, policy: NetworkPolicy | None = None) -> str:
    """A libpq connection string checked and pinned (see ``pin_conninfo_params``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo("", **pin_conninfo_params(conninfo_to_dict(conninfo), policy))


def pin_mysql(
    host: str | None, port: int, database: str | None, policy: NetworkPolicy | None = None
) -> str:
    """The checked address a C MySQL client (DuckDB's MySQL scanner, libmysqlclient) is
    given in place of ``host``: resolved here, every address checked, the first one used.

    No host or ``localhost`` would be libmysqlclient's Unix socket; it is checked as this
    machine and pinned to its loopback address over TCP, as PyMySQL connects."""
    name = host or "localhost"
    shown = f"connection to {_hostport(name, port)}" + (f"/{database}" if database else "")
    if name.startswith("/"):
        raise NetworkDenied(f"{shown}: Unix socket paths are not supported here")
    addresses = (policy or current_policy()).check(name, port, database=database, shown=shown)
    return str(addresses[0])


def _do_connect(dialect: Any, conn_rec: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
    """Every SQLAlchemy engine's connect: connector engines are checked and pinned."""
    if owner(sys._getframe(1)) != "connector":
        return
    name = dialect.name
    if name == "postgresql":
        if cargs and isinstance(cargs[0], str) and "=" in cargs[0]:
            cargs[0] = pin_conninfo(cargs[0])
        pinned = pin_conninfo_params(cparams)
        cparams.update(pinned)
        return
    host = cparams.get("host") or cparams.get("server")
    if isinstance(host, str) and host and name != "sqlite":
        port = int(cparams.get("port") or {"mysql": 3306, "mariadb": 3306}.get(name, 0))
        database = cparams.get("database") or cparams.get("db")
        ip = parse_ip(host)
        shown = f"connection to {_hostport(host, port)}"
        current_policy().check(
            str(ip) if ip else host, port, database=database and str(database), shown=shown
        )
