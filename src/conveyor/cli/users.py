"""``conveyor users`` and ``conveyor tokens``: accounts and API tokens."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session

from conveyor.cli.common import console, read_stdin_line, settings
from conveyor.db.session import session_scope
from conveyor.domain.models import UserCreate
from conveyor.errors import NotFound, ValidationFailed
from conveyor.pipelines.registry import pydantic_problems
from conveyor.services import users as users_service
from conveyor.services.authz import SYSTEM

users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@users_app.command("create")
def create_user(
    username: str,
    role: str = typer.Option(..., help="admin, editor or viewer"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input"
    ),
) -> None:
    """Create a user (the password is read from stdin, or asked for)."""
    if password_stdin:
        password = read_stdin_line()
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        data = UserCreate(username=username, password=password, role=role)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValidationFailed(pydantic_problems(exc)) from None
    with session_scope(settings().effective_database_url) as session:
        user = users_service.create_user(data, session=session, actor=SYSTEM)
        console.print(f"created {user.role} '{user.username}'")


@users_app.command("list")
def list_users() -> None:
    """List users and their roles."""
    with session_scope(settings().effective_database_url) as session:
        for u in users_service.list_users(session=session):
            console.print(f"{u.username}\t{u.role}\t{'active' if u.is_active else 'disabled'}")


def _user_id(username: str, session: Session) -> int:
    user = users_service.get_by_username(username, session=session)
    if user is None:
        raise NotFound(f"user '{username}' does not exist", hint="see `conveyor users list`")
    return user.id


@users_app.command("set-password")
def set_password(
    username: str,
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the new password from standard input"
    ),
) -> None:
    """Set USERNAME's password; their logins end and their API tokens are revoked."""
    if password_stdin:
        password = read_stdin_line()
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    with session_scope(settings().effective_database_url) as session:
        ended = users_service.reset_password(
            _user_id(username, session), password, session=session, actor=SYSTEM
        )
    console.print(
        f"password set for '{username}'; {ended.sessions} login(s) ended, "
        f"{ended.tokens} token(s) revoked"
    )


@users_app.command("disable")
def disable_user(username: str) -> None:
    """Stop USERNAME logging in; their logins end and their API tokens are revoked."""
    with session_scope(settings().effective_database_url) as session:
        users_service.set_active(_user_id(username, session), False, session=session, actor=SYSTEM)
    console.print(f"disabled '{username}'")


@users_app.command("enable")
def enable_user(username: str) -> None:
    """Let a disabled USERNAME log in again (their old tokens stay revoked)."""
    with session_scope(settings().effective_database_url) as session:
        users_service.set_active(_user_id(username, session), True, session=session, actor=SYSTEM)
    console.print(f"enabled '{username}'")


@users_app.command("delete")
def delete_user(
    username: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask to confirm")
) -> None:
    """Delete USERNAME with their logins and tokens; their connectors are kept, unowned."""
    if not yes:
        typer.confirm(f"Delete user '{username}'?", abort=True)
    with session_scope(settings().effective_database_url) as session:
        users_service.delete_user(_user_id(username, session), session=session, actor=SYSTEM)
    console.print(f"deleted '{username}' (their connectors are kept, with no owner)")


@tokens_app.command("create")
def create_token(
    username: str, name: str = typer.Option("cli", "--name", help="A label for the token")
) -> None:
    """Create an API token for USERNAME; prints only the token (shown once)."""
    with session_scope(settings().effective_database_url) as session:
        _row, token = users_service.create_token(username, name, session=session, actor=SYSTEM)
    sys.stdout.write(token + "\n")
