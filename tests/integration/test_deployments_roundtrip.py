"""Property: for any valid set of connectors, export → apply into an empty database →
export gives the same files, byte for byte — from SQLite into SQLite, and into PostgreSQL
(another environment: its own database, its own secret key)."""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conveyor.db.base import Base
from conveyor.db.session import get_engine, session_scope
from conveyor.deployments_io import apply_directory, plan_directory, render_export
from conveyor.deployments_io.format import ENV_REF
from conveyor.domain.models import ConnectorCreate, EndpointCreate
from conveyor.pipelines.registry import get_type
from conveyor.secrets import SecretBox
from conveyor.services import catalog
from conveyor.services import connectors as svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from tests.fixtures.db import create_pg_database, drop_pg_database

WORD = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
NAME = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9 _.\-]{0,12}[A-Za-z0-9])?", fullmatch=True)
SECRET = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)
# Strings some YAML reader would take for a number, bool, null or date if left unquoted.
TRICKY = st.sampled_from(
    ["0E0", "0o7", "0x1F", "yes", "on", "~", "null", "2024-01-01", "1:30", ".inf", "1_000", "+1"]
)
TEXT = (
    TRICKY
    | st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), max_size=40
    )
    | st.just("two\nlines")
)
CRON = st.sampled_from([None, "0 */6 * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 1 * *"])
TZ = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
TAG = st.sampled_from(["finance", "eu", "nightly", "team:data", "v1.2"])


def sources() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    opt = st.none() | SECRET
    return st.one_of(
        st.builds(
            lambda w, fmt: (
                "filesystem",
                {"path": f"/data/{w}", "file_pattern": "*.csv", "format": fmt},
            ),
            WORD,
            st.sampled_from([None, "csv", "jsonl"]),
        ),
        st.builds(
            lambda host, db, port, pw: (
                "sql_database",
                {"host": f"{host}.example.com", "database": db, "port": port, "password": pw},
            ),
            WORD,
            WORD,
            st.none() | st.integers(1, 65535),
            opt,
        ),
        st.builds(
            lambda token: (
                "rest_api",
                {
                    "base_url": "https://api.example.com/v1",
                    "auth_type": "bearer_token",
                    "token": token,
                },
            ),
            SECRET,
        ),
    )


def destinations() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.one_of(
        st.builds(lambda ds: ("duckdb", {"dataset_name": ds}), st.none() | WORD),
        st.builds(
            lambda host, pw: ("postgres", {"host": host, "database": "dw", "password": pw}),
            WORD,
            st.none() | SECRET,
        ),
        st.builds(lambda w: ("filesystem", {"path": f"/data/out/{w}", "format": "parquet"}), WORD),
    )


def override_for(source_type: str) -> st.SearchStrategy[dict[str, Any]]:
    common = st.sampled_from(
        [{}, {"write_disposition": "merge", "primary_key": "id"}, {"cursor_column": "updated_at"}]
    )
    specific = {
        "filesystem": st.builds(lambda w: {"table_name": w}, WORD),
        "sql_database": st.one_of(
            st.builds(lambda ts: {"tables": ts}, st.lists(WORD, min_size=1, max_size=3)),
            st.builds(lambda pw: {"password": pw}, SECRET),
        ),
        "rest_api": st.just({"resources": ["orders", "customers"]}),
    }[source_type]
    return st.builds(lambda a, b: {**a, **b}, common, st.just({}) | specific)


def override_for_destination(destination_type: str) -> st.SearchStrategy[dict[str, Any]]:
    key = "schema" if destination_type == "postgres" else "dataset_name"
    return st.sampled_from([{}, {key: "custom"}])


@st.composite
def connector_sets(draw: st.DrawFn) -> dict[str, Any]:
    src_names = draw(st.lists(NAME, min_size=1, max_size=3, unique_by=str.lower))
    dst_names = draw(st.lists(NAME, min_size=1, max_size=2, unique_by=str.lower))
    srcs = {n: draw(sources()) for n in src_names}
    dsts = {n: draw(destinations()) for n in dst_names}
    names = draw(st.lists(NAME, min_size=1, max_size=5, unique_by=lambda n: n.lower()))
    ids = draw(st.lists(st.integers(1, 300), min_size=len(names), max_size=len(names), unique=True))
    deployment_names = itertools.count()
    connectors = []
    for name, cid in zip(names, ids, strict=True):
        src = draw(st.sampled_from(src_names))
        dst = draw(st.sampled_from(dst_names))
        connectors.append(
            {
                "id": cid,
                "name": name,
                "source": src,
                "destination": dst,
                "source_config_override": draw(override_for(srcs[src][0])),
                "destination_config_override": draw(override_for_destination(dsts[dst][0])),
                "description": draw(st.none() | TEXT),
                "schedule": draw(CRON),
                "timezone": draw(TZ),
                "is_active": draw(st.booleans()),
                "tags": draw(st.lists(TAG, unique=True, max_size=3)),
                "work_pool_name": draw(st.sampled_from([None, "default", "k8s"])),
                "work_queue_name": draw(st.sampled_from([None, "fast"])),
                "retry_policy": draw(
                    st.sampled_from([None, {"max_attempts": 1, "backoff_seconds": [0]}])
                ),
                "deployment_name": draw(
                    st.sampled_from([None, f"deploy-{next(deployment_names)}-x"])
                ),
            }
        )
    return {"sources": srcs, "destinations": dsts, "connectors": connectors}


def _settings(tmp: Path, url: str) -> Settings:
    home = tmp / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    return Settings(home=home, database_url=url, secret_key=Fernet.generate_key().decode())


def _fill(cfg: Settings, data: dict[str, Any]) -> None:
    box = SecretBox(cfg.secret_keys())
    with session_scope(cfg.effective_database_url) as s:
        ids: dict[tuple[str, str], int] = {}
        for kind, pool in (("source", data["sources"]), ("destination", data["destinations"])):
            for name, (type_name, config) in pool.items():
                obj = catalog.create(
                    kind,  # type: ignore[arg-type]
                    EndpointCreate(name=name, type=type_name, config=config),
                    session=s,
                    actor=SYSTEM,
                    box=box,
                )
                ids[(kind, name)] = obj.id
        for c in data["connectors"]:
            fields = {
                k: v
                for k, v in c.items()
                if k not in ("id", "source", "destination", "deployment_name")
            }
            svc.create(
                ConnectorCreate(
                    source_id=ids[("source", c["source"])],
                    destination_id=ids[("destination", c["destination"])],
                    **fields,
                ),
                session=s,
                actor=SYSTEM,
                box=box,
                connector_id=c["id"],
                deployment_name=c["deployment_name"],
            )


def _env_for(files: dict[str, str], cfg: Settings) -> dict[str, str]:
    """The environment another installation would set: each ${VAR} → the stored secret."""
    box = SecretBox(cfg.secret_keys())
    env: dict[str, str] = {}
    with session_scope(cfg.effective_database_url) as s:
        for text_ in files.values():
            block = yaml.safe_load(text_)["connector"]
            connector = svc.get_by_name(block["name"], session=s)
            assert connector is not None
            for kind in ("source", "destination"):
                ep = catalog.get_by_name(kind, block[kind]["name"], session=s)  # type: ignore[arg-type]
                assert ep is not None
                secrets = get_type(kind, ep.type).secret_fields  # type: ignore[arg-type]
                stored = [
                    (block[kind]["config"], box.decrypt_config(ep.config, secrets)),
                    (
                        block.get(f"{kind}_config_override", {}),
                        box.decrypt_config(getattr(connector, f"{kind}_config_override"), secrets),
                    ),
                ]
                for written, plain in stored:
                    for key, value in written.items():
                        ref = ENV_REF.match(value) if isinstance(value, str) else None
                        if ref:
                            env[ref.group(1)] = plain[key]
    return env


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The other environment's database, emptied before each example."""
    from tests.fixtures.db import POSTGRES_URL, SKIP_PG_REASON

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG_REASON)
    url = create_pg_database(migrated=True)
    yield url
    get_engine(url).dispose()
    drop_pg_database(url)


def _empty(url: str) -> None:
    engine = get_engine(url)
    if engine.dialect.name == "sqlite":
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        return
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=connector_sets())
def test_export_apply_export_is_a_fixed_point(
    data: dict[str, Any], tmp_path: Path, target_url: str
) -> None:
    work = tmp_path / uuid.uuid4().hex[:8]
    work.mkdir()
    source_url = f"sqlite:///{work / 'source.db'}"
    Base.metadata.create_all(get_engine(source_url))
    _empty(target_url)
    source, target = _settings(work, source_url), _settings(work, target_url)
    _fill(source, data)

    out = work / "deployments"
    out.mkdir()
    with session_scope(source_url) as s:
        first, _ = render_export(s, source, base_dir=out)
    for name, body in first.items():
        (out / name).write_text(body)
    env = _env_for(first, source)

    target_box = SecretBox(target.secret_keys())
    with session_scope(target_url) as s:
        result = apply_directory(
            out, session=s, box=target_box, actor=SYSTEM, settings=target, env=env
        )
    assert sorted(result.created) == sorted(c["name"] for c in data["connectors"])
    # Ids survive into the empty database.
    assert result.ids == {c["name"]: c["id"] for c in data["connectors"]}

    with session_scope(target_url) as s:
        second, _ = render_export(s, target, base_dir=out)
        assert second == first
        assert not plan_directory(
            out, session=s, box=target_box, settings=target, env=env
        ).has_changes
    # Secrets arrived intact (under the other environment's key).
    assert _env_for(second, target) == env
    shutil.rmtree(work)
