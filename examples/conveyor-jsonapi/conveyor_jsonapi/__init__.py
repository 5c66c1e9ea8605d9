"""An example Conveyor source type: records from an HTTP JSON API, loaded with dlt.

Everything Conveyor needs is on the ``JsonApiSource`` class; ``pyproject.toml`` registers
it under the ``conveyor.types`` entry point group.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import Field, HttpUrl

from conveyor.pipelines.config import CopyOptions, SecretStrField, TypeConfig
from conveyor.pipelines.contract import Capabilities, CopyField, SourceType, TypeContext
from conveyor.pipelines.failures import TerminalFailure, TransientFailure, TypeFailure


class JsonApiConfig(CopyOptions, TypeConfig):
    """One URL answering a JSON list of records (or an object holding one)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"url"})

    url: HttpUrl
    token: SecretStrField = None  # sent as "Authorization: Bearer <token>"
    records_path: str = ""  # the key holding the list; empty: the answer is the list
    table_name: str = "records"
    timeout: float = Field(default=30.0, gt=0, le=600)


class JsonApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url} answered HTTP {status}")
        self.url, self.status = url, status


class JsonApiRefused(TerminalFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if isinstance(exc, JsonApiError) and exc.status < 500:
            return cls(f"The JSON API at {exc.url} refused the request (HTTP {exc.status}).")
        return None


class JsonApiDown(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if isinstance(exc, JsonApiError) and exc.status >= 500:
            return cls(f"The JSON API at {exc.url} is failing (HTTP {exc.status}).")
        return None


def fetch(cfg: JsonApiConfig) -> list[dict[str, Any]]:
    """The records the URL answers."""
    import requests

    headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
    response = requests.get(str(cfg.url), headers=headers, timeout=cfg.timeout)
    if response.status_code >= 400:
        raise JsonApiError(str(cfg.url), response.status_code)
    body = response.json()
    records = body.get(cfg.records_path, []) if cfg.records_path else body
    if not isinstance(records, list):
        raise ValueError(f"{cfg.url} did not answer a list of records")
    return records


class JsonApiSource(SourceType):
    """Records from an HTTP JSON API (example plugin)."""

    name = "json_api"
    title = "JSON API (example plugin)"
    config_model = JsonApiConfig
    # Re-reads everything each run: merge by key (or replace), no cursor.
    capabilities = Capabilities(merge=True, incremental=False)
    failures = (JsonApiRefused, JsonApiDown)
    copy_form = (
        CopyField(
            "table_name", "Table name", help="Where the records land.", placeholder="records"
        ),
    )

    def build(self, config: Any, context: TypeContext) -> Any:
        import dlt

        @dlt.resource(
            name=config.table_name,
            write_disposition=config.effective_write_disposition(),
            primary_key=config.primary_key or (),
        )
        def records() -> Iterator[dict[str, Any]]:
            yield from fetch(config)

        return [records()]

    def check(self, config: Any, context: TypeContext) -> str:
        return f"{len(fetch(config))} record(s) at {config.url}"

    def discover(self, config: Any, context: TypeContext) -> dict[str, Any]:
        records = fetch(config)
        fields = sorted({k for r in records[:100] if isinstance(r, dict) for k in r})
        return {"url": str(config.url), "table": config.table_name, "fields": fields}
