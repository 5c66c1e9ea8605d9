"""Who may do what: viewers read; editors create and change their own connectors, and
create sources and destinations; admins change anything and manage users and tokens."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.errors import PermissionDenied

ROLES = ("viewer", "editor", "admin")


@dataclass(frozen=True)
class Actor:
    """The user (or system component) a change is made on behalf of."""

    username: str
    role: str
    user_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


SYSTEM = Actor(username="system", role="admin")


def require_role(actor: Actor, role: str, doing: str) -> None:
    """Refuse unless ``actor`` has at least ``role``."""
    if ROLES.index(actor.role) < ROLES.index(role):
        raise PermissionDenied(f"{actor.role}s cannot {doing}", hint=f"needs the {role} role")


def require_owner_or_admin(actor: Actor, owner_id: int | None, doing: str) -> None:
    """Editors may change only the connectors they own; admins any."""
    require_role(actor, "editor", doing)
    if not actor.is_admin and owner_id != actor.user_id:
        raise PermissionDenied(
            f"only the connector's owner or an admin can {doing}",
            hint="ask an admin, or the user who created it",
        )
