"""Where files live: local/NFS paths, S3 buckets and SFTP servers, as dlt/fsspec URLs.

Shared by the filesystem source and destination, the SFTP destination, file transfers and
checks. dlt and fsspec are imported lazily so the registry stays cheap to import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.pipelines.config import S3Options

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


@dataclass(frozen=True)
class Location:
    """A place for files: an fsspec/dlt URL and the dlt credentials object that opens it."""

    url: str
    credentials: Any = None

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def file_url(self) -> str:
        """The URL with an explicit ``file://`` scheme for local paths."""
        if "://" in self.url:
            return self.url
        from pathlib import Path

        return Path(self.url).as_uri()

    def display(self) -> str:
        """The URL without credentials, for messages."""
        return self.url

    def open(self) -> tuple[AbstractFileSystem, str]:
        """An authenticated fsspec filesystem and the normalised URL."""
        from dlt.common.storages.configuration import FilesystemConfiguration
        from dlt.common.storages.fsspec_filesystem import fsspec_from_config

        config = FilesystemConfiguration(bucket_url=self.url, credentials=self.credentials)
        config.resolve()
        return fsspec_from_config(config)


def s3_credentials(opts: S3Options) -> Any:
    """dlt AwsCredentials from the config's S3 fields (None: the environment's defaults)."""
    from dlt.common.configuration.specs import AwsCredentials

    creds = AwsCredentials()
    creds.aws_access_key_id = opts.aws_access_key_id  # type: ignore[assignment]
    creds.aws_secret_access_key = opts.aws_secret_access_key  # type: ignore[assignment]
    creds.endpoint_url = opts.endpoint_url
    creds.region_name = opts.region_name or ("us-east-1" if opts.endpoint_url else None)
    creds.resolve()
    return creds


def files_location(
    opts: S3Options, *, path: str | None, bucket: str | None, prefix: str = ""
) -> Location:
    """Local/NFS ``path``, or ``bucket`` (a name or an ``s3://`` URL) with a key prefix."""
    if bucket:
        base = bucket if "://" in bucket else f"s3://{bucket}"
        key = "/".join(p.strip("/") for p in (path or "", prefix) if p and p.strip("/"))
        url = base.rstrip("/") + ("/" + key if key else "")
        return Location(url, s3_credentials(opts))
    assert path is not None
    local = os.path.abspath(os.path.expanduser(os.path.join(path, prefix) if prefix else path))
    return Location(local)


def sftp_location(
    *,
    host: str,
    port: int,
    username: str,
    password: str | None,
    pkey_path: str | None,
    pkey_passphrase: str | None,
    path: str,
    timeout: float = 30.0,
) -> Location:
    """An SFTP directory with password or key authentication."""
    from dlt.common.configuration.specs import SFTPCredentials

    creds = SFTPCredentials()
    creds.sftp_port = port
    creds.sftp_username = username
    creds.sftp_password = password
    creds.sftp_key_filename = os.path.expanduser(pkey_path) if pkey_path else None
    creds.sftp_key_passphrase = pkey_passphrase
    creds.sftp_timeout = timeout
    creds.sftp_banner_timeout = timeout
    creds.sftp_auth_timeout = timeout
    # Only the configured secret: never the worker's own agent or ~/.ssh keys.
    creds.sftp_allow_agent = False
    creds.sftp_look_for_keys = False
    creds.resolve()
    return Location(f"sftp://{host}/{path.lstrip('/')}".rstrip("/"), creds)
