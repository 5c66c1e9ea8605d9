"""Create and edit a connector: the guided form and its live helpers (htmx partials)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session

from conveyor.domain import schedule as sched
from conveyor.domain.job_variables import ALL_VARIABLES
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate, Id
from conveyor.errors import Conflict, FieldProblem, ValidationFailed
from conveyor.pipelines.contract import ConveyorType
from conveyor.pipelines.registry import (
    Kind,
    default_type,
    get_type,
    list_types,
    pydantic_problems,
)
from conveyor.services import catalog, job_pool
from conveyor.services import connectors as svc
from conveyor.services.authz import Actor, require_owner_or_admin, require_role
from conveyor.web.deps import unit_of_work
from conveyor.web.ui import checks, schema_form, table_picks
from conveyor.web.ui import connector_form as cf
from conveyor.web.ui import job_variables_form as jvf
from conveyor.web.ui.base import UIActor, UIRoute, flash, get_settings, redirect, render

router = APIRouter(route_class=UIRoute)
KINDS: tuple[Kind, Kind] = ("source", "destination")


class _FormProblems(Exception):
    """Raised inside the write transaction so it rolls back; carries what to show."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems


def _copy_type(source_type: str | None) -> ConveyorType | None:
    """The source type whose "what to copy" inputs the form shows (None: none chosen)."""
    if not source_type:
        return None
    try:
        return get_type("source", source_type)
    except ValidationFailed:
        return None


def inline_fields(
    kind: Kind, type_name: str, form: Mapping[str, Any] | None = None
) -> list[schema_form.FormField]:
    """The fields to create a source/destination inside the connector form."""
    fields = schema_form.fields_for(
        kind, type_name, {}, prefix=f"{kind}.cfg.", exclude=get_type(kind, type_name).copy_fields
    )
    return schema_form.refill(fields, form) if form is not None else fields


def _source_type(values: Mapping[str, Any], sources: list[Any]) -> str | None:
    if values.get("source_mode") == "new":
        return str(values.get("source.new.type") or default_type("source"))
    chosen = str(values.get("source_id") or "")
    return next((s.type for s in sources if str(s.id) == chosen), None)


def preview(s: cf.Schedule) -> dict[str, Any]:
    """The schedule in words and its next 5 runs, or the reason it is invalid."""
    if s.preset == "cron" and not s.cron:
        # Just chose "custom": a hint, not an error, until something is typed.
        return {"words": "Type a cron expression to see when it runs.", "cron": None}
    try:
        cron = cf.cron_for(s)
        sched.validate_timezone(s.timezone, loc="timezone")
    except ValidationFailed as exc:
        problem = exc.problems[0]
        return {"error": problem.reason, "error_field": problem.loc, "cron": None}
    if cron is None:
        return {"words": "Manual only: runs when someone clicks “Run now”.", "cron": None}
    return {
        "cron": cron,
        "words": sched.describe(cron, s.timezone),
        "runs": sched.next_runs(cron, s.timezone, 5),
        "timezone": s.timezone,
    }


def _context(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str],
    *,
    connector: Any = None,
    form: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        sources = catalog.list_all("source", session=session)
        destinations = catalog.list_all("destination", session=session)
    new_types = {
        kind: str(values.get(f"{kind}.new.type") or list_types(kind)[0].name) for kind in KINDS
    }
    return {
        "v": values,
        "errors": errors,
        "c": connector,
        "sources": sources,
        "destinations": destinations,
        "types": {kind: list_types(kind) for kind in KINDS},
        "new_types": new_types,
        "inline": {kind: inline_fields(kind, new_types[kind], form) for kind in KINDS},
        "source_type": _source_type(values, sources),
        "copy_type": _copy_type(_source_type(values, sources)),
        "presets": cf.PRESETS,
        "catch_up_choices": cf.CATCH_UP_CHOICES,
        "schema_change_choices": cf.SCHEMA_CHANGE_CHOICES,
        "weekdays": cf.WEEKDAYS,
        "write_modes": cf.WRITE_MODES,
        "timezones": sorted(sched._timezones()),
        "preview": preview(values["schedule"]),
        **_advanced(settings, connector, values),
    }


def _advanced(settings: Any, connector: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """The Advanced section: the connector's work pool and the job variables it takes (its
    base job template's, as the save checks them: services/job_pool.py)."""
    pool = getattr(connector, "work_pool_name", None) or settings.default_work_pool
    info = job_pool.pool_info(settings, pool)
    accepted = ALL_VARIABLES & info.variables
    return {
        "jv_text": jvf.JV_TEXT,
        "jv_pool": pool,
        "jv_pool_type": info.type,
        "jv_accepted": sorted(accepted),
        "jv_off": jvf.advanced_inputs(frozenset(accepted), values),
    }


@router.get("/connectors/new", include_in_schema=False)
def new_form(request: Request, actor: UIActor) -> Response:
    require_role(actor, "editor", "create connectors")
    ctx = _context(request, {"schedule": cf.Schedule()}, {})
    ctx["v"] = cf.empty_values(ctx["sources"], ctx["destinations"])
    ctx["source_type"] = _source_type(ctx["v"], ctx["sources"])
    ctx["copy_type"] = _copy_type(ctx["source_type"])
    ctx["timezone_from_browser"] = True  # static/timezone.js: the browser's zone, if known
    return render(request, "connectors/form.html", ctx)


@router.post("/connectors/new", include_in_schema=False)
async def create(request: Request, actor: UIActor) -> Response:
    form = await request.form()
    return await run_in_threadpool(_save, request, actor, form, None)


def _load(request: Request, connector_id: Id) -> tuple[Any, int | None]:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        c = svc.get(connector_id, session=session)
        return svc.to_out(c, settings), c.owner_id


@router.get("/connectors/{connector_id:int}/edit", include_in_schema=False)
def edit_form(request: Request, connector_id: Id, actor: UIActor, confirm: str = "") -> Response:
    out, owner_id = _load(request, connector_id)
    require_owner_or_admin(actor, owner_id, "change this connector")
    if out.managed_by == "file" and confirm != "yes":
        return render(request, "connectors/confirm_file.html", {"c": out})
    ctx = _context(request, cf.values_from_connector(out), {}, connector=out)
    return render(request, "connectors/form.html", ctx)


@router.post("/connectors/{connector_id:int}/edit", include_in_schema=False)
async def update(request: Request, connector_id: Id, actor: UIActor) -> Response:
    form = await request.form()
    return await run_in_threadpool(_save, request, actor, form, connector_id)


def _inline_endpoint(
    kind: Kind, form: Mapping[str, Any], problems: list[FieldProblem]
) -> EndpointCreate | None:
    """Validate the inline 'create a new source/destination' panel without writing."""
    type_name = str(form.get(f"{kind}.new.type") or "")
    try:
        get_type(kind, type_name)
    except ValidationFailed:
        problems.append(FieldProblem(f"{kind}.new.type", f"choose a {kind} type"))
        return None
    fields = inline_fields(kind, type_name)
    config, _cleared, bad = schema_form.parse(fields, form)
    problems.extend(FieldProblem(f"{kind}.cfg.{p.loc}", p.reason) for p in bad)
    try:
        data = EndpointCreate(
            name=str(form.get(f"{kind}.new.name") or ""), type=type_name, config=config
        )
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, f"{kind}.new"))
        return None
    try:
        from conveyor.pipelines.registry import validate_config

        validate_config(kind, type_name, config, loc=f"{kind}.cfg")
    except ValidationFailed as exc:
        problems.extend(exc.problems)
    return data


def _endpoint_id(kind: Kind, form: Mapping[str, Any], problems: list[FieldProblem]) -> int:
    raw = str(form.get(f"{kind}_id") or "")
    if not raw.isdigit():
        problems.append(FieldProblem(f"{kind}_id", f"choose a {kind}, or create a new one"))
        return 0
    return int(raw)


def _save(
    request: Request, actor: Actor, form: Mapping[str, Any], connector_id: Id | None
) -> Response:
    settings = get_settings(request)
    box = request.app.state.secret_box
    current = None
    if connector_id is None:
        require_role(actor, "editor", "create connectors")
    else:
        current, owner_id = _load(request, connector_id)
        require_owner_or_admin(actor, owner_id, "change this connector")
    values = cf.values_from_form(form)
    problems: list[FieldProblem] = []
    if current is not None and current.managed_by == "file" and form.get("confirm_file") != "yes":
        problems.append(FieldProblem("", "confirm that you want to edit a file-managed connector"))
    try:
        cron = cf.cron_for(values["schedule"])
    except ValidationFailed as exc:
        problems.extend(exc.problems)
        cron = None
    inline: dict[Kind, EndpointCreate] = {}
    ids: dict[Kind, int] = {}
    for kind in KINDS:
        if values[f"{kind}_mode"] == "new":
            data = _inline_endpoint(kind, form, problems)
            if data is not None:
                inline[kind] = data
        else:
            ids[kind] = _endpoint_id(kind, form, problems)
    with unit_of_work(settings) as session:
        sources = catalog.list_all("source", session=session)
    source_type = _source_type(values, sources)
    override = cf.copy_override(
        form, source_type, current.source_config_override if current else {}, problems
    )
    fields: dict[str, Any] = {
        "name": values["name"],
        "description": values["description"] or None,
        "source_config_override": override,
        "schedule": cron,
        "timezone": values["schedule"].timezone,
        "is_active": values["is_active"],
        "tags": cf.split_list(values["tags"]),
        "retry_policy": cf.retry_policy_from(values, problems),
        "catch_up": values["catch_up"] or "latest",
        "schema_changes": values.get("schema_changes") or "propagate",
        **cf.alert_fields(values, problems),  # auto-pause, freshness SLA
        "job_variables": jvf.job_variables_from(values, problems),  # the Advanced section
    }
    try:
        if connector_id is None:
            # An endpoint created inline gets its id in _write; 1 stands in until then.
            model: ConnectorCreate | ConnectorPatch = ConnectorCreate(
                source_id=ids.get("source", 1), destination_id=ids.get("destination", 1), **fields
            )
        else:
            version = values["version"]
            model = ConnectorPatch.model_validate(
                {
                    **fields,
                    **{f"{k}_id": v for k, v in ids.items()},
                    "version": int(version) if version.isdigit() else None,
                }
            )
    except ValidationError as exc:
        problems.extend(p for p in pydantic_problems(exc) if p.loc != "schedule" or cron)
        model = None  # type: ignore[assignment]
    if problems:
        return _invalid(request, values, problems, current, form)
    try:
        with unit_of_work(settings) as session:
            saved_id = _write(session, model, inline, actor, box, connector_id, settings)
    except _FormProblems as exc:
        return _invalid(request, values, exc.problems, current, form)
    if connector_id is None:
        flash(request, "Connector created. Conveyor is creating its Prefect deployment now.")
    else:
        flash(request, "Saved. Conveyor is updating its Prefect deployment now.")
    return redirect(request, f"/connectors/{saved_id}")


def _write(
    session: Session,
    model: ConnectorCreate | ConnectorPatch,
    inline: dict[Kind, EndpointCreate],
    actor: Actor,
    box: Any,
    connector_id: Id | None,
    settings: Any = None,
) -> int:
    """Create the inline endpoints and the connector in one transaction, or nothing."""
    for kind, data in inline.items():
        try:
            obj = catalog.create(kind, data, session=session, actor=actor, box=box)
        except ValidationFailed as exc:
            raise _FormProblems(
                [
                    FieldProblem(f"{kind}.cfg.{p.loc.removeprefix('config.')}", p.reason)
                    for p in exc.problems
                ]
            ) from exc
        except Conflict as exc:
            raise _FormProblems([FieldProblem(f"{kind}.new.name", exc.reason)]) from exc
        model = model.model_copy(update={f"{kind}_id": obj.id})
    try:
        if connector_id is None:
            assert isinstance(model, ConnectorCreate)
            return svc.create(
                model, session=session, actor=actor, box=box, managed_by="ui", settings=settings
            ).id
        assert isinstance(model, ConnectorPatch)
        return svc.update(
            connector_id, model, session=session, actor=actor, box=box, settings=settings
        ).id
    except ValidationFailed as exc:
        raise _FormProblems(exc.problems) from exc
    except Conflict as exc:
        loc = "name" if "named" in exc.reason else ""
        text = f"{exc.reason} ({exc.hint})" if exc.hint else exc.reason
        raise _FormProblems([FieldProblem(loc, text)]) from exc


def _invalid(
    request: Request,
    values: dict[str, Any],
    problems: list[FieldProblem],
    current: Any,
    form: Mapping[str, Any],
) -> Response:
    errors = cf.problems_to_errors(problems)
    ctx = _context(request, values, errors, connector=current, form=form)
    return render(request, "connectors/form.html", ctx, status_code=422)


# --- live helpers (htmx) ---------------------------------------------------------------


@router.get("/connectors/form/schedule", include_in_schema=False)
def schedule_preview(request: Request, actor: UIActor) -> Response:
    require_role(actor, "editor", "edit connectors")
    s = cf.schedule_from_form(request.query_params)
    return render(
        request, "partials/schedule_preview.html", {"preview": preview(s), "v": {"schedule": s}}
    )


@router.get("/connectors/form/copy", include_in_schema=False)
def copy_section(request: Request, actor: UIActor) -> Response:
    require_role(actor, "editor", "edit connectors")
    values = cf.values_from_form(request.query_params)
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        sources = catalog.list_all("source", session=session)
    return render(
        request,
        "partials/copy_section.html",
        {
            "v": values,
            "source_type": _source_type(values, sources),
            "copy_type": _copy_type(_source_type(values, sources)),
            "write_modes": cf.WRITE_MODES,
            "errors": {},
        },
    )


@router.get("/connectors/form/endpoint", include_in_schema=False)
def endpoint_fields(request: Request, actor: UIActor, kind: str) -> Response:
    """The inline panel's fields for the type just chosen in its select."""
    require_role(actor, "editor", "edit connectors")
    if kind not in KINDS:
        raise ValidationFailed.field("kind", "must be source or destination")
    k: Kind = kind
    type_name = request.query_params.get(f"{kind}.new.type") or list_types(k)[0].name
    get_type(k, type_name)
    return render(
        request,
        "partials/endpoint_fields.html",
        {"fields": inline_fields(k, type_name), "errors": {}, "prefix": f"{kind}.cfg."},
    )


def _config_from_form(
    kind: Kind, form: Mapping[str, Any], request: Request
) -> tuple[str, dict[str, Any]] | str:
    """(type, plain config) of the source/destination the connector form points at."""
    settings = get_settings(request)
    box = request.app.state.secret_box
    if form.get(f"{kind}_mode") == "new":
        type_name = str(form.get(f"{kind}.new.type") or "")
        try:
            get_type(kind, type_name)
        except ValidationFailed as exc:
            return exc.reason
        config, _cleared, bad = schema_form.parse(inline_fields(kind, type_name), form)
        if bad:
            return "; ".join(f"{schema_form.label_for(p.loc)}: {p.reason}" for p in bad)
        return type_name, config
    raw = str(form.get(f"{kind}_id") or "")
    if not raw.isdigit():
        return f"choose a {kind} first"
    with unit_of_work(settings) as session:
        obj = catalog.get(kind, int(raw), session=session)
        return obj.type, catalog.decrypted_config(kind, obj, box)


@router.post("/connectors/form/test", include_in_schema=False)
async def test_connection(request: Request, actor: UIActor, kind: str) -> Response:
    require_role(actor, "editor", f"test {kind}s")
    if kind not in KINDS:
        raise ValidationFailed.field("kind", "must be source or destination")
    form = await request.form()

    def work() -> checks.CheckResult:
        found = _config_from_form(kind, form, request)
        if isinstance(found, str):
            return checks.CheckResult(False, found)
        return checks.check(kind, found[0], found[1], get_settings(request))

    result = await run_in_threadpool(work)
    return render(request, "partials/check_result.html", {"result": result})


@router.post("/connectors/form/discover", include_in_schema=False)
async def discover(request: Request, actor: UIActor) -> Response:
    require_role(actor, "editor", "discover sources")
    form = await request.form()

    def work() -> tuple[checks.Discovery, ConveyorType | None]:
        found = _config_from_form("source", form, request)
        if isinstance(found, str):
            return checks.Discovery(error=found), None
        return checks.discover(found[0], found[1], get_settings(request)), _copy_type(found[0])

    found, copy_type = await run_in_threadpool(work)
    typed = cf.split_list(str(form.get("tables") or ""))
    per_table = next((f for f in copy_type.copy_form if f.per_table), None) if copy_type else None
    if per_table is not None and not found.error:
        ctx = table_picks.discovered_context(form, found.items, typed)
        ctx.update(copy_type=copy_type, write_modes=cf.WRITE_MODES)
        ctx["discover_label"] = per_table.discover
        return render(request, "partials/table_picks.html", {**ctx, "errors": {}})
    picked = set(typed) | set(form.getlist("table"))
    return render(request, "partials/discovered.html", {"found": found, "picked": picked})
