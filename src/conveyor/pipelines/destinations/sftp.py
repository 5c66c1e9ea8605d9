"""An SFTP server as a destination (password or private key)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import FileFormat, SecretStrField, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.storage import Location, sftp_location
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings


class SftpConfig(TypeConfig):
    """Files written to ``path`` on an SFTP server."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"host", "pkey_path", "port"})
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"pkey_path"})

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


# --- runtime (dlt and paramiko are imported lazily) --------------------------------


def location(cfg: SftpConfig) -> Location:
    return sftp_location(
        host=cfg.host,
        port=cfg.port,
        username=cfg.username,
        password=cfg.password,
        pkey_path=cfg.pkey_path,
        pkey_passphrase=cfg.pkey_passphrase,
        path=cfg.path,
    )


def build(cfg: SftpConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt

    SftpDestination().confine(cfg, settings, loc="destination")
    loc = location(cfg)
    return DltTarget(
        destination=dlt.destinations.filesystem(bucket_url=loc.url, credentials=loc.credentials),
        dataset_name=cfg.dataset_name or default_dataset(connector_id),
        loader_file_format=cfg.format,
        description=f"sftp://{cfg.host}:{cfg.port}{cfg.path}",
    )


def check(cfg: SftpConfig, *, settings: Settings) -> str:
    from conveyor.pipelines.destinations.filesystem import check_location

    SftpDestination().confine(cfg, settings, loc="destination")

    return check_location(location(cfg))


# --- the type ---------------------------------------------------------------------


class SftpDestination(DestinationType):
    """Files on an SFTP server."""

    name = "sftp"
    title = "SFTP"
    config_model = SftpConfig
    capabilities = Capabilities(incremental=True, file_transfer=True, lands_in="files")
    failures = failures.SFTP

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        from conveyor.pipelines.destinations.filesystem import drop

        self.confine(config, context.settings, loc="destination")
        return drop(
            location(config),
            config.dataset_name or default_dataset(context.connector_id or 0),
            tables,
        )

    def open_sink(self, config: Any, context: TypeContext) -> Any:
        from conveyor.pipelines.sinks import FilesSink

        return FilesSink(location(config), context.state_name, config.dataset_name)

    def where(self, config: Any, settings: Settings) -> str:
        return f"sftp://{config.host}:{config.port}{config.path}"

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        base = self.where(config, context.settings).rstrip("/")
        folder = f"{base}/{context.dataset(config.dataset_name)}"
        return Landing(f"Files under {folder}/", tuple(f"{folder}/{t}/" for t in tables))
