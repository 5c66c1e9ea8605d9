"""HTTP APIs as a source, described declaratively (dlt's rest_api config)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, HttpUrl

from conveyor.pipelines.config import CopyOptions, HttpAuth, TypeConfig


class RestApiSourceConfig(CopyOptions, HttpAuth, TypeConfig):
    """A base URL, its auth, a default paginator and a list of resources."""

    base_url: HttpUrl
    # dlt rest_api resources: names or dicts ({"name", "endpoint", "primary_key", ...}).
    resources: list[str | dict[str, Any]] = Field(default_factory=list)
    paginator: str | dict[str, Any] | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
