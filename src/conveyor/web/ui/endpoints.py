"""Sources and destinations pages: list, create, edit, test, delete, and who uses each.

Both resources share one shape, so one factory builds the routes for each (as the JSON
API does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from conveyor.domain.models import EndpointCreate, EndpointPatch, Id
from conveyor.errors import Conflict, FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type, list_types, pydantic_problems
from conveyor.services import catalog
from conveyor.services.authz import require_role
from conveyor.web.deps import unit_of_work
from conveyor.web.ui import checks, save_check, schema_form
from conveyor.web.ui.base import (
    UIActor,
    UIRoute,
    can_change_endpoint,
    flash,
    get_settings,
    redirect,
    render,
)

PREFIX = "cfg."
CAP = "max_concurrent_runs"  # a destination's cap on runs writing to it at once


def _cap(kind: Kind, form: Mapping[str, Any], problems: list[FieldProblem]) -> dict[str, Any]:
    """The destination's cap as model fields ({} for a source); empty means no cap."""
    # TODO(helper E): the guard goes once the endpoint models carry max_concurrent_runs.
    if kind != "destination" or CAP not in EndpointCreate.model_fields:
        return {}
    raw = str(form.get(CAP) or "").strip()
    if not raw:
        return {CAP: None}
    if not raw.isdigit() or int(raw) < 1:
        problems.append(
            FieldProblem(CAP, f"'{raw}' is not a whole number of 1 or more (empty: no cap)")
        )
        return {}
    return {CAP: int(raw)}


def _errors(problems: list[FieldProblem]) -> dict[str, str]:
    """{input name: reason}: 'config.host' → 'cfg.host'; model-level problems → 'cfg'."""
    out: dict[str, str] = {}
    for p in problems:
        loc = p.loc
        if loc == "config" or loc.startswith("config."):
            key = PREFIX.rstrip(".") + loc.removeprefix("config")
        elif loc in ("name", "type", CAP):
            key = loc
        else:
            key = PREFIX + loc if loc else ""
        out[key] = f"{out[key]}; {p.reason}" if key in out else p.reason
    return out


class _Pages:
    """The pages of one kind (source or destination); ``build_router`` routes to them."""

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.plural = f"{self.kind}s"
        self.base = f"/{self.plural}"

    def fields(self, type_name: str, config: Mapping[str, Any] | None = None) -> list[Any]:
        exclude = get_type(self.kind, type_name).copy_fields  # set per connector, not here
        return schema_form.fields_for(self.kind, type_name, config, prefix=PREFIX, exclude=exclude)

    def page(self, request: Request, ctx: dict[str, Any], status: int = 200) -> Response:
        ctx.update(kind=self.kind, plural=self.plural, base=self.base, types=list_types(self.kind))
        return render(request, "endpoints/form.html", ctx, status_code=status)

    def list_page(self, request: Request, actor: UIActor) -> Response:
        settings = get_settings(request)
        with unit_of_work(settings) as session:
            items = catalog.list_all(self.kind, session=session)
        titles = {t.name: t.title for t in list_types(self.kind)}
        return render(
            request,
            "endpoints/list.html",
            {
                "items": items,
                "kind": self.kind,
                "plural": self.plural,
                "base": self.base,
                "titles": titles,
            },
        )

    def new_page(self, request: Request, actor: UIActor, type: str | None = None) -> Response:
        require_role(actor, "editor", f"create {self.plural}")
        type_name = type or list_types(self.kind)[0].name
        get_type(self.kind, type_name)
        return self.page(
            request,
            {
                "obj": None,
                "name": "",
                "type_name": type_name,
                "fields": self.fields(type_name),
                "errors": {},
            },
        )

    def type_fields(self, request: Request, actor: UIActor, type: str) -> Response:
        require_role(actor, "editor", f"edit {self.plural}")
        get_type(self.kind, type)
        return render(
            request,
            "partials/endpoint_fields.html",
            {"fields": self.fields(type), "errors": {}, "prefix": PREFIX},
        )

    async def create(self, request: Request, actor: UIActor) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._create, request, actor, form)

    def _create(self, request: Request, actor: Any, form: Mapping[str, Any]) -> Response:
        require_role(actor, "editor", f"create {self.plural}")
        settings = get_settings(request)
        name = str(form.get("name") or "").strip()
        type_name = str(form.get("type") or "")
        get_type(self.kind, type_name)
        flds = self.fields(type_name)
        config, _cleared, problems = schema_form.parse(flds, form)
        problems = [FieldProblem(f"config.{p.loc}", p.reason) for p in problems]
        cap = _cap(self.kind, form, problems)
        data = None
        try:
            data = EndpointCreate(name=name, type=type_name, config=config, **cap)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc))
        if data is not None and not problems:
            try:
                with unit_of_work(settings) as session:
                    obj = catalog.create(
                        self.kind,
                        data,
                        session=session,
                        actor=actor,
                        box=request.app.state.secret_box,
                    )
                    new_id = obj.id
                flash(request, f"Saved {self.kind} '{name}'.")
                return redirect(request, f"{self.base}/{new_id}")
            except ValidationFailed as exc:
                problems.extend(exc.problems)
            except Conflict as exc:
                problems.append(FieldProblem("name", exc.reason))
        ctx = {
            "obj": None,
            "name": name,
            "type_name": type_name,
            "fields": schema_form.refill(flds, form),
            "errors": _errors(problems),
            "cap": str(form.get(CAP) or ""),
        }
        return self.page(request, ctx, 422)

    def _detail_ctx(self, request: Request, endpoint_id: Id) -> dict[str, Any]:
        settings = get_settings(request)
        with unit_of_work(settings) as session:
            obj = catalog.get(self.kind, endpoint_id, session=session)
            out = catalog.to_out(self.kind, obj)
            used_by = catalog.connectors_using(self.kind, endpoint_id, session=session)
        return {
            "obj": out,
            "name": out.name,
            "type_name": out.type,
            "fields": self.fields(out.type, out.config),
            "used_by": used_by,
            "errors": {},
            "cap": str(getattr(out, CAP, None) or ""),
            "can_change": can_change_endpoint(request.state.actor, out.created_by),
        }

    def detail(self, request: Request, endpoint_id: Id, actor: UIActor) -> Response:
        return self.page(request, self._detail_ctx(request, endpoint_id))

    async def update(self, request: Request, endpoint_id: Id, actor: UIActor) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._update, request, endpoint_id, actor, form)

    def _update(
        self, request: Request, endpoint_id: Id, actor: Any, form: Mapping[str, Any]
    ) -> Response:
        settings = get_settings(request)
        box = request.app.state.secret_box
        ctx = self._detail_ctx(request, endpoint_id)
        if not ctx["can_change"]:
            require_role(actor, "admin", f"change a {self.kind} another user created")
        flds = ctx["fields"]
        problems: list[FieldProblem] = []
        if form.get(save_check.CONFIRM) == "1":  # "Save anyway": the change checked before
            stamp = ctx["obj"].updated_at
            token = str(form.get(save_check.SEALED) or "")
            change = save_check.unseal(box, token, endpoint_id, actor.username, stamp)
        else:
            values, cleared, bad = schema_form.parse(flds, form)
            problems = [FieldProblem(f"config.{p.loc}", p.reason) for p in bad]
            cap = _cap(self.kind, form, problems)
            name = str(form.get("name") or "").strip()
            change = {"name": name, "values": values, "cleared": sorted(cleared), "cap": cap}
            if not problems and (asked := self._check_first(request, ctx, form, change)):
                return asked
        name = change["name"]
        if not problems:
            try:
                with unit_of_work(settings) as session:
                    stored = catalog.get(self.kind, endpoint_id, session=session).config
                    config = schema_form.merge(stored, change["values"], set(change["cleared"]))
                    catalog.update(
                        self.kind,
                        endpoint_id,
                        EndpointPatch(name=name, config=config, **change["cap"]),
                        session=session,
                        actor=actor,
                        box=box,
                    )
                flash(request, f"Saved {self.kind} '{name}'.")
                return redirect(request, f"{self.base}/{endpoint_id}")
            except ValidationError as exc:
                problems.extend(pydantic_problems(exc))
            except ValidationFailed as exc:
                problems.extend(exc.problems)
            except Conflict as exc:
                problems.append(FieldProblem("name", exc.reason))
        ctx.update(
            name=name,
            fields=schema_form.refill(flds, form),
            errors=_errors(problems),
            cap=str(form.get(CAP) or ""),
        )
        return self.page(request, ctx, 422)

    def _check_first(
        self, request: Request, ctx: dict[str, Any], form: Mapping[str, Any], change: dict[str, Any]
    ) -> Response | None:
        """Used by active connectors: try the change first; a failure saves nothing and
        asks "Save anyway?" (None: go ahead and save)."""
        users = save_check.active_users(ctx["used_by"])
        if not users:
            return None
        settings = get_settings(request)
        box = request.app.state.secret_box
        out = ctx["obj"]
        with unit_of_work(settings) as session:
            obj = catalog.get(self.kind, out.id, session=session)
            stored = catalog.decrypted_config(self.kind, obj, box)
        result = save_check.try_change(self.kind, out.type, stored, change, settings)
        if result.ok:
            return None
        actor = request.state.actor
        ctx.update(
            name=change["name"],
            fields=schema_form.refill(ctx["fields"], form),
            cap=str(form.get(CAP) or ""),
            save_check={
                "message": result.message,
                "users": users,
                "confirm": save_check.CONFIRM,
                "sealed": save_check.SEALED,
                "token": save_check.seal(box, change, out.id, actor.username, out.updated_at),
            },
        )
        return self.page(request, ctx, 409)

    def delete(self, request: Request, endpoint_id: Id, actor: UIActor) -> Response:
        settings = get_settings(request)
        try:
            with unit_of_work(settings) as session:
                name = catalog.get(self.kind, endpoint_id, session=session).name
                catalog.delete(self.kind, endpoint_id, session=session, actor=actor)
        except Conflict as exc:
            flash(request, f"{exc.reason}. {exc.hint or ''}", "error")
            return redirect(request, f"{self.base}/{endpoint_id}")
        flash(request, f"Deleted {self.kind} '{name}'.")
        return redirect(request, self.base)

    async def test_new(self, request: Request, actor: UIActor) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._test, request, actor, None, form)

    async def test_existing(self, request: Request, endpoint_id: Id, actor: UIActor) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._test, request, actor, endpoint_id, form)

    def _test(
        self, request: Request, actor: Any, endpoint_id: Id | None, form: Mapping[str, Any]
    ) -> Response:
        """Test what is on screen. Secrets left empty on an edit form use the stored ones,
        but only while the form still points where they were stored."""
        require_role(actor, "editor", f"test {self.plural}")
        settings = get_settings(request)
        box = request.app.state.secret_box
        stored: dict[str, Any] = {}
        if endpoint_id is not None:
            with unit_of_work(settings) as session:
                obj = catalog.get(self.kind, endpoint_id, session=session)
                type_name = obj.type
                stored = catalog.decrypted_config(self.kind, obj, box)
        else:
            type_name = str(form.get("type") or "")
            get_type(self.kind, type_name)
        values, cleared, bad = schema_form.parse(self.fields(type_name), form)
        if bad:
            reason = "; ".join(f"{schema_form.label_for(p.loc)}: {p.reason}" for p in bad)
            result = checks.CheckResult(False, reason)
        else:
            config = catalog.with_stored_secrets(self.kind, type_name, stored, values, cleared)
            result = checks.check(self.kind, type_name, config, settings)
        return render(request, "partials/check_result.html", {"result": result})


def build_router(kind: Kind) -> APIRouter:
    """The routes of one kind's pages, in the order they match."""
    pages = _Pages(kind)
    base = pages.base
    router = APIRouter(route_class=UIRoute)
    for method, path, endpoint in (
        ("GET", base, pages.list_page),
        ("GET", f"{base}/new", pages.new_page),
        ("GET", f"{base}/fields", pages.type_fields),
        ("POST", f"{base}/new", pages.create),
        ("GET", base + "/{endpoint_id:int}", pages.detail),
        ("POST", base + "/{endpoint_id:int}", pages.update),
        ("POST", base + "/{endpoint_id:int}/delete", pages.delete),
        ("POST", base + "/test", pages.test_new),
        ("POST", base + "/{endpoint_id:int}/test", pages.test_existing),
    ):
        router.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
    return router


sources = build_router("source")
destinations = build_router("destination")
