"""An HTTP endpoint as a destination: batches POSTed as JSON, or files uploaded."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import Field, HttpUrl

from conveyor.pipelines import failures, sinks
from conveyor.pipelines.config import HttpAuth, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings


class RestApiDestinationConfig(HttpAuth, TypeConfig):
    """Where and how to send the rows (or files)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"url"})

    url: HttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    use_multipart: bool = False
    file_field_name: str = "file"
    additional_fields: dict[str, Any] = Field(default_factory=dict)
    content_type: str = "application/json"
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=3, ge=0, le=10)


# --- runtime (dlt and httpx are imported lazily) -----------------------------------

# Statuses worth another try: the server may recover; anything else 4xx is a config error.
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class UploadFailed(Exception):
    """The endpoint refused or never acknowledged a batch or a file."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def headers(cfg: RestApiDestinationConfig) -> dict[str, str]:
    from conveyor.pipelines.sources.rest_api import request_headers

    return request_headers(cfg)


def send(
    cfg: RestApiDestinationConfig,
    client: Any,
    *,
    what: str,
    request: Callable[[], dict[str, Any]],
    backoff: float = 0.5,
) -> Any:
    """One request with ``max_retries`` retries and exponential backoff; raises UploadFailed.

    ``request`` builds the keyword arguments afresh for every attempt (a file reopened).
    """
    import httpx

    from conveyor.pipelines.sources.rest_api import basic_auth

    auth = basic_auth(cfg)
    attempts = cfg.max_retries + 1
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            response = client.request(
                cfg.method,
                str(cfg.url),
                headers=headers(cfg),
                auth=auth,
                timeout=cfg.timeout,
                **request(),
            )
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code < 400:
            return response
        last = f"HTTP {response.status_code} {response.reason_phrase}"
        if response.status_code not in _RETRY_STATUSES:
            raise UploadFailed(f"{cfg.url} refused {what}: {last}", transient=False)
    raise UploadFailed(
        f"{cfg.url} did not accept {what} after {attempts} attempts: {last}", transient=True
    )


def build(cfg: RestApiDestinationConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    """A dlt sink that POSTs each batch as ``{"table": ..., "rows": [...], **additional}``."""
    import dlt
    import httpx

    client = httpx.Client()

    def post_batch(items: Any, table: Any) -> None:
        # Arrow sources arrive as record batches (Parquet load files), others as dicts.
        records = items.to_pylist() if hasattr(items, "to_pylist") else items
        rows = [_jsonable(row) for row in records]
        body = {**cfg.additional_fields, "table": table["name"], "rows": rows}
        what = f"a batch of {len(rows)} rows for {table['name']}"
        send(cfg, client, what=what, request=lambda: {"json": body})

    sink = dlt.destination(
        post_batch,
        batch_size=cfg.batch_size,
        loader_file_format="typed-jsonl",
        name="conveyor_rest_api",
        naming_convention="direct",
        skip_dlt_columns_and_tables=True,
        max_table_nesting=0,
        # One batch at a time, in order: a retry resumes exactly where the last run stopped.
        max_parallel_load_jobs=1,
        loader_parallelism_strategy="sequential",
    )
    return DltTarget(
        destination=sink(),
        dataset_name=default_dataset(connector_id),
        local_state=True,
        description=str(cfg.url),
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, (datetime, date, dt_time)):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = str(value)
        elif isinstance(value, bytes):
            out[key] = value.hex()
        else:
            out[key] = value
    return out


def check(cfg: RestApiDestinationConfig, *, settings: Settings) -> str:
    """Reach the endpoint with the configured auth (OPTIONS; any answer but 401/403/5xx)."""
    import httpx

    from conveyor.pipelines.sources.rest_api import basic_auth

    response = httpx.request(
        "OPTIONS", str(cfg.url), headers=headers(cfg), auth=basic_auth(cfg), timeout=10
    )
    if response.status_code in (401, 403):
        raise PermissionError(f"{cfg.url} answered {response.status_code}: credentials rejected")
    if response.status_code >= 500:
        raise ConnectionError(f"{cfg.url} answered {response.status_code}")
    return f"{cfg.url} is reachable (HTTP {response.status_code})"


class UploadSink:
    """A REST endpoint taking one multipart/form-data upload per file."""

    def __init__(self, cfg: Any, state_name: str, settings: Settings) -> None:
        import httpx
        from fsspec.implementations.local import LocalFileSystem

        self.cfg = cfg
        self.client = httpx.Client()
        self.fs = LocalFileSystem()
        self.dir = str(settings.home / "transfers")
        self.state_name = state_name  # the manifest's name (``TypeContext.state_name``)

    def manifest(self) -> sinks.Manifest:
        return sinks.Manifest(self.fs, f"{self.dir}/{self.state_name}.json")

    def put(self, src_fs: Any, f: sinks.SourceFile) -> None:
        cfg = self.cfg
        assert isinstance(cfg, RestApiDestinationConfig)
        handles: list[Any] = []

        def request() -> dict[str, Any]:
            for h in handles:
                h.close()
            handles.clear()
            handles.append(src_fs.open(sinks.fs_path(f.url), "rb"))
            name = posixpath.basename(f.relative_path)
            data = {k: str(v) for k, v in cfg.additional_fields.items()}
            data.setdefault("path", f.relative_path)
            return {"files": {cfg.file_field_name: (name, handles[0])}, "data": data}

        try:
            send(cfg, self.client, what=f"file {f.relative_path}", request=request)
        finally:
            for h in handles:
                h.close()


# --- the type ---------------------------------------------------------------------


class EndpointRefused(failures.TerminalFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> failures.TypeFailure | None:
        if isinstance(exc, UploadFailed) and not exc.transient:
            return cls(f"The destination endpoint did not accept the data: {exc}")
        return None


class EndpointUnavailable(failures.TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> failures.TypeFailure | None:
        if isinstance(exc, UploadFailed) and exc.transient:
            return cls(f"The destination endpoint did not accept the data: {exc}")
        return None


class RestApiDestination(DestinationType):
    """Batches of rows POSTed as JSON, or files uploaded, to an HTTP endpoint."""

    name = "rest_api"
    title = "REST endpoint"
    config_model = RestApiDestinationConfig
    capabilities = Capabilities(incremental=True, file_transfer=True, lands_in="endpoint")
    failures = (*failures.HTTP, EndpointRefused, EndpointUnavailable)

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def wants_transfer(self, config: Any) -> bool:
        return bool(config.use_multipart)

    def open_sink(self, config: Any, context: TypeContext) -> Any:
        return UploadSink(config, context.state_name, context.settings)

    def where(self, config: Any, settings: Settings) -> str:
        return str(config.url)

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        url = str(config.url)
        return Landing(f"Sent to {url}", (url,), note="Conveyor keeps no copy of what it sends.")
