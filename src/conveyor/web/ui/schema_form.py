"""Form fields drawn from a source or destination type's JSON schema, and back again.

Each type's pydantic config model is the only description of its fields: adding a type
to the registry gives it a form here with no UI change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import FieldProblem
from conveyor.pipelines.registry import Kind, get_type

# What to copy belongs to the connector (its form), not to the reusable connection: each
# type declares those fields (``ConveyorType.copy_fields``), and forms leave them out.


def copy_fields(kind: Kind, type_name: str) -> frozenset[str]:
    """The fields of a type that belong to a connector, not to the source itself."""
    return get_type(kind, type_name).copy_fields


# Shown folded under "Advanced settings": sensible defaults that most users keep.
ADVANCED_FIELDS = frozenset(
    {
        "drivername",
        "batch_size",
        "backend",
        "csv_delimiter",
        "encoding",
        "api_key_name",
        "headers",
        "paginator",
        "timeout",
        "file_field_name",
        "additional_fields",
        "content_type",
        "max_retries",
        "use_multipart",
        "mode",
        "method",
        "region_name",
        "endpoint_url",
        "aws_access_key_id",
        "aws_secret_access_key",
        "pkey_passphrase",
    }
)
_WORDS = {
    "aws": "AWS",
    "id": "ID",
    "url": "URL",
    "api": "API",
    "csv": "CSV",
    "pkey": "private key",
    "drivername": "driver name",
}
HELP: dict[str, str] = {
    "connection_string": "A database URL such as postgresql://user:password@host:5432/db "
    "— or leave empty and fill in host and database.",
    "schema": "Schema (namespace) to read from or write into.",
    "path": "A local or NFS directory (or the key prefix inside the bucket).",
    "bucket": "S3 bucket name or s3:// URL; leave empty for a local path.",
    "dataset_name": "Where tables land; by default one per connector.",
    "endpoint_url": "For S3-compatible stores such as MinIO.",
    "base_url": "e.g. https://api.example.com/v1",
    "pkey_path": "Path to a private key file on the worker.",
    "headers": 'JSON object, e.g. {"Accept": "application/json"}',
    "paginator": 'A dlt paginator name or JSON object, e.g. "auto"',
    "additional_fields": "JSON object sent with each upload",
}


def label_for(name: str) -> str:
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


@dataclass
class FormField:
    """One input of a generated form."""

    name: str  # the config key
    input_name: str  # the form field's name (prefix + key)
    label: str
    kind: str  # text | password | integer | number | checkbox | select | url | list | json
    required: bool = False
    options: list[str] = field(default_factory=list)
    nullable: bool = True
    default: Any = None
    help: str | None = None
    value: str = ""
    checked: bool = False
    is_set: bool = False  # secrets: a value is stored (never shown)
    advanced: bool = False

    @property
    def dom_id(self) -> str:
        return "f-" + self.input_name.replace(".", "-").replace("_", "-")


def _kind(prop: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """(input kind, nullable, enum options) for a JSON-schema property."""
    if prop.get("secret") or prop.get("writeOnly"):
        # A mapping of secrets (headers) is edited as JSON whose values arrive masked.
        return ("json" if prop.get("type") == "object" else "password"), True, []
    variants = prop.get("anyOf") or [prop]
    nullable = any(v.get("type") == "null" for v in variants)
    real = [v for v in variants if v.get("type") != "null"]
    if len(real) == 1:
        v = real[0]
        if "enum" in v:
            return "select", nullable, [str(x) for x in v["enum"]]
        t = v.get("type")
        if t == "boolean":
            return "checkbox", nullable, []
        if t in ("integer", "number"):
            return str(t), nullable, []
        if t == "string":
            return ("url" if v.get("format") == "uri" else "text"), nullable, []
        if t == "array" and v.get("items", {}).get("type") == "string":
            return "list", nullable, []
        if t is None and "$ref" not in v:
            return "text", True, []
        return "json", nullable, []
    types = {v.get("type") for v in real}
    if types == {"string", "array"}:
        return "list", nullable, []  # e.g. primary_key: one column or several
    return "json", nullable, []


def _display(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "list":
        return ", ".join(value) if isinstance(value, list) else str(value)
    if kind == "json":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ", ".join(value)
        return value if isinstance(value, str) else json.dumps(value, indent=1)
    return str(value)


def fields_for(
    kind: Kind,
    type_name: str,
    config: Mapping[str, Any] | None = None,
    *,
    prefix: str = "cfg.",
    only: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[FormField]:
    """The type's inputs, filled from ``config`` (masked: secrets only report 'is set')."""
    info = get_type(kind, type_name)
    schema = info.json_schema()
    required = set(schema.get("required", []))
    config = config or {}
    out = []
    for name, prop in schema.get("properties", {}).items():
        if name in exclude or (only is not None and name not in only):
            continue
        input_kind, nullable, options = _kind(prop)
        default = prop.get("default")
        current = config.get(name)
        f = FormField(
            name=name,
            input_name=prefix + name,
            label=label_for(name),
            kind=input_kind,
            required=name in required,
            options=options,
            nullable=nullable,
            default=default,
            help=HELP.get(name),
            advanced=name in ADVANCED_FIELDS and name not in required,
        )
        if input_kind == "password":
            f.is_set = current not in (None, "")
        elif input_kind == "checkbox":
            f.checked = bool(default if current is None else current)
        else:
            f.value = _display(input_kind, current)
        out.append(f)
    return out


def refill(fields: list[FormField], form: Mapping[str, Any]) -> list[FormField]:
    """Put what the user typed back into the fields (after a failed save or a test)."""
    for f in fields:
        if f.kind == "password":
            continue  # never echo a secret back into the page
        raw = _last(form, f.input_name)
        if f.kind == "checkbox":
            f.checked = raw == "true"
        elif raw is not None:
            f.value = raw
    return fields


def _last(form: Mapping[str, Any], key: str) -> str | None:
    getlist = getattr(form, "getlist", None)
    if getlist is not None:
        values = getlist(key)
        return str(values[-1]) if values else None
    value = form.get(key)
    if isinstance(value, list):
        value = value[-1] if value else None
    return None if value is None else str(value)


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def parse(
    fields: list[FormField], form: Mapping[str, Any]
) -> tuple[dict[str, Any], set[str], list[FieldProblem]]:
    """(values given, keys the user emptied, problems) from the submitted form.

    Secrets left empty are simply absent: stored ones are then kept (write-only).
    """
    values: dict[str, Any] = {}
    cleared: set[str] = set()
    problems: list[FieldProblem] = []
    for f in fields:
        raw = _last(form, f.input_name)
        if f.kind == "checkbox":
            if raw is not None:
                values[f.name] = raw == "true"
            continue
        text = (raw or "").strip() if f.kind != "password" else (raw or "")
        if text == "":
            if f.kind != "password":
                cleared.add(f.name)
            continue
        try:
            values[f.name] = _convert(f, text)
        except ValueError as exc:
            problems.append(FieldProblem(f.name, str(exc)))
    return values, cleared, problems


def _convert(f: FormField, text: str) -> Any:
    if f.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
    if f.kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
    if f.kind == "list":
        items = _split_list(text)
        return items[0] if len(items) == 1 and f.name == "primary_key" else items
    if f.kind == "json":
        if text[:1] in '[{"' or text in ("true", "false", "null"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        return _split_list(text) if "," in text or f.name in ("resources", "tables") else text
    return text


def merge(
    stored: Mapping[str, Any], values: Mapping[str, Any], cleared: set[str]
) -> dict[str, Any]:
    """The stored config with the form's changes: keys the form does not show are kept."""
    out = {k: v for k, v in stored.items() if k not in cleared}
    out.update(values)
    return out
