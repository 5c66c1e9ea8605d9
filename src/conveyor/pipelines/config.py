"""Building blocks for the per-type configuration models.

A field marked ``Secret`` is encrypted at rest, write-only in the API and UI and masked
everywhere else (see ``conveyor.secrets``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECRET_MARK = "secret"

# Annotated marker picked up by conveyor.secrets and shown as writeOnly in the JSON schema.
Secret = Field(json_schema_extra={SECRET_MARK: True, "writeOnly": True, "format": "password"})

SecretStrField = Annotated[str | None, Secret]
# A mapping whose values are secrets (HTTP headers such as Authorization): the names stay
# readable, every value is encrypted, masked and write-only like a secret string.
SecretMapping = Field(json_schema_extra={SECRET_MARK: True, "writeOnly": True})


class TypeConfig(BaseModel):
    """Base of every type's configuration: unknown fields are errors, not silently kept.

    Each type (and each mixin it is built from) declares two field lists of its own:

    - ``CONNECTION_FIELDS`` say *where* it connects (host, port, URL, bucket, endpoint,
      path, connection string, database). Changing one drops the stored secrets unless they
      are entered again, and a connector's override may never set one: a stored secret is
      only ever sent to the target it was stored with.
    - ``PATH_FIELDS`` hold local filesystem paths, which must resolve inside the allowed
      roots (``conveyor.pipelines.paths``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset()
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def connection_fields(cls) -> frozenset[str]:
        """Every field that says where this type connects (its own and its mixins')."""
        return _declared(cls, "CONNECTION_FIELDS")

    @classmethod
    def path_fields(cls) -> frozenset[str]:
        """Every field holding a local filesystem path."""
        return _declared(cls, "PATH_FIELDS")

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        """Names of the fields holding secrets."""
        return frozenset(
            name
            for name, field in cls.model_fields.items()
            if isinstance(field.json_schema_extra, dict)
            and field.json_schema_extra.get(SECRET_MARK)
        )


def _declared(cls: type, attr: str) -> frozenset[str]:
    """The union of ``attr`` over the class and every base that declares it."""
    out: frozenset[str] = frozenset()
    for klass in cls.__mro__:
        out |= vars(klass).get(attr, frozenset())
    return out


WriteDisposition = Literal["append", "replace", "merge"]


class CopyOptions(BaseModel):
    """What to copy and how it lands (usually set per connector, as overrides).

    ``write_disposition`` left unset means: ``merge`` when a primary key is given,
    ``append`` when a cursor column is given, otherwise ``replace`` — so re-running a
    connector never duplicates rows by default.
    """

    write_disposition: WriteDisposition | None = None
    primary_key: str | list[str] | None = None
    cursor_column: str | None = None
    initial_value: Any = None

    def effective_write_disposition(self) -> WriteDisposition:
        if self.write_disposition:
            return self.write_disposition
        if self.primary_key:
            return "merge"
        if self.cursor_column:
            return "append"
        return "replace"

    @model_validator(mode="after")
    def _merge_needs_key(self) -> CopyOptions:
        if self.write_disposition == "merge" and not self.primary_key:
            raise ValueError("write_disposition 'merge' needs primary_key")
        return self


class DatabaseConnection(BaseModel):
    """A database by URL or by parts (the names existing deployments already store)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"connection_string", "drivername", "host", "port", "database"}
    )

    connection_string: SecretStrField = None
    drivername: str = "postgresql"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = None
    username: str | None = None
    password: SecretStrField = None

    @model_validator(mode="after")
    def _url_or_parts(self) -> DatabaseConnection:
        if not self.connection_string and not (self.host and self.database):
            raise ValueError("give connection_string, or host and database")
        return self


def connection_url(cfg: DatabaseConnection) -> str:
    """The SQLAlchemy URL (password in clear: keep it in memory)."""
    if cfg.connection_string:
        return cfg.connection_string
    from sqlalchemy.engine import URL

    return URL.create(
        cfg.drivername,
        username=cfg.username,
        password=cfg.password,
        host=cfg.host,
        port=cfg.port,
        database=cfg.database,
    ).render_as_string(hide_password=False)


class S3Options(BaseModel):
    """Credentials and endpoint for s3:// paths (endpoint_url for MinIO or moto)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"endpoint_url"})

    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStrField = None
    endpoint_url: str | None = None
    region_name: str | None = None


AuthType = Literal["none", "bearer_token", "api_key", "basic"]


class HttpAuth(BaseModel):
    """Authentication against an HTTP API."""

    auth_type: AuthType = "none"
    token: SecretStrField = None
    api_key: SecretStrField = None
    api_key_name: str = "X-API-Key"
    username: str | None = None
    password: SecretStrField = None
    headers: Annotated[dict[str, str], SecretMapping] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _auth_complete(self) -> HttpAuth:
        needed = {"bearer_token": "token", "api_key": "api_key", "basic": "password"}.get(
            self.auth_type
        )
        if needed and getattr(self, needed) is None:
            raise ValueError(f"auth_type '{self.auth_type}' needs {needed}")
        if self.auth_type == "basic" and not self.username:
            raise ValueError("auth_type 'basic' needs username")
        return self


FileFormat = Literal["csv", "jsonl", "parquet"]
