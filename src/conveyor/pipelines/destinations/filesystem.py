"""Files on a local or NFS path, or in an S3 bucket, as a destination."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from conveyor.pipelines.config import FileFormat, S3Options, TypeConfig


class FilesystemDestinationConfig(S3Options, TypeConfig):
    """Parquet, CSV or JSONL files under a path or an S3 bucket + prefix."""

    path: str | None = None
    bucket: str | None = None
    prefix: str = ""
    format: FileFormat = "parquet"
    dataset_name: str | None = None
    mode: Literal["parse", "transfer"] = "parse"

    @model_validator(mode="after")
    def _where(self) -> FilesystemDestinationConfig:
        if not self.path and not self.bucket:
            raise ValueError("give path (local/NFS) or bucket (S3)")
        return self
