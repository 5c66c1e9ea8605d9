"""Secret fields: encrypted at rest (MultiFernet, newest key first), masked everywhere else."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

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

    def encrypt_config(
        self, config: dict[str, Any], secret_fields: Iterable[str]
    ) -> dict[str, Any]:
        out = dict(config)
        for name in secret_fields:
            value = out.get(name)
            if isinstance(value, str) and value and not is_encrypted(value):
                out[name] = self.encrypt(value)
        return out

    def decrypt_config(
        self, config: dict[str, Any], secret_fields: Iterable[str]
    ) -> dict[str, Any]:
        out = dict(config)
        for name in secret_fields:
            value = out.get(name)
            if isinstance(value, str):
                out[name] = self.decrypt(value)
        return out

    def rotate_config(self, config: dict[str, Any], secret_fields: Iterable[str]) -> dict[str, Any]:
        out = dict(config)
        for name in secret_fields:
            value = out.get(name)
            if isinstance(value, str) and value:
                out[name] = self.rotate(value)
        return out


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


def mask_config(config: dict[str, Any] | None, secret_fields: Iterable[str]) -> dict[str, Any]:
    """A copy with every set secret field replaced by ``********``."""
    out = dict(config or {})
    for name in secret_fields:
        if out.get(name) not in (None, ""):
            out[name] = MASK
    return out


def keep_unchanged_secrets(
    new: dict[str, Any], old: dict[str, Any], secret_fields: Iterable[str]
) -> dict[str, Any]:
    """Write-only semantics: a secret left out (or sent back masked) keeps its old value."""
    out = dict(new)
    for name in secret_fields:
        if name not in out or out[name] == MASK:
            if name in old:
                out[name] = old[name]
            else:
                out.pop(name, None)
    return out


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
