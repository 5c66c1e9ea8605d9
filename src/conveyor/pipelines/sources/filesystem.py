"""Files on a local or NFS path, or in an S3 bucket, as a source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from conveyor.pipelines.config import CopyOptions, FileFormat, S3Options, TypeConfig


class FilesystemSourceConfig(CopyOptions, S3Options, TypeConfig):
    """CSV, JSONL or Parquet files matched by a glob; or files copied as they are."""

    path: str | None = None  # local/NFS directory, or the key prefix inside ``bucket``
    bucket: str | None = None  # S3 bucket name (or a full s3:// URL)
    file_pattern: str = "*"
    format: FileFormat | None = None  # default: from each file's extension
    table_name: str | None = None  # default: derived from the pattern
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    # parse: load rows into tables; transfer: copy the files as they are.
    mode: Literal["parse", "transfer"] = "parse"

    @model_validator(mode="after")
    def _where(self) -> FilesystemSourceConfig:
        if not self.path and not self.bucket:
            raise ValueError("give path (local/NFS) or bucket (S3)")
        return self
