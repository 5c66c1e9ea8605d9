"""Path confinement, attacked as an editor would: Conveyor's home, database and key, /etc,
symlinks planted in allowed folders, S3 keys with '..' — refused at save where possible,
always at run time, and nothing read, copied or overwritten (real files, real runs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ValidationFailed
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.pipelines.paths import database_file
from conveyor.settings import Settings, get_settings
from tests.fixtures.pipelines import ConnectorFactory, last_run


def _settings(home: Path, allowed: list[Path]) -> Settings:
    """A local install as shipped: database and key file in home, no extra root unless
    listed (constructor values win over the test environment's)."""
    return Settings(home=home, allowed_paths=allowed, database_url=None, secret_key=None)


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectorFactory]:
    """A Conveyor home with its SQLite database and key file, and the process settings
    (what save-time checks read) the same as the run's."""
    from conveyor.db.migrations import upgrade

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("CONVEYOR_HOME", str(home))
    monkeypatch.setenv("CONVEYOR_ALLOWED_PATHS", "")
    monkeypatch.delenv("CONVEYOR_DATABASE_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    settings = _settings(home, [])
    upgrade(settings.effective_database_url)
    settings.secret_keys()  # writes home/secret.key, as a first start does
    assert (home / "secret.key").exists() and (home / "conveyor.db").exists()
    yield ConnectorFactory(settings)
    get_settings.cache_clear()


def _stored_past_validation(factory: ConnectorFactory, cid: int, config: dict[str, Any]) -> None:
    """Write the source config straight into the database, as an old row or a bug would."""
    factory.update_source(cid, config)


def _refused_at_run(factory: ConnectorFactory, cid: int, field: str) -> str:
    with pytest.raises(RunFailed) as exc:
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert run.status == "failed"
    assert field in str(exc.value), str(exc.value)
    return str(exc.value)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_home_as_a_transfer_source_is_refused_and_nothing_copied(
    install: ConnectorFactory,
) -> None:
    s = install.settings
    out = s.data_dir / "out"
    with pytest.raises(ValidationFailed, match=r"config\.path: .*home is outside the allowed"):
        install.endpoint("source", "filesystem", {"path": str(s.home), "mode": "transfer"})
    # Stored past the validator: the run refuses it, and copies nothing.
    inbox = s.data_dir / "in"
    inbox.mkdir()
    cid = install(
        ("filesystem", {"path": str(inbox), "file_pattern": "**/*", "mode": "transfer"}),
        ("filesystem", {"path": str(out)}),
    )
    _stored_past_validation(
        install, cid, {"path": str(s.home), "file_pattern": "**/*", "mode": "transfer"}
    )
    message = _refused_at_run(install, cid, "source.path")
    assert f"{s.home} is outside the allowed roots" in message
    assert _files(out) == []


def test_conveyor_database_as_a_sqlite_source_is_refused(install: ConnectorFactory) -> None:
    s = install.settings
    db = s.home / "conveyor.db"
    for url in (f"sqlite:///{db}", f"sqlite:///file:{db}?mode=ro&uri=true", f"duckdb:///{db}"):
        with pytest.raises(ValidationFailed, match=r"config\.connection_string: .*"):
            install.endpoint("source", "sql_database", {"connection_string": url})
    # A database of one's own in an allowed root is fine; pointed at Conveyor's afterwards
    # (past the validator), the run refuses before connecting and loads nothing.
    import sqlite3

    mine = s.data_dir / "mine.db"
    with sqlite3.connect(mine) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        con.execute("INSERT INTO t VALUES (1)")
    cid = install(("sql_database", {"connection_string": f"sqlite:///{mine}"}), ("duckdb", {}))
    assert run_connector(cid, settings=s)["rows_loaded"] == 1
    _stored_past_validation(install, cid, {"connection_string": f"sqlite:///{db}"})
    message = _refused_at_run(install, cid, "source.connection_string")
    assert "conveyor.db is outside the allowed roots" in message


def test_database_file_of_sqlite_and_duckdb_urls() -> None:
    assert database_file("sqlite:////srv/a.db") == Path("/srv/a.db")
    assert database_file("sqlite+pysqlite:///file:/srv/a.db?mode=ro&uri=true") == Path("/srv/a.db")
    assert database_file("duckdb:////srv/b.duckdb") == Path("/srv/b.duckdb")
    assert database_file("sqlite://") is None
    assert database_file("sqlite:///:memory:") is None
    assert database_file("postgresql://u@h/db") is None


def test_etc_passwd_as_csv_is_refused(install: ConnectorFactory) -> None:
    with pytest.raises(ValidationFailed, match=r"config\.path: /etc is outside the allowed roots"):
        install.endpoint(
            "source", "filesystem", {"path": "/etc", "file_pattern": "passwd", "format": "csv"}
        )
    inbox = install.settings.data_dir / "in"
    inbox.mkdir()
    for pattern in ("../../../../etc/passwd", "/etc/passwd", "sub/../../x.csv"):
        with pytest.raises(ValidationFailed, match=r"config\.file_pattern: must be relative"):
            install.endpoint("source", "filesystem", {"path": str(inbox), "file_pattern": pattern})


def test_a_symlink_to_the_key_inside_an_allowed_folder_is_refused(
    install: ConnectorFactory,
) -> None:
    s = install.settings
    key = s.home / "secret.key"
    inbox = s.data_dir / "in"
    inbox.mkdir()
    (inbox / "ok.csv").write_text("id\n1\n")
    (inbox / "key.csv").symlink_to(key)
    # Parsed into DuckDB: the run fails naming the file, and loads nothing.
    cid = install(("filesystem", {"path": str(inbox), "file_pattern": "*.csv"}), ("duckdb", {}))
    message = _refused_at_run(install, cid, "path")
    assert "outside the folder" in message
    # Transferred as they are: the same, and the key is not copied.
    out = s.data_dir / "out"
    cid = install(
        ("filesystem", {"path": str(inbox), "file_pattern": "*", "mode": "transfer"}),
        ("filesystem", {"path": str(out)}),
    )
    _refused_at_run(install, cid, "path")
    assert not any(key.read_bytes() in p.read_bytes() for p in out.rglob("*") if p.is_file())
    # A folder that is a symlink into the home is judged where it leads: refused on save.
    (s.data_dir / "door").symlink_to(s.home)
    with pytest.raises(ValidationFailed, match="resolves to"):
        install.endpoint("source", "filesystem", {"path": str(s.data_dir / "door")})


def test_a_transfer_never_writes_outside_the_destination_folder(
    install: ConnectorFactory, s3_server: Any
) -> None:
    s = install.settings
    key = s.home / "secret.key"
    before = key.read_bytes()
    bucket = s3_server.new_bucket()
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="drop/good.csv", Body=b"id\n1\n")
    s3.put_object(Bucket=bucket, Key="drop/../secret.key", Body=b"attacker's key\n")
    # The data root is a legitimate destination; '../secret.key' from it is the key file.
    cid = install(
        (
            "filesystem",
            {
                "bucket": bucket,
                "path": "drop",
                "file_pattern": "**/*",
                "mode": "transfer",
                **s3_server.config(),
            },
        ),
        ("filesystem", {"path": str(s.data_dir)}),
    )
    message = _refused_at_run(install, cid, "outside the destination folder")
    assert "../secret.key" in message
    assert key.read_bytes() == before
    assert (s.data_dir / "good.csv").read_bytes() == b"id\n1\n"  # the rest went through
    # A symlink planted in the destination folder does not redirect a write either.
    inbox = s.data_dir / "in"
    (inbox / "door").mkdir(parents=True)
    (inbox / "door" / "secret.key").write_text("attacker's key\n")
    out = s.data_dir / "out"
    out.mkdir()
    (out / "door").symlink_to(s.home)
    cid = install(
        ("filesystem", {"path": str(inbox), "file_pattern": "**/*", "mode": "transfer"}),
        ("filesystem", {"path": str(out)}),
    )
    message = _refused_at_run(install, cid, "destination.path")
    assert key.read_bytes() == before


def test_a_duckdb_destination_in_the_home_is_refused(install: ConnectorFactory) -> None:
    s = install.settings
    for path in (str(s.home / "evil.duckdb"), "../evil.duckdb", str(s.home / "conveyor.db")):
        with pytest.raises(ValidationFailed, match=r"config\.path: "):
            install.endpoint("destination", "duckdb", {"path": path})
    assert not (s.home / "evil.duckdb").exists()
    # The default file (CONVEYOR_HOME/data/conveyor.duckdb) stays allowed.
    inbox = s.data_dir / "in"
    inbox.mkdir()
    (inbox / "a.csv").write_text("id\n1\n2\n")
    cid = install(("filesystem", {"path": str(inbox), "file_pattern": "*.csv"}), ("duckdb", {}))
    assert run_connector(cid, settings=s)["rows_loaded"] == 2
    assert (s.data_dir / "conveyor.duckdb").exists()


def test_an_admin_listed_root_works_but_never_opens_the_home(
    install: ConnectorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "shared"
    extra.mkdir()
    (extra / "a.csv").write_text("id\n1\n2\n3\n")
    with pytest.raises(ValidationFailed, match="outside the allowed roots"):
        install.endpoint("source", "filesystem", {"path": str(extra)})
    # The admin lists the shared folder, and (carelessly) the folder holding the home.
    monkeypatch.setenv("CONVEYOR_ALLOWED_PATHS", f"{extra},{tmp_path}")
    get_settings.cache_clear()
    factory = ConnectorFactory(_settings(install.settings.home, [extra, tmp_path]))
    cid = factory(("filesystem", {"path": str(extra), "file_pattern": "*.csv"}), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 3
    home = factory.settings.home
    for path in (str(home), str(home / "secret.key"), str(tmp_path)):
        with pytest.raises(ValidationFailed, match="never reach"):
            factory.endpoint("source", "filesystem", {"path": path})


def test_the_api_refuses_a_path_outside_the_roots_with_a_422(editor: Any) -> None:
    r = editor.post(
        "/api/v1/sources",
        json={"name": "passwd", "type": "filesystem", "config": {"path": "/etc"}},
    )
    assert r.status_code == 422, r.text
    assert "config.path: /etc is outside the allowed roots" in r.text
    assert editor.get("/api/v1/sources").json() == [] or all(
        s["name"] != "passwd" for s in editor.get("/api/v1/sources").json()
    )


def test_relative_paths_resolve_like_the_runtime(install: ConnectorFactory) -> None:
    """A relative filesystem path is judged against the working directory, as it is used."""
    cwd = os.getcwd()
    os.chdir(install.settings.home)
    try:
        with pytest.raises(ValidationFailed, match=r"config\.path: \. \(resolves to"):
            install.endpoint("source", "filesystem", {"path": "."})
    finally:
        os.chdir(cwd)
