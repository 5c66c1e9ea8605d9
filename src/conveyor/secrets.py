"""Secret fields: encrypted at rest (MultiFernet, newest key first), masked everywhere else."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from conveyor.domain.vocabulary import secret_values as secret_values  # the one rule
from conveyor.errors import ConfigurationError

MASK = "********"
_PREFIX = "fernet:"


class SecretBox:
    """Encrypts and decrypts secret field values with the configured keys."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        fernets = [Fernet(k) for k in keys]
        if not fernets:
            raise ConfigurationError("no secret key configured")
        self._multi = MultiFernet(fernets)

    def encrypt(self, plain: str) -> str:
        return _PREFIX + self._multi.encrypt(plain.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            return stored
        try:
            return self._multi.decrypt(stored[len(_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with the configured keys",
                hint="CONVEYOR_SECRET_KEY must still list the key it was encrypted with",
            ) from exc

    def rotate(self, stored: str) -> str:
        """Re-encrypt under the newest key (a no-op for values already under it)."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            return _PREFIX + self._multi.rotate(stored[len(_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with the configured keys",
                hint="CONVEYOR_SECRET_KEY must still list the key it was encrypted with",
            ) from exc

    # --- whole configs -------------------------------------------------------------
    # A secret field holds a string, or a mapping whose values are each secret (a REST
    # type's headers: the names stay readable, the values never).

    def encrypt_config(
        self, config: dict[str, Any], secret_fields: Iterable[str]
    ) -> dict[str, Any]:
        def one(value: str) -> str:
            return self.encrypt(value) if value and not is_encrypted(value) else value

        return _map_secrets(config, secret_fields, one)

    def decrypt_config(
        self, config: dict[str, Any], secret_fields: Iterable[str]
    ) -> dict[str, Any]:
        return _map_secrets(config, secret_fields, self.decrypt)

    def rotate_config(self, config: dict[str, Any], secret_fields: Iterable[str]) -> dict[str, Any]:
        return _map_secrets(config, secret_fields, lambda v: self.rotate(v) if v else v)


def _map_secrets(
    config: dict[str, Any], secret_fields: Iterable[str], fn: Callable[[str], str]
) -> dict[str, Any]:
    """A copy with ``fn`` applied to every string held by a secret field."""
    out = dict(config)
    for name in secret_fields:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
        elif isinstance(value, dict):
            out[name] = {k: fn(v) if isinstance(v, str) else v for k, v in value.items()}
    return out


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


def mask_config(config: dict[str, Any] | None, secret_fields: Iterable[str]) -> dict[str, Any]:
    """A copy with every set secret value replaced by ``********``."""
    return _map_secrets(dict(config or {}), secret_fields, lambda v: MASK if v else v)


def keep_unchanged_secrets(
    new: dict[str, Any],
    old: dict[str, Any],
    secret_fields: Iterable[str],
    connection_fields: Iterable[str] = (),
) -> dict[str, Any]:
    """Write-only semantics: a secret left out (or sent back masked) keeps its old value —
    unless a field in ``connection_fields`` changed: a stored secret is only ever sent to
    the target it was stored with, so moving the target drops the secrets not entered again.
    """
    keep = not moved_fields(new, old, connection_fields, secret_fields)
    out = dict(new)
    for name in secret_fields:
        value = out.get(name, MASK)
        if isinstance(value, dict):
            # Header values sent back masked keep theirs; a new name needs its value.
            stored = old.get(name)
            before: dict[str, Any] = stored if keep and isinstance(stored, dict) else {}
            out[name] = {
                k: before[k] if v == MASK else v
                for k, v in value.items()
                if v != MASK or k in before
            }
        elif value == MASK:
            if keep and name in old:
                out[name] = old[name]
            else:
                out.pop(name, None)
    return out


def moved_fields(
    new: dict[str, Any],
    old: dict[str, Any],
    connection_fields: Iterable[str],
    secret_fields: Iterable[str] = (),
) -> list[str]:
    """The connection fields whose value differs between ``old`` and ``new``.

    A field missing from ``new`` counts as unchanged (a patch sends what changes); one that
    is also secret (a connection string) counts as unchanged when sent back masked.
    """
    secrets = set(secret_fields)
    moved = []
    for name in sorted(set(connection_fields)):
        if name not in new:
            continue
        value = new[name]
        if name in secrets and value == MASK:
            continue
        if _norm(value) != _norm(old.get(name)):
            moved.append(name)
    return moved


def _norm(value: Any) -> Any:
    return None if value in ("", None) else str(value)


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)")


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask passwords in URLs and any of ``secrets`` found in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("scheme") + MASK, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


class MaskingFilter(logging.Filter):
    """Masks URL passwords and registered secret values in log records.

    ``install_log_masking()`` applies it to every record at creation, whichever logger
    or handler it goes through (a filter on the root logger alone would miss records
    propagated from child loggers).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def register(self, *values: str | None) -> None:
        self._secrets.update(v for v in values if v and len(v) >= 4)

    def secrets(self) -> tuple[str, ...]:
        """The values registered so far (to mask text that is not a log record)."""
        return tuple(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message, self._secrets)
        if masked != message:
            record.msg, record.args = masked, None
        return True


MASKING_FILTER = MaskingFilter()
_installed = False


def install_log_masking() -> None:
    """Mask every log record of this process (idempotent)."""
    global _installed
    if _installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = base(*args, **kwargs)
        MASKING_FILTER.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
