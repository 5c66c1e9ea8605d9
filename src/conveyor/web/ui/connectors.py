"""Connector pages: the list, a connector's detail and its actions (a run's page: runs.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from conveyor.domain.models import ConnectorOut, Id
from conveyor.domain.vocabulary import PAUSED_MEANS
from conveyor.errors import ConveyorError, NotFound, PermissionDenied, ValidationFailed
from conveyor.services import connectors as svc
from conveyor.services import daily_stats
from conveyor.services import runs as runs_svc
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.settings import Settings
from conveyor.web.deps import unit_of_work
from conveyor.web.ui import chart, drift_view, landing
from conveyor.web.ui import connector_form as cf
from conveyor.web.ui.base import (
    UIActor,
    UIRoute,
    at_least,
    can_change_connector,
    flash,
    get_settings,
    redirect,
    render,
)

router = APIRouter(route_class=UIRoute)

PAGE_SIZE = 50
HISTORY_SIZE = 50
IN_FLIGHT = frozenset({"scheduled", "pending", "running"})
# One "Status" filter covering the three things a user asks: is it synced, is it on,
# did its last run work.
STATUS_FILTERS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Sync", "sync", [("synced", "Synced"), ("pending", "Sync pending"), ("error", "Sync error")]),
    ("State", "state", [("active", "Active"), ("paused", "Paused")]),
    (
        "Last run",
        "run",
        [
            ("succeeded", "Last run succeeded"),
            ("failed", "Last run failed"),
            ("running", "Running"),
        ],
    ),
]


def prefect_ui_url(settings: Settings) -> str | None:
    """The Prefect dashboard: configured, or the API URL without its /api suffix."""
    if settings.prefect_ui_url:
        return settings.prefect_ui_url.rstrip("/")
    if settings.prefect_api_url:
        return settings.prefect_api_url.rstrip("/").removesuffix("/api")
    return None


def deployment_url(settings: Settings, deployment_id: str | None) -> str | None:
    base = prefect_ui_url(settings)
    if not base or not deployment_id:
        return None
    return f"{base}/deployments/deployment/{deployment_id}"


def flow_run_url(settings: Settings, flow_run_id: str | None) -> str | None:
    base = prefect_ui_url(settings)
    if not base or not flow_run_id:
        return None
    return f"{base}/runs/flow-run/{flow_run_id}"


def _status_filter(status: str | None) -> dict[str, Any]:
    if not status or ":" not in status:
        return {}
    group, _, value = status.partition(":")
    if group == "sync" and value in ("synced", "pending", "error"):
        return {"sync_status": value}
    if group == "state" and value in ("active", "paused"):
        return {"is_active": value == "active"}
    if group == "run" and value:
        return {"last_run_status": value}
    raise ValidationFailed.field("status", f"unknown status filter '{status}'")


def may_change(actor: Actor, c: ConnectorOut) -> bool:
    """Whether ``actor`` may change ``c`` (the services check the same on every write)."""
    return at_least(actor, "editor") and (actor.is_admin or c.owner == actor.username)


def _busy(items: list[ConnectorOut]) -> bool:
    return any(
        c.sync_status == "pending" or (c.last_run and c.last_run.status in IN_FLIGHT) for c in items
    )


def _list_context(
    request: Request,
    actor: UIActor,
    q: str | None,
    status: str | None,
    tag: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    settings = get_settings(request)
    q = (q or "").strip() or None
    tag = (tag or "").strip() or None
    with unit_of_work(settings) as session:
        page = svc.list_page(
            session=session,
            settings=settings,
            q=q,
            tag=tag,
            cursor=cursor or None,
            limit=PAGE_SIZE,
            **_status_filter(status),
        )
        tags = svc.tags_in_use(session=session)
    filters = {k: v for k, v in (("q", q), ("status", status), ("tag", tag)) if v}
    return {
        "items": page.items,
        "next_cursor": page.next_cursor,
        "cursor": cursor,
        "filters": filters,
        "q": q or "",
        "status": status or "",
        "tag": tag or "",
        "tags": tags,
        "status_filters": STATUS_FILTERS,
        "busy": _busy(page.items),
        "can_change": lambda c: may_change(actor, c),
    }


@router.get("/connectors", include_in_schema=False)
def connector_list(
    request: Request,
    actor: UIActor,
    q: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    cursor: str | None = None,
) -> Response:
    ctx = _list_context(request, actor, q, status, tag, cursor)
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "rows":
        return render(request, "partials/connector_rows.html", ctx)
    return render(request, "connectors/list.html", ctx)


def _detail(request: Request, connector_id: Id) -> dict[str, Any]:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        c = svc.get(connector_id, session=session)
        runs = runs_svc.list_for_connector(connector_id, session=session, limit=HISTORY_SIZE)
        out = svc.to_out(c, settings, runs[0] if runs else None)
        owner_id, paused_reason = c.owner_id, c.paused_reason
        loaded = next((r for r in runs if r.status == "succeeded" and r.table_stats), None)
        tables = landing.loaded_tables(loaded.table_stats if loaded else None)
        lands = landing.landing(c, settings, tables)
        history = daily_stats.daily(connector_id, session=session, days=chart.HISTORY_DAYS)
        drift_repairs = drift_view.latest(connector_id, session)
    actor = request.state.actor
    return {
        "c": out,
        "runs": runs,
        "duration": svc.duration,
        "chart": chart.render(history),
        "recovery": cf.recovery_words(out),
        "paused_reason": paused_reason,  # set when the system paused it (schema changes)
        "landing": lands,
        "can_change": can_change_connector(actor, owner_id),
        "deployment_url": deployment_url(settings, out.prefect_deployment_id),
        "busy": out.sync_status == "pending" or any(r.status in IN_FLIGHT for r in runs),
        "drift_repairs": drift_repairs,  # edits made in Prefect that the reconciler undid
    }


@router.get("/connectors/{connector_id:int}", include_in_schema=False)
def connector_detail(request: Request, connector_id: Id, actor: UIActor) -> Response:
    return render(request, "connectors/detail.html", _detail(request, connector_id))


@router.get("/connectors/{connector_id:int}/live", include_in_schema=False)
def connector_live(request: Request, connector_id: Id, actor: UIActor) -> Response:
    """The parts of the detail page that change on their own (sync status, runs, chart)."""
    return render(request, "partials/connector_live.html", _detail(request, connector_id))


def _set_active(request: Request, connector_id: Id, active: bool, actor: UIActor) -> None:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        svc.set_active(
            connector_id,
            active,
            session=session,
            actor=actor,
            box=request.app.state.secret_box,
        )


@router.post("/connectors/{connector_id:int}/pause", include_in_schema=False)
def pause(request: Request, connector_id: Id, actor: UIActor) -> Response:
    _set_active(request, connector_id, False, actor)
    flash(request, f"Paused: {PAUSED_MEANS}.")
    return redirect(request, f"/connectors/{connector_id}")


@router.post("/connectors/{connector_id:int}/resume", include_in_schema=False)
def resume(request: Request, connector_id: Id, actor: UIActor) -> Response:
    _set_active(request, connector_id, True, actor)
    flash(request, "Resumed: it runs on its schedule again.")
    return redirect(request, f"/connectors/{connector_id}")


@router.post("/connectors/{connector_id:int}/toggle", include_in_schema=False)
def toggle(request: Request, connector_id: Id, actor: UIActor) -> Response:
    """The list's active switch: flips the state and returns the row (htmx) or the list."""
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        current = svc.get(connector_id, session=session).is_active
    _set_active(request, connector_id, not current, actor)
    if not request.headers.get("hx-request"):
        return redirect(request, "/connectors")
    with unit_of_work(settings) as session:
        c = svc.get(connector_id, session=session)
        out = svc.to_out(c, settings, svc.last_runs([c.id], session=session).get(c.id))
    return render(
        request,
        "partials/connector_row.html",
        {"c": out, "can_change": lambda c: may_change(actor, c)},
    )


@router.post("/connectors/{connector_id:int}/run", include_in_schema=False)
def run_now(request: Request, connector_id: Id, actor: UIActor) -> Response:
    settings = get_settings(request)
    from conveyor.sync.flow_runs import create_flow_run

    try:
        run_id = runs_svc.trigger(
            connector_id, settings=settings, actor=actor, start=create_flow_run
        ).id
    except ConveyorError as exc:
        if isinstance(exc, PermissionDenied | NotFound):
            raise
        flash(request, f"Could not start a run: {exc}", "error")
        return redirect(request, f"/connectors/{connector_id}")
    flash(request, f"Run {run_id} started. It appears below and updates on its own.")
    return redirect(request, f"/connectors/{connector_id}")


@router.get("/connectors/{connector_id:int}/delete", include_in_schema=False)
def delete_confirm(request: Request, connector_id: Id, actor: UIActor) -> Response:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        c = svc.get(connector_id, session=session)
        out = svc.to_out(c, settings)
        count = runs_svc.count_for_connector(connector_id, session=session)
        owner_id = c.owner_id
    require_owner_or_admin(actor, owner_id, "delete this connector")
    return render(
        request,
        "connectors/delete.html",
        {
            "c": out,
            "run_count": count,
            "can_change": can_change_connector(actor, owner_id),
            "deployment_url": deployment_url(settings, out.prefect_deployment_id),
        },
    )


@router.post("/connectors/{connector_id:int}/delete", include_in_schema=False)
def delete(request: Request, connector_id: Id, actor: UIActor) -> Response:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        name = svc.get(connector_id, session=session).name
        svc.delete(connector_id, session=session, actor=actor)
    flash(request, f"Deleted connector '{name}'. Its Prefect deployment is being removed.")
    return redirect(request, "/connectors")


# --- reset -----------------------------------------------------------------------------


@router.get("/connectors/{connector_id:int}/reset", include_in_schema=False)
def reset_confirm(request: Request, connector_id: Id, actor: UIActor) -> Response:
    """What a reset clears (and, if asked, drops), before anything happens."""
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        c = svc.get(connector_id, session=session)
        out = svc.to_out(c, settings)
        owner_id = c.owner_id
    require_owner_or_admin(actor, owner_id, "reset this connector")
    return render(request, "connectors/reset.html", {"c": out})


@router.post("/connectors/{connector_id:int}/reset", include_in_schema=False)
async def reset(request: Request, connector_id: Id, actor: UIActor) -> Response:
    form = await request.form()
    drop = form.get("drop_tables") == "true"
    return await run_in_threadpool(_reset, request, connector_id, actor, drop)


def _reset(request: Request, connector_id: Id, actor: Actor, drop: bool) -> Response:
    from conveyor.services.reset import reset as reset_connector

    settings = get_settings(request)
    try:
        result = reset_connector(connector_id, settings=settings, actor=actor, drop_tables=drop)
    except ConveyorError as exc:
        if isinstance(exc, PermissionDenied | NotFound):
            raise
        flash(request, f"Could not reset: {exc}", "error")
        return redirect(request, f"/connectors/{connector_id}")
    message = result.message or "Reset: the next run reloads in full."
    flash(request, message)
    return redirect(request, f"/connectors/{connector_id}")
