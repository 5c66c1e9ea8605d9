"""Where a connector's data landed, for the connector and run pages: the destination
type's ``landing`` (pipelines/contract.py) for the tables a run loaded.

The destination's config is decrypted in memory only to read where it points (host,
file, schema); a ``Landing`` never carries a secret (each type leaves passwords out).
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.db.models import Connector
from conveyor.domain.vocabulary import merged_config
from conveyor.pipelines.contract import Landing, TypeContext
from conveyor.pipelines.registry import get_type, validate_config
from conveyor.secrets import SecretBox
from conveyor.settings import Settings

log = logging.getLogger("conveyor.web")


def loaded_tables(table_stats: dict[str, Any] | None) -> list[str]:
    """The tables a run loaded (dlt's nested tables and its own left out)."""
    return sorted(t for t in (table_stats or {}) if not t.startswith("_dlt"))


def landing(c: Connector, settings: Settings, tables: list[str]) -> Landing | None:
    """Where ``c`` lands ``tables``; None when its destination cannot say (a config that no
    longer validates, a key that cannot decrypt it): the page shows nothing rather than fail."""
    try:
        info = get_type("destination", c.destination.type)
        plain = SecretBox(settings.secret_keys()).decrypt_config(
            merged_config(c.destination.config, c.destination_config_override),
            info.secret_fields,
        )
        config = validate_config("destination", info.name, plain, loc="destination")
        context = TypeContext(settings=settings, connector_id=c.id, state_key=c.state_key)
        return info.landing(config, context, tables)  # type: ignore[attr-defined,no-any-return]
    except Exception as exc:  # a page must render whatever the stored config is
        log.warning("connector %s: where its data lands is unknown: %s", c.id, exc)
        return None
