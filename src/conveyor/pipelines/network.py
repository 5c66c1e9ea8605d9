"""Where connectors may connect: the network policy, built from settings.

Connectors never reach the platform's own services (the Prefect API, Conveyor's and
Prefect's databases, the web app) nor cloud metadata, link-local, unspecified or multicast
addresses; loopback (and this machine's own addresses) only when
``CONVEYOR_NETWORK_ALLOW_LOOPBACK`` allows it (on in local mode, off in production). Admins
can deny more ranges and allow ranges that would otherwise be loopback or denied by them.

Every address is checked after DNS resolution: a name is refused if any of its addresses
is. ``conveyor.pipelines.netguard`` applies the policy to every connection connector code
makes; this module only decides.
"""

from __future__ import annotations

import functools
import getpass
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from conveyor.errors import ConveyorError, FieldProblem, ValidationFailed
from conveyor.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

OWN_SERVICES = "connectors cannot reach Conveyor's own services"

_NET = ipaddress.ip_network
# Denied whatever an admin allows: the cloud metadata endpoints and the ranges they live in.
_ALWAYS_DENIED: tuple[tuple[IPNetwork, str], ...] = (
    (_NET("169.254.169.254/32"), "a cloud metadata address"),
    (_NET("fd00:ec2::254/128"), "a cloud metadata address"),
    (_NET("100.100.100.200/32"), "a cloud metadata address"),
    (_NET("169.254.0.0/16"), "a link-local address (where cloud metadata services live)"),
    (_NET("fe80::/10"), "a link-local address (where cloud metadata services live)"),
    (_NET("0.0.0.0/8"), "an unspecified address (it reaches this machine)"),
    (_NET("::/128"), "an unspecified address (it reaches this machine)"),
    (_NET("224.0.0.0/4"), "a multicast address"),
    (_NET("ff00::/8"), "a multicast address"),
    (_NET("255.255.255.255/32"), "a broadcast address"),
)
_WILDCARDS = {"", "0.0.0.0", "::", "*"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22, "ssh": 22, "ftp": 21, "s3": 443}
# URL schemes of database servers (``postgres://`` is libpq's spelling of postgresql).
_DB_URL = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


class NetworkDenied(ConveyorError):
    """A connector tried to reach an address the network policy refuses (never transient)."""

    transient = False


def parse_ip(value: str) -> IPAddress | None:
    """``value`` as an IP address (IPv4-mapped IPv6 as IPv4, zone ids dropped), or None."""
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal is itself)."""
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for info in infos:
        ip = parse_ip(str(info[4][0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out


@functools.lru_cache(maxsize=1)
def local_addresses() -> frozenset[IPAddress]:
    """This machine's interface addresses (a connection to one reaches local services)."""
    found: set[IPAddress] = set()
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    ip = parse_ip(addr.address)
                    if ip is not None:
                        found.add(ip)
    except Exception:  # no psutil or no permission: loopback ranges still count
        pass
    return frozenset(found)


def is_local(ip: IPAddress) -> bool:
    """Loopback, or one of this machine's own addresses."""
    return ip.is_loopback or ip in local_addresses()


@dataclass(frozen=True)
class Service:
    """One of the platform's own services: where it listens and what to call it."""

    label: str
    port: int
    addresses: frozenset[IPAddress] = frozenset()
    on_this_machine: bool = False  # reachable at every local address (loopback or a wildcard bind)
    database: str | None = None  # a database server shared with sources: only this database

    def matches(self, ip: IPAddress, port: int, database: str | None) -> bool:
        if port != self.port:
            return False
        if self.database is not None and database != self.database:
            return False
        return ip in self.addresses or (self.on_this_machine and is_local(ip))


def _service(label: str, host: str | None, port: int, database: str | None = None) -> Service:
    """A service at ``host:port``; no host (a Unix socket) or a wildcard means this machine."""
    if host is None or host.startswith("/") or host in _WILDCARDS:
        return Service(label, port, frozenset(), True, database)
    try:
        addresses = frozenset(resolve(host, port))
    except OSError:
        addresses = frozenset()  # not resolvable here: nothing can connect to it by name
    local = any(is_local(ip) for ip in addresses) or host == "localhost"
    return Service(label, port, addresses, local, database)


def _url_service(label: str, url: str | None) -> Service | None:
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    except ValueError:
        return None
    return _service(label, parts.hostname, port)


def _database_service(label: str, url: str | None) -> Service | None:
    """A database server by SQLAlchemy URL (None for SQLite and other file databases)."""
    if not url:
        return None
    target = database_target(url)
    if target is None:
        return None
    host, port, database = target
    return _service(label, host, port, database)


def database_target(url: str) -> tuple[str | None, int, str] | None:
    """(host or None for a Unix socket, port, database) of a server database URL."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return None
    backend = u.get_backend_name()
    if backend not in _DB_PORTS:
        return None
    host = u.host
    query_host = u.query.get("host")
    if not host and isinstance(query_host, str):
        host = query_host
    database = u.database or u.username or getpass.getuser()
    return host, int(u.port or _DB_PORTS[backend]), database


@dataclass(frozen=True)
class Target:
    """Where a config field makes a connector connect."""

    loc: str  # e.g. "source config.base_url"
    shown: str  # what the message shows (never a password)
    host: str | None  # None: a Unix socket on this machine
    port: int
    database: str | None = None


@dataclass(frozen=True)
class NetworkPolicy:
    """The decision for one address; built from settings with ``policy_for``."""

    allow_loopback: bool
    services: tuple[Service, ...] = ()
    allowed: tuple[IPNetwork, ...] = ()
    denied: tuple[IPNetwork, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def reason(self, ip: IPAddress, port: int, database: str | None = None) -> str | None:
        """Why a connection to ``ip:port`` (and ``database``) is refused, or None."""
        for net, why in _ALWAYS_DENIED:
            if ip.version == net.version and ip in net:
                return f"is {why}; connectors cannot reach it"
        for service in self.services:
            if service.matches(ip, port, database):
                return f"is {service.label}; {OWN_SERVICES}"
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if any(ip.version == net.version and ip in net for net in self.denied):
            return "is in CONVEYOR_NETWORK_DENIED_CIDRS; connectors cannot reach it"
        if is_local(ip) and not self.allow_loopback:
            return (
                "is this machine (loopback); connectors reach it only when "
                "CONVEYOR_NETWORK_ALLOW_LOOPBACK is true (off in production)"
            )
        return None

    def check(
        self, host: str | None, port: int, *, database: str | None = None, shown: str = ""
    ) -> list[IPAddress]:
        """Resolve ``host`` and check every address; the addresses, or ``NetworkDenied``.

        ``host`` None (or a path) is a Unix socket: this machine, i.e. loopback."""
        shown = shown or f"{host}:{port}"
        if host is None or host.startswith("/"):
            addresses: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]
        else:
            try:
                addresses = resolve(host, port)
            except OSError as exc:
                raise NetworkDenied(f"{shown}: cannot resolve {host} ({exc})") from None
        for ip in addresses:
            why = self.reason(ip, port, database)
            if why is not None:
                via = (
                    "" if parse_ip(host or "") is not None or host is None else f" ({host} → {ip})"
                )
                raise NetworkDenied(f"{shown}{via} {why}")
        return addresses

    def check_target(self, target: Target) -> list[IPAddress]:
        """Check one config target; the message names the field."""
        return self.check(
            target.host,
            target.port,
            database=target.database,
            shown=f"{target.loc}: {target.shown}",
        )


def _networks(values: Iterable[str], setting: str) -> tuple[IPNetwork, ...]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            from conveyor.errors import ConfigurationError

            raise ConfigurationError(
                f"{setting} holds {value!r}, which is not a CIDR range",
                hint="use ranges like 10.0.0.0/8 or 2001:db8::/32, separated by commas",
            ) from None
    return tuple(out)


def policy_for(settings: Settings) -> NetworkPolicy:
    """The policy ``settings`` describe (cached per distinct settings)."""
    return _policy(
        settings.env,
        settings.network_allow_loopback,
        tuple(settings.network_allowed_cidrs),
        tuple(settings.network_denied_cidrs),
        settings.prefect_api_url or _env("PREFECT_API_URL"),
        settings.prefect_ui_url,
        settings.effective_database_url,
        settings.prefect_database_url,
        tuple(settings.web_address),
    )


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


@functools.lru_cache(maxsize=32)
def _policy(
    env: str,
    allow_loopback: bool | None,
    allowed: tuple[str, ...],
    denied: tuple[str, ...],
    prefect_api_url: str | None,
    prefect_ui_url: str | None,
    database_url: str,
    prefect_database_url: str | None,
    web: tuple[str, ...],
) -> NetworkPolicy:
    services = [
        _url_service("the Prefect API", prefect_api_url),
        _url_service("the Prefect server", prefect_ui_url),
        _database_service("Conveyor's own database", database_url),
        _database_service("Prefect's database", prefect_database_url),
        *(_url_service("Conveyor's web app", address) for address in web),
    ]
    return NetworkPolicy(
        allow_loopback=env != "production" if allow_loopback is None else allow_loopback,
        services=tuple(s for s in services if s is not None),
        allowed=_networks(allowed, "CONVEYOR_NETWORK_ALLOWED_CIDRS"),
        denied=_networks(denied, "CONVEYOR_NETWORK_DENIED_CIDRS"),
    )


# --- what a config connects to ------------------------------------------------------


def targets(model: Any, prefix: str) -> list[Target]:
    """Every network place a validated type config connects to, by field."""
    from conveyor.pipelines.config import DatabaseConnection, connection_url

    out: list[Target] = []
    fields = model.connection_fields() if hasattr(model, "connection_fields") else frozenset()
    if isinstance(model, DatabaseConnection):
        found = database_target(connection_url(model))
        if found is not None:
            host, port, database = found
            loc = "connection_string" if model.connection_string else "host"
            shown = f"{host or 'local socket'}:{port}/{database}"
            out.append(Target(f"{prefix}.{loc}", shown, host, port, database))
    if "host" in fields and not isinstance(model, DatabaseConnection):
        host = getattr(model, "host", None)
        if host:
            port = int(getattr(model, "port", None) or 22)
            out.append(Target(f"{prefix}.host", f"{host}:{port}", host, port))
    for name in sorted(fields - {"host", "port", "connection_string", "database", "drivername"}):
        value = getattr(model, name, None)
        if value is None or "://" not in str(value):
            continue
        parts = urlsplit(str(value))
        if parts.scheme.split("+")[0] in _DB_URL:  # a database URL field (a lake's catalog)
            url = str(value)
            if parts.scheme == "postgres":
                url = "postgresql" + url[len("postgres") :]
            server = database_target(url)
            if server is not None:
                host, port, db = server
                shown = f"{host or 'local socket'}:{port}/{db}"
                out.append(Target(f"{prefix}.{name}", shown, host, port, db))
            continue
        if parts.scheme in ("s3", "file", "gs", "az", "abfs") or not parts.hostname:
            continue  # a bucket name, not an address (its endpoint is a field of its own)
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
        except ValueError:
            continue
        out.append(Target(f"{prefix}.{name}", _without_password(str(value)), parts.hostname, port))
    return out


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=netloc).geturl()


def check_config(model: Any, settings: Settings, *, prefix: str) -> None:
    """Refuse a config whose connection fields reach a denied address (``NetworkDenied``)."""
    policy = policy_for(settings)
    for target in targets(model, prefix):
        policy.check_target(target)


def validate_config(
    model: Any, settings: Settings, *, prefix: str = "config", resolve_names: bool = False
) -> None:
    """``check_config`` for saving: every denied field as a ``ValidationFailed`` problem.

    Without ``resolve_names`` only addresses, Unix sockets and ``localhost`` are judged (a
    save never waits on DNS); a name that does not resolve is never refused here (it may
    on the worker). Runs and checks resolve and check again, and so does every connection."""
    policy = policy_for(settings)
    problems = []
    for target in targets(model, prefix):
        if not resolve_names and not _judged_without_dns(target.host):
            continue
        try:
            policy.check_target(target)
        except NetworkDenied as exc:
            if "cannot resolve" in exc.reason:
                continue
            loc, _, reason = exc.reason.partition(": ")
            problems.append(FieldProblem(loc, reason))
    if problems:
        raise ValidationFailed(problems)


def _judged_without_dns(host: str | None) -> bool:
    if host is None or host.startswith("/") or parse_ip(host) is not None:
        return True
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")
