"""``conveyor deployments``: connectors as code (export, validate, plan, apply, prefect-yaml).

Exit codes: 0 success (``plan``: no changes), 2 ``plan`` has changes, 3 invalid files
(every problem on stderr as ``file:line:col: reason``), other codes as for every command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.cli.common import (
    console,
    err_console,
    exit_code,
    secret_box,
    settings,
)
from conveyor.db.session import session_scope
from conveyor.deployments_io import (
    ApplyResult,
    Plan,
    export_directory,
    json_schema,
    load_directory,
    make_plan,
    render_prefect_yaml,
)
from conveyor.deployments_io.apply import execute
from conveyor.errors import Conflict, ValidationFailed
from conveyor.services.authz import Actor

app = typer.Typer(
    help="Connectors as code: deployment files in a directory (export, plan, apply).",
    no_args_is_help=True,
)

# Audit entries of changes made from files name this actor.
FILE_ACTOR = Actor(username="deployments", role="admin")
EXIT_CHANGES = 2

DirArg = typer.Argument(..., help="Directory of deployment files", file_okay=False)
PruneOpt = typer.Option(
    False, "--prune", help="Also delete file-managed connectors that no file names any more"
)
ForceOpt = typer.Option(
    False, "--force", help="Overwrite connectors changed outside the files since the last apply"
)


def _fail(exc: ValidationFailed) -> typer.Exit:
    """Every problem on its own stderr line, then the exit code for invalid input."""
    for problem in exc.problems:
        err_console.print(f"error: {problem}", markup=False, soft_wrap=True)
    if exc.hint:
        err_console.print(exc.hint, markup=False, soft_wrap=True)
    return typer.Exit(exit_code(exc))


@app.command()
def export(
    directory: Path = DirArg,
    name: list[str] = typer.Option([], "--name", help="Only this connector (repeatable)"),
    tag: list[str] = typer.Option([], "--tag", help="Only connectors with this tag (repeatable)"),
    prune: bool = typer.Option(False, "--prune", help="Remove other deployment files in DIR"),
) -> None:
    """Write every connector (or a selection) to DIR, one file each, without secrets."""
    s = settings()
    with console.status("exporting connectors..."), session_scope(s.effective_database_url) as db:
        result = export_directory(
            directory, session=db, settings=s, names=name, tags=tag, prune=prune
        )
    table = Table(title=f"export to {directory}", show_header=True)
    table.add_column("files")
    table.add_column("count", justify="right")
    table.add_row("written (new or changed)", str(len(result.written)))
    table.add_row("unchanged", str(len(result.unchanged)))
    table.add_row(
        "removed" if prune else "stale (not written by this export)", str(len(result.stale))
    )
    console.print(table)
    if result.stale and not prune:
        console.print("stale files: " + ", ".join(result.stale) + " (--prune removes them)")
    if result.env_vars:
        console.print("apply needs these environment variables (secrets are never exported):")
        for var in result.env_vars:
            console.print(f"  {var}")


@app.command()
def validate(
    directory: Path = DirArg,
    no_env: bool = typer.Option(
        False, "--no-env", help="Do not require the ${ENV_VAR} references to be set"
    ),
    against_db: bool = typer.Option(
        False, "--db", help="Also check references against the database (as plan does)"
    ),
) -> None:
    """Check every file (format, types, cron, secrets, clashes); all problems at once."""
    s = settings()  # the work pools job variables and destinations are checked against
    loaded = load_directory(directory, check_env=not no_env, strict=False, settings=s)
    problems = list(loaded.problems)
    if not problems and against_db:
        try:
            with session_scope(s.effective_database_url) as db:
                make_plan(loaded, session=db, box=secret_box(s), settings=s)
        except ValidationFailed as exc:
            problems = exc.problems
    if problems:
        raise _fail(ValidationFailed(problems, hint=f"{len(problems)} problem(s)"))
    console.print(f"{len(loaded.files)} deployment file(s) in {directory} are valid")


@app.command()
def plan(
    directory: Path = DirArg,
    prune: bool = PruneOpt,
    force: bool = ForceOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON"),
) -> None:
    """Show what apply would change. Exit code 0: no changes; 2: changes."""
    s = settings()
    try:
        loaded = load_directory(directory)
        with session_scope(s.effective_database_url) as db:
            the_plan = make_plan(
                loaded, session=db, box=secret_box(s), settings=s, prune=prune, force=force
            )
    except ValidationFailed as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(the_plan.to_dict(), default=str))
    else:
        print_plan(the_plan)
    raise typer.Exit(EXIT_CHANGES if the_plan.has_changes else 0)


@app.command()
def apply(
    directory: Path = DirArg,
    prune: bool = PruneOpt,
    force: bool = ForceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Apply DIR in one transaction: all or nothing, idempotent."""
    s = settings()
    box = secret_box(s)
    try:
        loaded = load_directory(directory)
        # Plan in a short transaction of its own: on SQLite a write transaction would
        # hold the lock while the user reads the plan.
        with session_scope(s.effective_database_url) as db:
            shown = make_plan(loaded, session=db, box=box, settings=s, prune=prune, force=force)
    except ValidationFailed as exc:
        raise _fail(exc) from None
    print_plan(shown)
    if shown.has_changes and not yes:
        if not sys.stdin.isatty():
            raise Conflict("apply needs confirmation", hint="pass --yes to apply without asking")
        typer.confirm("Apply these changes?", abort=True)
    try:
        with session_scope(s.effective_database_url) as db, _progress() as bar:
            task = bar.add_task("applying", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=what[:40])

            the_plan = make_plan(loaded, session=db, box=box, settings=s, prune=prune, force=force)
            if the_plan.to_dict() != shown.to_dict():
                raise Conflict(
                    "the database changed since the plan was shown",
                    hint="run apply again to see the new plan",
                )
            result = execute(
                the_plan, session=db, box=box, actor=FILE_ACTOR, settings=s, progress=progress
            )
    except ValidationFailed as exc:
        raise _fail(exc) from None
    print_result(result)


@app.command("prefect-yaml")
def prefect_yaml(
    directory: Path = DirArg,
    output: Path = typer.Option(
        Path("prefect.yaml"), "-o", "--output", help="Where to write (- for stdout)"
    ),
) -> None:
    """Write a prefect.yaml for `prefect deploy --all` (local development, no reconciler)."""
    try:
        loaded = load_directory(directory, check_env=False)
    except ValidationFailed as exc:
        raise _fail(exc) from None
    text = render_prefect_yaml(loaded, settings())
    if str(output) == "-":
        sys.stdout.write(text)
        return
    output.write_text(text)
    console.print(f"wrote {len(loaded.files)} deployment(s) to {output}")
    console.print(f"deploy with: prefect deploy --all --prefect-file {output}")


@app.command()
def schema(
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to this file"),
) -> None:
    """Print the JSON schema of a deployment file (for editors and CI)."""
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


# --- output ----------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


_STYLE = {
    "create": "green",
    "update": "yellow",
    "delete": "red",
    "drift": "magenta",
    "adopt": "cyan",
    "unchanged": "dim",
}


def print_plan(the_plan: Plan) -> None:
    """The plan as a table (changed connectors with their field changes) and a summary."""
    for e in the_plan.endpoints:
        if e.action != "unchanged":
            what = "; ".join(c.describe() for c in e.changes) if e.action == "update" else ""
            console.print(f"[{_STYLE[e.action]}]{e.action:9}[/] {e.kind} '{e.name}' {what}")
    table = Table(show_header=True, title="connectors")
    for col in ("action", "connector", "id", "file", "changes"):
        table.add_column(col, overflow="fold")
    shown = 0
    for c in the_plan.connectors:
        if c.action == "unchanged" and not c.id_changed:
            continue
        shown += 1
        changes = [ch.describe() for ch in c.changes] if c.action != "create" else []
        if c.action == "drift":
            changes.insert(0, "changed outside the files since the last apply: kept (--force)")
        elif c.drifted:
            changes.insert(0, "overwrites changes made outside the files (--force)")
        if c.action == "adopt" or (c.action == "update" and c.managed_by != "file"):
            changes.append(f"managed_by: {c.managed_by} -> file")
        table.add_row(
            f"[{_STYLE[c.action]}]{c.action}[/]",
            c.name,
            c.describe_id(),
            c.file or "",
            "\n".join(changes),
        )
    if shown:
        console.print(table)
    counts = the_plan.counts()
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "no files"
    ids = the_plan.id_changes()
    if ids:
        summary += f"; {len(ids)} id(s) differ from the files"
    verdict = "changes" if the_plan.has_changes else "no changes"
    console.print(f"plan: {verdict} ({summary})")


def print_result(result: ApplyResult) -> None:
    table = Table(title="applied", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, n in result.counts().items():
        table.add_row(what.replace("_", " "), str(n))
    console.print(table)
    for name in result.kept_drift:
        console.print(f"[magenta]kept[/] '{name}': changed outside the files (--force overwrites)")
    changed = [
        c
        for c in result.plan.connectors
        if c.file_id is not None and result.ids.get(c.name) not in (None, c.file_id)
    ]
    for c in changed:
        console.print(f"id of '{c.name}': {c.file_id} in {c.file} -> {result.ids[c.name]} here")
    console.print("nothing changed" if not result.changed else "done; the reconciler syncs Prefect")
