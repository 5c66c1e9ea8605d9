"""A connector's config overrides of its source and destination: checked against the
endpoint's type (they may change what is copied, never where the endpoint connects), stored
encrypted with unchanged secrets kept, and the placement check of the merged destination
config. ``services/connectors.py`` calls these on create and update.
"""

from __future__ import annotations

from typing import Any

from conveyor.db.models import Connector
from conveyor.domain import vocabulary
from conveyor.errors import ValidationFailed
from conveyor.pipelines.registry import Kind, get_type, validate_config
from conveyor.secrets import SecretBox, keep_unchanged_secrets
from conveyor.services import catalog
from conveyor.settings import Settings


def validate(kind: Kind, endpoint: catalog.Endpoint, override: dict[str, Any], loc: str) -> None:
    """The connector's view of the endpoint — base config plus override — must be valid,
    and the override may change what is copied but never where the endpoint connects."""
    if not isinstance(override, dict):
        raise ValidationFailed.field(loc, "must be an object")
    check_override_fields(kind, endpoint.type, override, loc)
    merged = vocabulary.merged_config(endpoint.config, override)
    validate_config(kind, endpoint.type, merged, loc=loc)


def check_override_fields(kind: Kind, type_name: str, override: dict[str, Any], loc: str) -> None:
    """Refuse an override that sets where the endpoint connects: the endpoint's stored
    secrets are only ever sent to the target they were stored with."""
    problems = get_type(kind, type_name).fixed_in(override, loc)
    if problems:
        raise ValidationFailed(problems)


def encrypt(
    kind: Kind,
    endpoint: catalog.Endpoint,
    override: dict[str, Any],
    box: SecretBox,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The override as stored: secrets encrypted (an unchanged "********" keeps ``old``'s),
    unset keys dropped."""
    secrets = get_type(kind, endpoint.type).secret_fields
    if old is not None:
        override = keep_unchanged_secrets(override, old, secrets)
    return box.encrypt_config({k: v for k, v in override.items() if v is not None}, secrets)


def apply_changed(c: Connector, fields: dict[str, Any], box: SecretBox) -> None:
    """An update's overrides: each one given, or whose endpoint changed, is checked again
    against the (new) endpoint and stored encrypted, secrets left as "********" kept."""
    for kind, key in (
        ("source", "source_config_override"),
        ("destination", "destination_config_override"),
    ):
        endpoint = c.source if kind == "source" else c.destination
        current = getattr(c, key) or {}
        new = fields.get(key, current) if fields.get(key) is not None else current
        if key in fields or f"{kind}_id" in fields:
            secrets = get_type(kind, endpoint.type).secret_fields  # type: ignore[arg-type]
            merged = keep_unchanged_secrets(new, current, secrets)
            validate(kind, endpoint, merged, key)  # type: ignore[arg-type]
            setattr(c, key, encrypt(kind, endpoint, merged, box))  # type: ignore[arg-type]


def check_placement(
    settings: Settings | None, c: Connector, box: SecretBox, *, loc: str = "destination_id"
) -> None:
    """A destination bound to one machine (a DuckDB file) is refused when the connector's
    work pool does not run local processes (``services/placement.py``)."""
    from conveyor.services import placement
    from conveyor.settings import get_settings

    dst = c.destination
    secrets = get_type("destination", dst.type).secret_fields
    merged = vocabulary.merged_config(dst.config or {}, c.destination_config_override or {})
    placement.check(
        settings or get_settings(),
        dst.type,
        box.decrypt_config(merged, secrets),
        c.work_pool_name,
        loc=loc,
        destination_name=dst.name,
    )
