"""Re-encrypt every stored secret under the newest key (``conveyor secrets rotate``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Destination, Source
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import SecretBox


def rotate_all(*, session: Session, box: SecretBox) -> int:
    """Returns how many rows held secrets and were re-encrypted."""
    count = 0
    endpoints: list[tuple[Kind, Source | Destination]] = [
        *(("source", s) for s in session.scalars(select(Source))),
        *(("destination", d) for d in session.scalars(select(Destination))),
    ]
    for kind, obj in endpoints:
        secrets = get_type(kind, obj.type).secret_fields
        if any(obj.config.get(f) for f in secrets):
            obj.config = box.rotate_config(obj.config, secrets)
            count += 1
    for c in session.scalars(select(Connector)):
        src = get_type("source", c.source.type).secret_fields
        dst = get_type("destination", c.destination.type).secret_fields
        changed = False
        if any(c.source_config_override.get(f) for f in src):
            c.source_config_override = box.rotate_config(c.source_config_override, src)
            changed = True
        if any(c.destination_config_override.get(f) for f in dst):
            c.destination_config_override = box.rotate_config(c.destination_config_override, dst)
            changed = True
        count += changed
    session.flush()
    return count
