"""One shape for "what a connector is", from a file or from the database: compared field
by field for ``plan`` and hashed (HMAC, secrets included) for drift detection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from conveyor.db.models import Connector
from conveyor.deployments_io.format import secret_fields
from conveyor.domain.connector_fields import FIELDS, stored_values
from conveyor.domain.vocabulary import stored_deployment_name
from conveyor.pipelines.registry import Kind
from conveyor.secrets import SecretBox
from conveyor.settings import Settings

State = dict[str, Any]
HASH_CONTEXT = b"conveyor-deployments-applied-hash"


@dataclass(frozen=True)
class Secret:
    """A secret value inside a state: compared by value, never shown."""

    value: str

    def __repr__(self) -> str:
        return "Secret(***)"


def config_state(kind: Kind, type_name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """A config with sorted keys, nulls dropped and secret values wrapped."""
    secrets = secret_fields(kind, type_name)
    return {
        k: Secret(v) if k in secrets and isinstance(v, str) else v
        for k, v in sorted((config or {}).items())
        if v is not None
    }


def endpoint_state(kind: Kind, name: str, type_name: str, config: dict[str, Any]) -> State:
    return {"name": name, "type": type_name, "config": config_state(kind, type_name, config)}


def default_deployment_name(deployment_name: str | None, connector_id: int) -> str | None:
    """None when the name is just the default ``connector-<id>``."""
    return stored_deployment_name(connector_id, deployment_name)


def db_state(c: Connector, box: SecretBox) -> State:
    """The connector as stored, secrets decrypted (``with_defaults`` for comparisons)."""
    src_type, dst_type = c.source.type, c.destination.type
    src_secrets = secret_fields("source", src_type)
    dst_secrets = secret_fields("destination", dst_type)
    return {
        "name": c.name,
        "deployment_name": default_deployment_name(c.deployment_name, c.id),
        "source": endpoint_state(
            "source", c.source.name, src_type, box.decrypt_config(c.source.config, src_secrets)
        ),
        "destination": endpoint_state(
            "destination",
            c.destination.name,
            dst_type,
            box.decrypt_config(c.destination.config, dst_secrets),
        ),
        "source_config_override": config_state(
            "source", src_type, box.decrypt_config(c.source_config_override or {}, src_secrets)
        ),
        "destination_config_override": config_state(
            "destination",
            dst_type,
            box.decrypt_config(c.destination_config_override or {}, dst_secrets),
        ),
        **stored_values(c),
    }


def with_defaults(state: State, settings: Settings) -> State:
    """A raw state with fields equal to the setting they follow read as "follow it"."""
    return {**state, **{f.name: f.stored(state[f.name], settings) for f in FIELDS if f.setting}}


def _canonical(state: State) -> bytes:
    def default(o: object) -> object:
        if isinstance(o, Secret):
            return {"secret": o.value}
        raise TypeError(type(o).__name__)

    return json.dumps(state, sort_keys=True, separators=(",", ":"), default=default).encode()


def hash_keys(secret_keys: list[bytes]) -> list[bytes]:
    """HMAC keys derived from the Fernet keys, newest first."""
    return [hmac.new(k, HASH_CONTEXT, hashlib.sha256).digest() for k in secret_keys]


def state_hash(state: State, key: bytes) -> str:
    """HMAC-SHA256 of the canonical state: secrets count, yet the hash reveals none."""
    return hmac.new(key, _canonical(state), hashlib.sha256).hexdigest()


def connector_hash(c: Connector, box: SecretBox, key: bytes) -> str:
    """The hash ``apply`` stores: the connector's raw stored state."""
    return state_hash(db_state(c, box), key)


def is_drifted(c: Connector, box: SecretBox, keys: list[bytes], state: State | None = None) -> bool:
    """Changed (UI, API, SQL) since the last apply? False when never applied.
    ``state``: ``db_state(c, box)`` if the caller has it already."""
    if not c.applied_file_hash:
        return False
    state = state if state is not None else db_state(c, box)
    return not any(hmac.compare_digest(state_hash(state, k), c.applied_file_hash) for k in keys)


# --- differences --------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    """One field that differs; secrets carry no values, only that they changed."""

    field: str
    old: Any
    new: Any
    secret: bool = False

    def describe(self) -> str:
        if self.secret:
            if self.old is None:
                return f"{self.field}: (secret set)"
            if self.new is None:
                return f"{self.field}: (secret removed)"
            return f"{self.field}: (secret changed)"
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        if self.secret:
            return {"field": self.field, "secret": True, "change": self.describe().split(": ")[1]}
        return {"field": self.field, "old": self.old, "new": self.new}


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def diff(old: State | None, new: State, prefix: str = "") -> list[FieldChange]:
    """Every leaf that differs between two states (dicts recurse, lists compare whole)."""
    old = old or {}
    out: list[FieldChange] = []
    for key in sorted(set(old) | set(new), key=_key_order(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff(a, b, path + "."))
        elif a != b:
            secret = isinstance(a, Secret) or isinstance(b, Secret)
            if secret:
                out.append(FieldChange(path, _unwrap(a), _unwrap(b), secret=True))
            else:
                out.append(FieldChange(path, _plain(a), _plain(b)))
    return out


def _key_order(new: State) -> Any:
    order = {k: i for i, k in enumerate(new)}
    return lambda k: (order.get(k, len(order)), k)


def _unwrap(value: Any) -> Any:
    return "***" if isinstance(value, Secret) else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return "***" if isinstance(value, Secret) else value


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config state back to a plain dict (secrets in clear: for writing, in memory)."""
    return {k: v.value if isinstance(v, Secret) else v for k, v in config.items()}
