"""Every registered type (built-in, and any installed plugin) keeps the type contract:
declared fields exist in its config model, capabilities agree with what it implements,
build/check/discover take the one (config, context) signature, failure classes say
their class (transient, config or data)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from conveyor.pipelines import registry
from conveyor.pipelines.config import CopyOptions, TypeConfig
from conveyor.pipelines.contract import ConveyorType, DestinationType, SourceType
from conveyor.pipelines.failures import TerminalFailure, TransientFailure, TypeFailure

_LOCATION_NAMES = {"host", "hostaddr", "port", "bucket", "connection_string", "endpoint"}


def assert_contract(t: ConveyorType) -> None:
    """The checks, callable for a plugin's type too (tests/integration/test_type_plugin.py)."""
    where = f"{t.kind} type {t.name!r}"
    assert t.name and t.title and t.kind in ("source", "destination"), where
    assert isinstance(t, SourceType if t.kind == "source" else DestinationType), where
    assert issubclass(t.config_model, TypeConfig), where
    fields = set(t.config_model.model_fields)
    for declared in ("connection_fields", "path_fields", "secret_fields", "copy_fields"):
        assert getattr(t, declared) <= fields, (where, declared, getattr(t, declared) - fields)
    assert not (t.copy_fields & t.connection_fields), where  # an override never moves it
    # A field that names a host, URL, bucket or connection string says where the type
    # connects: it must be declared, or a changed one would carry the stored secrets along.
    where_to = {f for f in fields if f.endswith("url") or f in _LOCATION_NAMES}
    assert where_to <= t.connection_fields, (where, where_to - t.connection_fields)
    assert not (t.secret_fields & t.copy_fields), where
    for f in t.copy_form:
        assert f.label, (where, f.name)
        assert bool(f.choice) == bool(f.choice_label), (where, f.name)
    _assert_capabilities(t, where)
    for method in ("build", "check", "discover"):
        params = list(inspect.signature(getattr(t, method)).parameters)
        assert params == ["config", "context"], (where, method, params)
    assert type(t).build is not ConveyorType.build, f"{where} does not build"
    assert type(t).check is not ConveyorType.check, f"{where} does not check"
    for failure in t.failures:
        assert issubclass(failure, (TerminalFailure, TransientFailure)), (where, failure)
        assert failure.transient is issubclass(failure, TransientFailure), (where, failure)
        assert failure.failure_class in ("transient", "config", "data"), (where, failure)
        assert failure.transient is (failure.failure_class == "transient"), (where, failure)
        assert failure.recognise(ValueError("nothing in particular")) is None, (where, failure)
    assert registry.get_type(t.kind, t.name) is t, where


def _assert_capabilities(t: ConveyorType, where: str) -> None:
    caps = t.capabilities
    if isinstance(t, SourceType):
        assert not caps.lands_in, where
        if caps.merge or caps.incremental:  # keys and cursors are the copy options
            assert issubclass(t.config_model, CopyOptions), where
        if caps.file_transfer:
            assert type(t).wants_transfer is not ConveyorType.wants_transfer, where
        return
    assert isinstance(t, DestinationType)
    assert caps.lands_in in ("tables", "files", "endpoint"), where
    overrides = type(t).__dict__
    assert caps.file_transfer is ("open_sink" in overrides), where
    assert caps.direct_copy is ("direct_writer" in overrides), where
    if caps.direct_copy:
        writer = t.direct_writer()
        assert callable(writer.available) and callable(writer.run), where
    # Reset with drop_tables: a destination that lands tables or files drops the connector's
    # own; an endpoint (REST) cannot, and says so through drops_tables (resets refuse).
    assert t.drops_tables is (caps.lands_in in ("tables", "files")), where
    assert t.drops_tables is ("drop_tables" in overrides), where


ALL = [(t.kind, t.name) for kind in ("source", "destination") for t in registry.list_types(kind)]


@pytest.mark.parametrize(("kind", "name"), ALL, ids=[f"{k}-{n}" for k, n in ALL])
def test_every_registered_type_keeps_the_contract(kind: Any, name: str) -> None:
    assert_contract(registry.get_type(kind, name))


def test_failure_classes_put_library_errors_in_words() -> None:
    from conveyor.pipelines.explain import explain

    refused = explain(RuntimeError('password authentication failed for user "reader"'))
    assert refused.message == "The database refused the user name or password for user 'reader'."
    assert not refused.transient and refused.failure_class == "config"
    locked = explain(RuntimeError("IO Error: Could not set lock on file x.duckdb"))
    assert locked.transient and "in use by another process" in locked.message
    assert locked.failure_class == "transient"
    classes = registry.failure_classes()
    assert len(classes) == len(set(classes))
    assert all(issubclass(c, TypeFailure) for c in classes)


def test_a_broken_plugin_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    broken = md.EntryPoint("broken", "no_such_module_here:Type", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda group: [broken])
    errors = registry.load_plugins(force=True)
    try:
        assert list(errors) == ["'broken' (no_such_module_here:Type)"]
        assert "ModuleNotFoundError" in errors["'broken' (no_such_module_here:Type)"]
        with pytest.raises(Exception, match=r"plugin .broken. .* failed to load"):
            registry.get_type("source", "json_api_nope")
    finally:
        registry._PLUGIN_ERRORS.clear()


def test_a_plugin_may_not_replace_a_built_in_type() -> None:
    class Impostor(SourceType):
        name = "sql_database"
        title = "not the real one"
        config_model = TypeConfig

    with pytest.raises(registry.PluginError, match="already registered"):
        registry.register(Impostor, origin="plugin 'impostor'")
    assert type(registry.get_type("source", "sql_database")).__name__ == "SqlDatabaseSource"


def test_postgres_landing_names_schema_tables_and_a_query_without_the_password(
    tmp_path: Any,
) -> None:
    from conveyor.pipelines.contract import TypeContext
    from conveyor.pipelines.registry import get_type, validate_config
    from conveyor.settings import Settings

    info = get_type("destination", "postgres")
    url = "postgresql://loader:s3cret@db.example.com:6543/warehouse"
    config = validate_config("destination", "postgres", {"connection_string": url})
    context = TypeContext(settings=Settings(home=tmp_path), connector_id=7)
    lands = info.landing(config, context, ["orders"])  # type: ignore[attr-defined]
    assert lands.where == "PostgreSQL db.example.com:6543/warehouse, schema connector_7"
    assert lands.places == ('"connector_7"."orders"',)
    assert lands.query == (
        'psql "host=db.example.com port=6543 dbname=warehouse user=loader" '
        '-c \'SELECT * FROM "connector_7"."orders" LIMIT 10\''
    )
    assert "s3cret" not in repr(lands)
    for name in ("filesystem", "sftp", "rest_api", "duckdb"):
        assert "landing" in type(get_type("destination", name)).__dict__, name
