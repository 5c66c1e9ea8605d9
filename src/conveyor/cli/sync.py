"""``conveyor sync``: how far Prefect is from the database."""

from __future__ import annotations

import json

import typer

from conveyor.cli.common import console, settings
from conveyor.db.session import session_scope
from conveyor.sync import status as sync_status

app = typer.Typer(help="Prefect sync of connectors.", no_args_is_help=True)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """Connectors by sync status, the oldest queued change and the last full pass."""
    with session_scope(settings().effective_database_url) as session:
        out = sync_status.read(session)
    if as_json:
        console.print_json(json.dumps(out.model_dump(mode="json")))
        return
    c = out.counts
    console.print(
        f"connectors: {out.total} ({c['synced']} synced, {c['pending']} pending, "
        f"{c['error']} error)"
    )
    r = out.reconciler
    state = "alive" if r.alive else "not running"
    console.print(
        f"reconciler: {state}" + (f" ({r.holder}, heartbeat {r.heartbeat_at})" if r.holder else "")
    )
    console.print(f"queued changes: {out.queued_changes}")
    if out.oldest_pending_change:
        p = out.oldest_pending_change
        line = f"oldest: connector {p.connector_id} {p.action}, {p.age_seconds:.0f}s old"
        if p.attempts:
            line += f", {p.attempts} attempts, next at {p.next_attempt_at}: {p.last_error}"
        console.print(line, markup=False)
    last = out.last_full_pass
    if not last:
        console.print("last full pass: none yet")
        return
    console.print(
        f"last full pass: {last['finished_at']} in {last['seconds']}s — "
        f"{last['connectors']} connectors, {last.get('deployments') or 0} deployments, "
        f"created {last['created']}, updated {last['updated']}, resumed {last['resumed']}, "
        f"paused {last['paused']}, deleted {last['deleted']}, failed {last['failed']}",
        markup=False,
    )
    if last.get("error"):
        console.print(f"  stopped: {last['error']}", markup=False)
    for rep in last.get("repairs", []):
        console.print(
            f"  repaired connector {rep['connector_id']}: {rep['action']} ({rep['reason']})",
            markup=False,
        )
    for err in last.get("errors", []):
        console.print(f"  error connector {err['connector_id']}: {err['error']}", markup=False)
