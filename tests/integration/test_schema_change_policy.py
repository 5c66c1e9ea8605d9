"""A connector's schema change policy, with real runs: a PostgreSQL source table gains a
column between two runs into DuckDB. propagate adds it, ignore_new_columns loads the rows
without it, pause loads nothing, fails the run as ``data`` and pauses the connector, saying
why (audit log, connector page)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from conveyor.db.models import AuditEntry, Connector
from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorPatch
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.services import connectors
from conveyor.services.authz import SYSTEM
from tests.fixtures.pipelines import duckdb_rows, last_run, pg_exec

SOURCE = """
CREATE TABLE orders (id integer PRIMARY KEY, amount numeric(10, 2));
INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 20) g;
"""


def _columns(factory: Any, cid: int) -> list[str]:
    return [
        r[0]
        for r in duckdb_rows(
            factory.settings,
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = "
            f"'connector_{cid}' AND table_name = 'orders' AND column_name NOT LIKE '\\_dlt%' "
            "ESCAPE '\\' ORDER BY column_index",
        )
    ]


def _connector(factory: Any, pg_database: Any, policy: str) -> tuple[int, str]:
    url = pg_database()
    pg_exec(url, SOURCE)
    cid = factory(
        ("sql_database", {"connection_string": url}),
        ("duckdb", {}),
        source_override={"tables": ["orders"], "write_disposition": "append"},
    )
    with session_scope(factory.settings.effective_database_url) as s:
        connectors.update(
            cid, ConnectorPatch(schema_changes=policy), session=s, actor=SYSTEM, box=factory.box
        )
    run_connector(cid, settings=factory.settings)
    pg_exec(url, "ALTER TABLE orders ADD COLUMN discount numeric(5, 2) DEFAULT 0.5")
    return cid, url


@pytest.mark.parametrize("policy", ["propagate", "ignore_new_columns"])
def test_new_column_added_or_left_out(factory: Any, pg_database: Any, policy: str) -> None:
    cid, _ = _connector(factory, pg_database, policy)
    assert "discount" not in _columns(factory, cid)
    run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded"
    count = duckdb_rows(factory.settings, f"SELECT count(*) FROM connector_{cid}.orders")
    assert count == [(40,)]
    if policy == "propagate":
        assert "discount" in _columns(factory, cid)
        assert {"table": "orders", "columns": ["discount"]}.items() <= run.schema_changes[0].items()
    else:
        assert "discount" not in _columns(factory, cid)
        assert run.schema_changes == []


def test_pause_fails_the_run_and_pauses_the_connector(factory: Any, pg_database: Any) -> None:
    cid, _ = _connector(factory, pg_database, "pause")
    with pytest.raises(RunFailed, match="new column 'discount' in table 'orders'"):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert (run.status, run.failure_class) == ("failed", "data")
    # Nothing of the refused run was loaded.
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM connector_{cid}.orders") == [(20,)]
    assert "discount" not in _columns(factory, cid)
    with session_scope(factory.settings.effective_database_url) as s:
        c = s.get(Connector, cid)
        assert c is not None and c.is_active is False
        assert "schema change policy is 'pause'" in (c.paused_reason or "")
        shown = connectors.to_out(c, factory.settings).paused_reason  # the API says it too
        assert shown == c.paused_reason
        entry = s.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_id == str(cid), AuditEntry.action == "connector.pause")
            .order_by(AuditEntry.id.desc())
        ).first()
        assert entry is not None and entry.actor == "system"
        assert "new column 'discount'" in (entry.after or {}).get("paused_reason", "")
        # Resumed by a person: the reason goes.
        connectors.set_active(cid, True, session=s, actor=SYSTEM, box=factory.box)
        assert s.get(Connector, cid).paused_reason is None  # type: ignore[union-attr]
