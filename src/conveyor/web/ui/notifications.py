"""Notification channels (admins): the list with each channel's last delivery, last error and
pending count; a form per type (secrets write-only: left blank, kept); Send test."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from pydantic import ValidationError
from sqlalchemy import select

from conveyor.db.models import Connector
from conveyor.domain.models import Id
from conveyor.domain.notifications import ChannelCreate, ChannelPatch
from conveyor.domain.vocabulary import CHANNEL_TYPES, NOTIFICATION_EVENTS
from conveyor.errors import Conflict, ValidationFailed
from conveyor.pipelines.registry import pydantic_problems
from conveyor.services import channels
from conveyor.services.authz import Actor, require_role
from conveyor.web.deps import unit_of_work
from conveyor.web.ui.base import UIActor, UIRoute, flash, get_settings, redirect, render

router = APIRouter(route_class=UIRoute)
BASE = "/admin/notifications"
TYPE_TITLES = {"webhook": "Webhook", "slack": "Slack", "email": "Email (SMTP)"}
EVENT_HELP = {
    "run.failed": "a run failed (after its retries)",
    "run.recovered": "the first success after failures",
    "run.succeeded": "every successful run (busy)",
    "connector.auto_paused": "paused after failed runs in a row",
    "connector.stale": "no success within its freshness SLA",
    "sync.error": "not in step with Prefect for a while",
}
# Form input → the config field it sets (and where its errors show).
CONFIG_INPUTS = {
    "webhook": ("url", "secret"),
    "slack": ("url",),
    "email": ("host", "port", "security", "username", "password", "from_addr", "to"),
}
_CONFIG_NAME = {"from_addr": "from"}


def _admin(actor: Actor) -> None:
    require_role(actor, "admin", "manage notification channels")


def _connectors(request: Request) -> list[dict[str, Any]]:
    with unit_of_work(get_settings(request)) as session:
        rows = session.execute(select(Connector.id, Connector.name).order_by(Connector.name))
        return [{"id": i, "name": n} for i, n in rows]


@router.get(BASE, include_in_schema=False)
def list_page(request: Request, actor: UIActor) -> Response:
    _admin(actor)
    with unit_of_work(get_settings(request)) as session:
        rows = channels.list_all(session=session, actor=actor)
    return render(request, "admin/notifications.html", {"channels": rows, "titles": TYPE_TITLES})


def _form_ctx(
    request: Request,
    type_name: str,
    form: dict[str, Any],
    errors: dict[str, str] | None = None,
    channel_id: int | None = None,
    secrets_set: set[str] | None = None,
) -> dict[str, Any]:
    return {
        "type": type_name,
        "types": CHANNEL_TYPES,
        "titles": TYPE_TITLES,
        "form": form,
        "errors": errors or {},
        "channel_id": channel_id,
        "secrets_set": secrets_set or set(),
        "events": NOTIFICATION_EVENTS,
        "event_help": EVENT_HELP,
        "connectors": _connectors(request),
    }


def _empty_form() -> dict[str, Any]:
    from conveyor.domain.vocabulary import DEFAULT_CHANNEL_EVENTS

    return {
        "name": "",
        "events": list(DEFAULT_CHANNEL_EVENTS),
        "scope": "all",
        "tags": "",
        "connector_ids": [],
        "is_active": True,
        "security": "starttls",
    }


@router.get(f"{BASE}/new", include_in_schema=False)
def new_page(request: Request, actor: UIActor, type: str = "webhook") -> Response:
    _admin(actor)
    type_name = type if type in CHANNEL_TYPES else "webhook"
    return render(
        request, "admin/notification_form.html", _form_ctx(request, type_name, _empty_form())
    )


def _fields(
    type_name: str,
    values: dict[str, str],
    events: list[str],
    scope: str,
    tags: str,
    connector_ids: list[int],
    is_active: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the API body from the form, the form as entered); blank secrets are left out."""
    secret_inputs = {"secret", "password"} | ({"url"} if type_name == "slack" else set())
    config: dict[str, Any] = {}
    for name in CONFIG_INPUTS[type_name]:
        value = values.get(name, "").strip()
        if not value:
            continue
        key = _CONFIG_NAME.get(name, name)
        if name == "to":
            config[key] = [
                a.strip()
                for a in value.replace(";", ",").replace("\n", ",").split(",")
                if a.strip()
            ]
        elif name == "port":
            config[key] = int(value) if value.isdigit() else value
        else:
            config[key] = value
    body: dict[str, Any] = {
        "config": config,
        "events": events,
        "connector_ids": connector_ids if scope == "connectors" else None,
        "tags": [t.strip() for t in tags.split(",") if t.strip()] if scope == "tags" else None,
        "is_active": is_active,
    }
    form = {
        **{k: v for k, v in values.items() if k not in secret_inputs},
        "events": events,
        "scope": scope,
        "tags": tags,
        "connector_ids": connector_ids,
        "is_active": is_active,
    }
    return body, form


def _errors(problems: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    back = {v: k for k, v in _CONFIG_NAME.items()}
    for p in problems:
        parts = p.loc.split(".")
        if parts[0] == "config" and len(parts) > 1:
            key = back.get(parts[1], parts[1])
        elif parts[0] in ("events", "tags", "connector_ids", "name", "type"):
            key = parts[0]
        else:
            key = "form"
        out.setdefault(key, p.reason)
    return out


Text = Annotated[str, Form()]


@router.post(f"{BASE}/new", include_in_schema=False)
def create(
    request: Request,
    actor: UIActor,
    type: Text = "webhook",
    name: Text = "",
    url: Text = "",
    secret: Text = "",
    host: Text = "",
    port: Text = "",
    security: Text = "starttls",
    username: Text = "",
    password: Text = "",
    from_addr: Text = "",
    to: Text = "",
    events: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    scope: Text = "all",
    tags: Text = "",
    connector_ids: Annotated[list[int], Form()] = [],  # noqa: B006
    is_active: Annotated[bool, Form()] = False,
) -> Response:
    _admin(actor)
    type_name = type if type in CHANNEL_TYPES else "webhook"
    values = dict(
        url=url,
        secret=secret,
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_addr=from_addr,
        to=to,
    )
    body, form = _fields(type_name, values, events, scope, tags, connector_ids, is_active)
    form["name"] = name
    settings = get_settings(request)
    try:
        data = ChannelCreate(name=name.strip(), type=type_name, **body)
        with unit_of_work(settings) as session:
            box = request.app.state.secret_box
            channel = channels.create(
                data, session=session, actor=actor, box=box, settings=settings
            )
            cid = channel.id
    except ValidationError as exc:
        errors = _errors(pydantic_problems(exc))
    except ValidationFailed as exc:
        errors = _errors(exc.problems)
    except Conflict as exc:
        errors = {"name": exc.reason}
    else:
        flash(request, f"Channel '{name.strip()}' created. Send a test to check it arrives.")
        return redirect(request, f"{BASE}/{cid}")
    ctx = _form_ctx(request, type_name, form, errors)
    return render(request, "admin/notification_form.html", ctx, status_code=422)


@router.get(BASE + "/{channel_id:int}", include_in_schema=False)
def edit_page(request: Request, channel_id: Id, actor: UIActor) -> Response:
    _admin(actor)
    with unit_of_work(get_settings(request)) as session:
        out = channels.read(channel_id, session=session, actor=actor)
    config = dict(out.config)
    form: dict[str, Any] = {
        "name": out.name,
        "url": config.get("url", "") if out.type == "webhook" else "",
        "host": config.get("host", ""),
        "port": config.get("port", "") or "",
        "security": config.get("security", "starttls"),
        "username": config.get("username", ""),
        "from_addr": config.get("from", ""),
        "to": ", ".join(config.get("to", [])),
        "events": out.events,
        "scope": "connectors"
        if out.connector_ids is not None
        else ("tags" if out.tags is not None else "all"),
        "tags": ", ".join(out.tags or []),
        "connector_ids": out.connector_ids or [],
        "is_active": out.is_active,
    }
    secrets_set = {k for k in ("secret", "password", "url") if config.get(k) == "********"}
    ctx = _form_ctx(request, out.type, form, channel_id=channel_id, secrets_set=secrets_set)
    ctx["channel"] = out
    return render(request, "admin/notification_form.html", ctx)


@router.post(BASE + "/{channel_id:int}", include_in_schema=False)
def save(
    request: Request,
    channel_id: Id,
    actor: UIActor,
    name: Text = "",
    url: Text = "",
    secret: Text = "",
    host: Text = "",
    port: Text = "",
    security: Text = "starttls",
    username: Text = "",
    password: Text = "",
    from_addr: Text = "",
    to: Text = "",
    events: Annotated[list[str], Form()] = [],  # noqa: B006
    scope: Text = "all",
    tags: Text = "",
    connector_ids: Annotated[list[int], Form()] = [],  # noqa: B006
    is_active: Annotated[bool, Form()] = False,
) -> Response:
    _admin(actor)
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        type_name = channels.get(channel_id, session=session).type
    values = dict(
        url=url,
        secret=secret,
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_addr=from_addr,
        to=to,
    )
    body, form = _fields(type_name, values, events, scope, tags, connector_ids, is_active)
    form["name"] = name
    if type_name == "email":
        # Cleared optional fields are removed (blank secrets are kept, as everywhere).
        for key in ("port", "username"):
            body["config"].setdefault(key, None)
    try:
        data = ChannelPatch(name=name.strip(), **body)
        with unit_of_work(settings) as session:
            box = request.app.state.secret_box
            channels.update(
                channel_id, data, session=session, actor=actor, box=box, settings=settings
            )
    except ValidationError as exc:
        errors = _errors(pydantic_problems(exc))
    except ValidationFailed as exc:
        errors = _errors(exc.problems)
    except Conflict as exc:
        errors = {"name": exc.reason}
    else:
        flash(request, f"Channel '{name.strip()}' saved.")
        return redirect(request, f"{BASE}/{channel_id}")
    ctx = _form_ctx(request, type_name, form, errors, channel_id=channel_id)
    return render(request, "admin/notification_form.html", ctx, status_code=422)


@router.post(BASE + "/{channel_id:int}/delete", include_in_schema=False)
def delete(request: Request, channel_id: Id, actor: UIActor) -> Response:
    _admin(actor)
    with unit_of_work(get_settings(request)) as session:
        name = channels.get(channel_id, session=session).name
        dropped = channels.delete(channel_id, session=session, actor=actor)
    extra = f" ({dropped} undelivered notification(s) dropped)" if dropped else ""
    flash(request, f"Channel '{name}' deleted{extra}.")
    return redirect(request, BASE)


@router.post(BASE + "/{channel_id:int}/test", include_in_schema=False)
def send_test(request: Request, channel_id: Id, actor: UIActor) -> Response:
    _admin(actor)
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        type_name, config, name = channels.test_target(
            channel_id, session=session, actor=actor, box=request.app.state.secret_box
        )
    out = channels.send_test(type_name, config, name, settings=settings)
    if out.ok:
        flash(request, f"Test notification {out.id} {out.message}: it arrived.")
    else:
        flash(request, f"Test notification not delivered: {out.message}", "error")
    return redirect(request, f"{BASE}/{channel_id}")
