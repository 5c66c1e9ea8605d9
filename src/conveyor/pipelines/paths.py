"""Which local paths a connector may touch: inside the allowed roots, never Conveyor's own.

The allowed roots are ``CONVEYOR_HOME/data`` plus the folders an admin lists in
``CONVEYOR_ALLOWED_PATHS``. A path is judged after resolving it (``~`` expanded, symlinks
followed, ``..`` resolved; a path that does not exist yet by its deepest existing parent).
Whatever the roots, Conveyor's home (all of it but ``data/``), its database file and its key
are never reachable, and neither is a folder that contains one of them.

Checked when a config is saved (``registry.validate_config``) and again where it is used:
each run and check (``ConveyorType.confine``), every file a filesystem source lists or reads
(``inside``), every file a transfer writes, and the DuckDB destination file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ValidationFailed

if TYPE_CHECKING:
    from conveyor.settings import Settings


def resolve(path: str | os.PathLike[str]) -> Path:
    """The real absolute path: ``~`` expanded, symlinks followed, ``..`` resolved; the
    part below the deepest existing parent is taken as written."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def is_within(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or below it (both already resolved)."""
    return path == root or root in path.parents


@dataclass(frozen=True)
class Policy:
    """The allowed roots and what stays out of reach inside them, all resolved."""

    roots: tuple[Path, ...]
    home: Path
    data: Path
    protected: tuple[tuple[Path, str], ...]  # (path, what it is) never reachable

    def describe_roots(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def refusal(self, path: Path) -> str | None:
        """Why ``path`` (resolved) may not be used, or None when it may."""
        if not any(is_within(path, r) for r in self.roots):
            return f"is outside the allowed roots ({self.describe_roots()})"
        for item, what in self.protected:
            if is_within(path, item):
                return f"is {what} ({item}), which connectors never reach"
            if is_within(item, path):
                return f"contains {what} ({item}), which connectors never reach"
        if is_within(path, self.home) and not is_within(path, self.data):
            return f"is inside Conveyor's home ({self.home}), which connectors never reach"
        if is_within(self.home, path):
            return f"contains Conveyor's home ({self.home}), which connectors never reach"
        return None


def policy(settings: Settings) -> Policy:
    """The allowed roots and protected files of ``settings``."""
    home = resolve(settings.home)
    data = resolve(settings.data_dir)
    roots = [data] + [resolve(p) for p in settings.allowed_paths]
    protected: list[tuple[Path, str]] = [(resolve(home / "secret.key"), "Conveyor's key file")]
    db = database_file(settings.effective_database_url)
    if db is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            protected.append((resolve(str(db) + suffix), "Conveyor's database"))
    return Policy(tuple(dict.fromkeys(roots)), home, data, tuple(protected))


def check(value: str | os.PathLike[str], *, field: str, settings: Settings) -> Path:
    """The resolved path, or ValidationFailed naming ``field`` when it is not allowed."""
    return check_resolved(resolve(value), shown=str(value), field=field, rules=policy(settings))


def check_resolved(path: Path, *, shown: str, field: str, rules: Policy) -> Path:
    why = rules.refusal(path)
    if why is not None:
        where = shown if shown == str(path) else f"{shown} (resolves to {path})"
        raise ValidationFailed.field(field, f"{where} {why}")
    return path


def inside(value: str | os.PathLike[str], base: Path, *, field: str, what: str) -> Path:
    """``value`` resolved, which must stay inside the folder ``base`` (resolved already):
    a file a pattern matched, or one a transfer writes. Symlinks pointing out are refused."""
    path = resolve(value)
    if not is_within(path, base):
        raise ValidationFailed.field(
            field, f"{what} {value} resolves to {path}, outside the folder {base}"
        )
    return path


def database_file(url: str) -> Path | None:
    """The local file of a ``sqlite://`` or ``duckdb://`` URL (None: not a local file)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return None
    if u.get_backend_name() not in ("sqlite", "duckdb"):
        return None
    db = u.database or ""
    if db.startswith("file:"):  # an SQLite URI filename: file:/path?mode=ro
        from urllib.parse import unquote, urlsplit

        db = unquote(urlsplit(db).path)
    if db in ("", ":memory:") or db.startswith(":memory:") or db.startswith("md:"):
        return None
    return Path(db)


def confine_paths(found: list[tuple[str, str]], *, settings: Settings, loc: str = "config") -> None:
    """Raise ValidationFailed (every bad field) unless each (field, path) is allowed.

    A type says which paths its config touches (``ConveyorType.local_paths``)."""
    rules = policy(settings)
    problems = []
    for name, value in found:
        field = f"{loc}.{name}" if loc else name
        try:
            check_resolved(resolve(value), shown=value, field=field, rules=rules)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValidationFailed(problems)
