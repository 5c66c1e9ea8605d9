"""An HTTP endpoint as a destination: batches POSTed as JSON, or files uploaded."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl

from conveyor.pipelines.config import HttpAuth, TypeConfig


class RestApiDestinationConfig(HttpAuth, TypeConfig):
    """Where and how to send the rows (or files)."""

    url: HttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    use_multipart: bool = False
    file_field_name: str = "file"
    additional_fields: dict[str, Any] = Field(default_factory=dict)
    content_type: str = "application/json"
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=3, ge=0, le=10)
