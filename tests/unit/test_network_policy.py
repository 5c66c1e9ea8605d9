"""The network policy's decisions (pipelines/network.py) and netguard's pure parts.

No server is contacted: addresses are IP literals, ``localhost`` resolves locally.
"""

from __future__ import annotations

import ipaddress
import sys

import pytest

from conveyor.errors import ValidationFailed
from conveyor.pipelines import netguard
from conveyor.pipelines.network import NetworkDenied, policy_for, targets, validate_config
from conveyor.pipelines.registry import validate_config as validate_type
from conveyor.settings import Settings
from conveyor.supervisor.config import web_addresses

PREFECT = "http://127.0.0.1:4299/api"
OWN_DB = "postgresql+psycopg://conveyor@127.0.0.1:5432/conveyor"


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "home": "/tmp/conveyor-network-unit",
        "prefect_api_url": PREFECT,
        "database_url": OWN_DB,
        "secret_key": "x" * 43 + "=",
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def reason(s: Settings, ip: str, port: int, database: str | None = None) -> str | None:
    return policy_for(s).reason(ipaddress.ip_address(ip), port, database)


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_metadata_link_local_unspecified_and_multicast_always_denied(ip: str) -> None:
    allow_all = settings(network_allowed_cidrs=["0.0.0.0/0", "::/0"])
    for s in (settings(), allow_all):
        assert reason(s, ip, 80) is not None


def test_ipv4_mapped_metadata_is_refused_as_the_ipv4_address() -> None:
    with pytest.raises(NetworkDenied, match="cloud metadata"):
        policy_for(settings()).check("::ffff:169.254.169.254", 80)


def test_prefect_api_refused_in_local_mode_by_address_and_by_name() -> None:
    s = settings()
    assert "is the Prefect API; connectors cannot reach Conveyor's own services" in (
        reason(s, "127.0.0.1", 4299) or ""
    )
    # The same service through another local address or a name that resolves there.
    with pytest.raises(NetworkDenied, match=r"localhost → .* is the Prefect API"):
        policy_for(s).check("localhost", 4299)
    assert reason(s, "127.0.0.1", 4300) is None  # another loopback port: local mode allows


def test_loopback_on_in_local_mode_off_in_production_and_settable() -> None:
    assert reason(settings(), "127.0.0.1", 5432, "other") is None
    assert reason(settings(), "::1", 8080) is None
    prod = settings(env="production")
    assert "loopback" in (reason(prod, "127.0.0.1", 5432, "other") or "")
    assert "loopback" in (reason(prod, "127.0.0.2", 80) or "")
    with pytest.raises(NetworkDenied, match="loopback"):
        policy_for(prod).check("localhost", 5432)
    assert reason(settings(env="production", network_allow_loopback=True), "127.0.0.1", 1) is None
    assert reason(settings(network_allow_loopback=False), "127.0.0.1", 1) is not None


def test_own_database_refused_only_itself_on_a_shared_server() -> None:
    s = settings()
    assert "Conveyor's own database" in (reason(s, "127.0.0.1", 5432, "conveyor") or "")
    assert reason(s, "127.0.0.1", 5432, "sources") is None
    # A Unix socket reaches the same local server.
    with pytest.raises(NetworkDenied, match="Conveyor's own database"):
        policy_for(s).check(None, 5432, database="conveyor")
    # Prefect's database, when it is a server database, likewise.
    s2 = settings(prefect_database_url="postgresql+asyncpg://p@127.0.0.1:5432/prefect")
    assert "Prefect's database" in (reason(s2, "127.0.0.1", 5432, "prefect") or "")
    assert reason(s2, "127.0.0.1", 5432, "sources") is None


def test_web_app_address_and_wildcard_bind() -> None:
    s = settings(web_address=["0.0.0.0:8000"])
    assert "web app" in (reason(s, "127.0.0.1", 8000) or "")
    assert reason(s, "127.0.0.1", 8001) is None
    assert web_addresses(None, "0.0.0.0", 8000) == "0.0.0.0:8000"
    assert web_addresses("web:80", "::", 8000) == "web:80,[::]:8000"
    assert web_addresses("web:80,[::]:8000", "::", 8000) == "web:80,[::]:8000"


def test_admin_cidrs_allow_and_deny_but_never_lift_own_services_or_metadata() -> None:
    s = settings(
        env="production",
        network_allowed_cidrs=["127.0.0.0/8", "169.254.0.0/16"],
        network_denied_cidrs=["10.0.0.0/8"],
    )
    assert reason(s, "127.0.0.1", 5432, "sources") is None
    assert reason(s, "127.0.0.1", 4299) is not None
    assert reason(s, "169.254.169.254", 80) is not None
    assert "CONVEYOR_NETWORK_DENIED_CIDRS" in (reason(s, "10.1.2.3", 443) or "")
    assert reason(s, "192.0.2.10", 443) is None


def test_targets_name_the_field_and_hide_passwords() -> None:
    rest = validate_type("source", "rest_api", {"base_url": "http://127.0.0.1:4299/api"})
    assert [(t.loc, t.host, t.port) for t in targets(rest, "source config")] == [
        ("source config.base_url", "127.0.0.1", 4299)
    ]
    sql = validate_type(
        "source", "sql_database", {"connection_string": "postgresql://u:hunter2@h:6543/d"}
    )
    (t,) = targets(sql, "config")
    assert (t.loc, t.host, t.port, t.database) == ("config.connection_string", "h", 6543, "d")
    assert "hunter2" not in t.shown
    sftp = validate_type(
        "destination", "sftp", {"host": "sftp.example", "username": "u", "password": "p"}
    )
    assert [(t.loc, t.port) for t in targets(sftp, "config")] == [("config.host", 22)]


def test_save_time_validation_names_the_field() -> None:
    rest = validate_type("source", "rest_api", {"base_url": "http://127.0.0.1:4299/api"})
    with pytest.raises(ValidationFailed) as caught:
        validate_config(rest, settings())
    assert caught.value.problems[0].loc == "config.base_url"
    assert "is the Prefect API" in caught.value.problems[0].reason
    ok = validate_type("source", "rest_api", {"base_url": "http://127.0.0.1:4300/api"})
    validate_config(ok, settings())


def test_pin_url_pins_hostaddr_and_checks_a_given_hostaddr() -> None:
    policy = policy_for(settings())
    pinned = netguard.pin_url("postgresql://u@localhost:5432/sources", policy)
    assert "hostaddr=127.0.0.1" in pinned or "hostaddr=%3A%3A1" in pinned
    # hostaddr is where libpq connects, whatever host says.
    with pytest.raises(NetworkDenied, match="cloud metadata"):
        netguard.pin_url("postgresql://u@db.example:5432/x?hostaddr=169.254.169.254", policy)
    with pytest.raises(NetworkDenied, match="Conveyor's own database"):
        netguard.pin_conninfo("host=/var/run/postgresql port=5432 dbname=conveyor", policy)
    with pytest.raises(NetworkDenied, match="several hosts"):
        netguard.pin_conninfo("host=a,b dbname=x", policy)


def test_owner_is_decided_by_the_innermost_known_frame() -> None:
    frame = sys._getframe()
    assert netguard.owner(frame) is None  # test code: neither
    namespace: dict[str, object] = {"__name__": "dlt.sources.fake", "sys": sys}
    exec("def where():\n    return sys._getframe()", namespace)
    inner = namespace["where"]()  # type: ignore[operator]
    assert netguard.owner(inner) == "connector"
    namespace2: dict[str, object] = {"__name__": "prefect.client.fake", "f": namespace["where"]}
    exec("def call():\n    return f()", namespace2)
    assert netguard.owner(namespace2["call"]()) == "connector"  # type: ignore[operator]


def test_saving_refuses_addresses_without_waiting_on_dns() -> None:
    with pytest.raises(ValidationFailed, match=r"config\.host: 169\.254\.169\.254:22 is a cloud"):
        validate_type(
            "destination", "sftp", {"host": "169.254.169.254", "username": "u", "password": "p"}
        )
    # An unresolvable name is left to the run (it may resolve on the worker).
    validate_type("source", "rest_api", {"base_url": "http://api.invalid/"})
