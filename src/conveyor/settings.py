"""One settings root for every Conveyor process (environment prefix ``CONVEYOR_``)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.errors import ConfigurationError

SECRET_KEY_FILE = "secret.key"


class Settings(BaseSettings):
    """Everything a Conveyor process can be told, read from ``CONVEYOR_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path("~/.conveyor").expanduser())
    env: Literal["local", "production"] = "local"
    database_url: str | None = None
    secret_key: SecretStr | None = None
    prefect_api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PREFECT_API_URL", "CONVEYOR_PREFECT_API_URL")
    )
    prefect_ui_url: str | None = None
    default_work_pool: str = "default"
    # The default pool's type and concurrency limit (None: no pool-wide limit; each worker's
    # --limit caps what it runs). Whoever comes first, reconciler or worker, creates a missing
    # pool so; a default pool of another type is reported (sync status, health), never changed.
    work_pool_type: Literal["process", "kubernetes"] = "process"
    work_pool_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    default_work_queue: str = "default"
    reconcile_interval: float = Field(default=60.0, gt=0)
    reconcile_concurrency: int = Field(default=16, ge=1, le=64)  # the most in flight
    run_heartbeat_timeout: float = Field(default=300.0, gt=0)
    # The watchdog closes run records whose flow run ended or whose worker went silent.
    watchdog_enabled: bool = True
    watchdog_interval: float = Field(default=60.0, gt=0)
    # Runs (and their logs) older than this many days are deleted from Conveyor and their
    # flow runs from Prefect, run_retention_batch at a time every run_retention_interval
    # seconds; the daily summaries stay.
    run_retention_days: int = Field(default=90, ge=1)
    run_retention_interval: float = Field(default=3600.0, gt=0)
    run_retention_batch: int = Field(default=200, ge=1, le=10_000)
    # A run's stored log stops growing at this size (the rest is counted, not kept).
    run_log_max_bytes: int = Field(default=1_000_000, ge=1_000)
    # A scheduled run that starts later than this after its time was missed (catch_up).
    catch_up_grace: float = Field(default=60.0, gt=0)
    # Notifications (services/notify): the delivery loop looks for due deliveries every
    # notify_interval seconds; a failed delivery is retried with backoff until it is
    # notify_max_age seconds old (then expired); sync.error fires for a connector not
    # synced to Prefect for notify_sync_error_after seconds; the freshness loop checks
    # SLAs every freshness_interval seconds.
    notify_interval: float = Field(default=5.0, gt=0)
    notify_max_age: float = Field(default=86_400.0, gt=0)
    notify_timeout: float = Field(default=10.0, gt=0)
    notify_sync_error_after: float = Field(default=900.0, gt=0)
    freshness_interval: float = Field(default=60.0, gt=0)
    session_secure_cookie: bool = False
    # When set, GET /metrics answers only requests with `Authorization: Bearer <token>`
    # (a scraper's token); unset, /metrics is public (keep it off any public ingress).
    metrics_token: SecretStr | None = None
    # The reconciler's loop touches this file as it goes round (leader and standby alike);
    # `conveyor reconcile --check-heartbeat` (the chart's liveness probe) reads its age.
    # Default: CONVEYOR_HOME/run/reconciler.heartbeat.
    reconciler_heartbeat_file: Path | None = None
    # Login throttling: after this many failures an account name (or a client address) waits
    # login_backoff seconds, doubling with each further failure up to login_backoff_max;
    # failures older than login_failure_window with none since are forgotten.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_backoff: float = Field(default=30.0, gt=0)
    login_backoff_max: float = Field(default=900.0, gt=0)
    login_failure_window: float = Field(default=3600.0, gt=0)
    log_json: bool = False
    log_level: str = "INFO"
    # Local folders connectors may use besides CONVEYOR_HOME/data (comma or os.pathsep
    # separated); Conveyor's home, database and key stay out of reach even inside one.
    allowed_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # The only environment variables a deployment file's ${VAR} may name (in secret fields
    # only): names, or prefixes ending in '*'. CONVEYOR_* and PREFECT_* are never allowed.
    deployment_env: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["DEPLOY_SECRET_*"]
    )
    # Where connectors may connect (conveyor.pipelines.network). Loopback: unset means on in
    # local mode, off in production. The CIDR lists and web_address are comma-separated.
    network_allow_loopback: bool | None = None
    network_allowed_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    network_denied_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # host:port (or URL) where the web app listens; `conveyor up` and `conveyor web` add theirs.
    web_address: Annotated[list[str], NoDecode] = Field(default_factory=list)
    prefect_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PREFECT_API_DATABASE_CONNECTION_URL",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
            "CONVEYOR_PREFECT_DATABASE_URL",
            "prefect_database_url",  # by name, as tests build settings
        ),
    )

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, value: object) -> object:
        return Path(str(value)).expanduser() if value is not None else value

    @field_validator("allowed_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            parts = re.split(rf"[,{re.escape(os.pathsep)}]", value)
            return [Path(p.strip()).expanduser() for p in parts if p.strip()]
        return value

    @field_validator(
        "deployment_env",
        "network_allowed_cidrs",
        "network_denied_cidrs",
        "web_address",
        mode="before",
    )
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'conveyor.db'}"

    @property
    def data_dir(self) -> Path:
        """Where the embedded DuckDB destination writes by default."""
        return self.home / "data"

    @property
    def heartbeat_file(self) -> Path:
        """The reconciler loop's heartbeat file (see ``reconciler_heartbeat_file``)."""
        return self.reconciler_heartbeat_file or self.home / "run" / "reconciler.heartbeat"

    def secret_keys(self) -> list[bytes]:
        """Fernet keys, newest first; generated into ``home`` in local mode when unset."""
        if self.secret_key is not None:
            raw = self.secret_key.get_secret_value()
        else:
            raw = self._local_key()
        keys = [k.strip().encode() for k in raw.split(",") if k.strip()]
        if not keys:
            raise ConfigurationError("CONVEYOR_SECRET_KEY is empty", hint="set one Fernet key")
        for key in keys:
            try:
                Fernet(key)
            except ValueError as exc:
                raise ConfigurationError(
                    "CONVEYOR_SECRET_KEY holds a value that is not a Fernet key",
                    hint="generate one with `conveyor secrets generate-key`",
                ) from exc
        return keys

    def _local_key(self) -> str:
        if self.env == "production":
            raise ConfigurationError(
                "CONVEYOR_SECRET_KEY is not set",
                hint="production needs an explicit key; generate one with "
                "`conveyor secrets generate-key`",
            )
        path = self.home / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key().decode()
        # Created 0600 so only this user can read the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()
