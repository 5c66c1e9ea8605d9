"""An SFTP server as a destination (password or private key)."""

from __future__ import annotations

from pydantic import Field, model_validator

from conveyor.pipelines.config import FileFormat, SecretStrField, TypeConfig


class SftpConfig(TypeConfig):
    """Files written to ``path`` on an SFTP server."""

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: SecretStrField = None
    pkey_path: str | None = None
    pkey_passphrase: SecretStrField = None
    path: str = "/"
    format: FileFormat = "parquet"
    dataset_name: str | None = None

    @model_validator(mode="after")
    def _auth(self) -> SftpConfig:
        if not self.password and not self.pkey_path:
            raise ValueError("give password or pkey_path")
        return self
