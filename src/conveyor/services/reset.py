"""Reset a connector: forget its incremental state so the next run reloads in full, and,
when asked, drop the tables it loaded.

State lives outside Conveyor's database (dlt's pipeline state and schema at the destination,
a REST sink's working folder under ``CONVEYOR_HOME``, a transfer's manifest), all named
after ``Connector.state_key``: a reset gives the connector a new key, so every run after it
finds no state at all. Nothing of the old state needs deleting for that to hold.

With ``drop_tables`` the tables the connector loaded (named in its runs' ``table_stats``,
with dlt's nested tables) are dropped from its dataset first, by the destination type
(``DestinationType.drop_tables``); a type that cannot drop refuses the whole reset. The drop
happens before the new key is stored: a drop that fails changes nothing and can be retried.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.db.models import ConnectorRun, new_state_key
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES
from conveyor.errors import Conflict, ConveyorError, ExternalError, ValidationFailed
from conveyor.pipelines.contract import TypeContext
from conveyor.pipelines.resolved import ResolvedConnector
from conveyor.secrets import SecretBox
from conveyor.services import audit, connectors, versions
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.reset")


@dataclass(frozen=True)
class ResetResult:
    connector_id: int
    dropped_tables: list[str] = field(default_factory=list)
    message: str = ""


def reset(connector_id: int, *, settings: Settings, actor: Actor, drop_tables: bool) -> ResetResult:
    """Give the connector a new state key (audited as ``connector.reset``); with
    ``drop_tables`` drop its tables at the destination first. 409 while a run is open."""
    url = settings.effective_database_url
    with session_scope(url) as session:
        c = connectors.get(connector_id, session=session)
        require_owner_or_admin(actor, c.owner_id, "reset this connector")
        _refuse_while_running(session, connector_id)
        old_key = c.state_key
        tables = _loaded_tables(session, connector_id) if drop_tables else []
        resolved = None
        if drop_tables:
            from conveyor.pipelines import runner

            resolved = runner.resolve(c, SecretBox(settings.secret_keys()))
            if not resolved.destination_info.drops_tables:
                raise ValidationFailed.field(
                    "drop_tables",
                    f"a {resolved.destination_info.title} destination cannot drop tables; "
                    "reset without drop_tables",
                )
    dropped = _drop(resolved, settings, tables)
    with session_scope(url) as session:
        c = connectors.get(connector_id, session=session)
        _refuse_while_running(session, connector_id)
        prior = versions.prior_connector(c)
        c.state_key = new_state_key()
        audit.record(
            session=session,
            actor=actor,
            action="connector.reset",
            entity_type="connector",
            entity_id=connector_id,
            after={"drop_tables": drop_tables, "dropped_tables": dropped},
        )
        session.flush()  # the new key bumps ``version``: the reset is a version, settings equal
        versions.connector_changed(session, c, change="reset", actor=actor, prior=prior)
    _forget_local_state(settings, connector_id, old_key)
    return ResetResult(connector_id, dropped, _message(drop_tables, dropped))


def _refuse_while_running(session: Session, connector_id: int) -> None:
    open_run = session.scalar(
        select(ConnectorRun.id).where(
            ConnectorRun.connector_id == connector_id,
            ConnectorRun.status.in_(OPEN_RUN_STATUSES),
        )
    )
    if open_run is not None:
        raise Conflict(
            f"connector {connector_id} has a run in progress (run {open_run})",
            hint="wait for it to end, or cancel it, then reset",
        )


def _loaded_tables(session: Session, connector_id: int) -> list[str]:
    """Every table any run of the connector loaded rows into (its runs' table_stats)."""
    names: set[str] = set()
    for stats in session.scalars(
        select(ConnectorRun.table_stats).where(ConnectorRun.connector_id == connector_id)
    ):
        names.update(stats or {})
    return sorted(names)


def _drop(resolved: ResolvedConnector | None, settings: Settings, tables: list[str]) -> list[str]:
    from conveyor.pipelines.explain import explain

    if resolved is None or not tables:
        return []
    context = TypeContext(settings=settings, connector_id=resolved.id, state_key=resolved.state_key)
    try:
        return resolved.destination_info.drop_tables(resolved.destination, context, tables)
    except ConveyorError:
        raise
    except Exception as exc:
        why = explain(exc, resolved.secrets)
        raise ExternalError(
            f"could not drop the connector's tables: {why.message}",
            hint="nothing was reset; try again",
            transient=why.transient,
        ) from None


def _forget_local_state(settings: Settings, connector_id: int, old_key: str | None) -> None:
    """A REST sink's pipeline folder under CONVEYOR_HOME: no run will read it again."""
    name = f"conveyor_connector_{connector_id}" + (f"_{old_key}" if old_key else "")
    folder = settings.home / "pipelines" / name
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def _message(drop_tables: bool, dropped: list[str]) -> str:
    text = "Incremental state cleared: the next run reloads everything."
    if drop_tables:
        text += (
            f" Dropped {len(dropped)} table(s): {', '.join(dropped)}."
            if dropped
            else " No table of this connector was found to drop."
        )
    return text
