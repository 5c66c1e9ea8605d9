"""/deployments: connectors as code over HTTP (admins only) — export, validate, plan, apply.

Files travel in the request body as ``{"files": {"orders.yaml": "<YAML text>"}}``. Secret
references (``${ENV_VAR}``) resolve from the server's environment, as with the CLI on the
server. Relative paths need ``base_dir``: the server-side directory they refer to.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from conveyor.deployments_io import (
    LoadedDirectory,
    load_files,
    make_plan,
    render_export,
)
from conveyor.deployments_io.apply import execute
from conveyor.services.authz import Actor, require_role
from conveyor.settings import Settings
from conveyor.web.deps import BoxDep, CurrentActor, SettingsDep, unit_of_work

router = APIRouter(prefix="/deployments", tags=["deployments"])

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.ya?ml$")
# Fixed timestamp inside zips, so the same database gives the same archive bytes.
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


class FilesIn(BaseModel):
    """Deployment files sent to the server."""

    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(
        description="File name -> YAML text",
        json_schema_extra={"propertyNames": {"pattern": _FILE_NAME.pattern}},
    )
    base_dir: str | None = Field(
        default=None, description="Server-side directory that relative paths refer to"
    )

    @field_validator("files")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _FILE_NAME.match(name):
                raise ValueError(f"'{name}' is not a plain *.yaml file name")
        return value


class ValidateIn(FilesIn):
    check_env: StrictBool = Field(
        default=True, description="Require ${ENV_VAR} references to be set"
    )


class PlanIn(FilesIn):
    prune: StrictBool = False
    force: StrictBool = False


class Problem(BaseModel):
    loc: str
    reason: str


class ValidateOut(BaseModel):
    valid: bool
    files: int
    problems: list[Problem]


def _admin(actor: Actor, doing: str) -> None:
    require_role(actor, "admin", doing)


def _load(
    body: FilesIn, *, check_env: bool = True, settings: Settings | None = None
) -> LoadedDirectory:
    base = Path(body.base_dir) if body.base_dir else None
    return load_files(
        body.files, base_dir=base, check_env=check_env, strict=False, settings=settings
    )


@router.get(
    "/export",
    summary="Export connectors as deployment files (JSON map, or a zip)",
    responses={200: {"content": {"application/zip": {}}}},
)
def export(
    settings: SettingsDep,
    actor: CurrentActor,
    format: Literal["json", "zip"] = Query("json", description="json: {files: {...}}; zip"),
    name: list[str] = Query([], description="Only these connectors"),
    tag: list[str] = Query([], description="Only connectors with one of these tags"),
) -> Any:
    with unit_of_work(settings) as session:
        _admin(actor, "export deployment files")
        files, env_vars = render_export(session, settings, names=name, tags=tag)
        if format == "json":
            return {"files": files, "env_vars": env_vars}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for file_name, text in files.items():
                zf.writestr(zipfile.ZipInfo(file_name, date_time=_ZIP_TIME), text)
        return Response(
            buf.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="deployments.zip"'},
        )


@router.post("/validate", response_model=ValidateOut, summary="Check deployment files")
def validate(body: ValidateIn, settings: SettingsDep, actor: CurrentActor) -> ValidateOut:
    """Every problem at once, each with file:line:col; nothing is written."""
    _admin(actor, "validate deployment files")
    loaded = _load(body, check_env=body.check_env, settings=settings)
    return ValidateOut(
        valid=not loaded.problems,
        files=len(body.files),
        problems=[Problem(loc=p.loc, reason=p.reason) for p in loaded.problems],
    )


@router.post("/plan", summary="What applying these files would change (reads only)")
def plan(body: PlanIn, settings: SettingsDep, box: BoxDep, actor: CurrentActor) -> dict[str, Any]:
    with unit_of_work(settings) as session:
        _admin(actor, "plan deployment files")
        loaded = _load(body, settings=settings)
        the_plan = make_plan(
            loaded, session=session, box=box, settings=settings, prune=body.prune, force=body.force
        )
        session.rollback()  # a plan never writes
        return the_plan.to_dict()


@router.post("/apply", summary="Apply deployment files: one transaction, all or nothing")
def apply(body: PlanIn, settings: SettingsDep, box: BoxDep, actor: CurrentActor) -> dict[str, Any]:
    with unit_of_work(settings) as session:
        _admin(actor, "apply deployment files")
        loaded = _load(body, settings=settings)
        the_plan = make_plan(
            loaded, session=session, box=box, settings=settings, prune=body.prune, force=body.force
        )
        result = execute(the_plan, session=session, box=box, actor=actor, settings=settings)
        return result.to_dict()
