"""Sets up the chart's default destination, a DuckLake (hook Job, in the Conveyor image).

1. With LAKE_CREATE_DATABASE=1 (the chart's own PostgreSQL), as the server's owner
   (CONVEYOR_DATABASE_URL): the role LAKE_USERNAME (login, no other right; its password set
   to LAKE_PASSWORD every time, so it follows the Secret) and the database LAKE_DATABASE owned
   by it, created when absent; CONNECT on the databases in LAKE_PRIVATE_DATABASES (Conveyor's
   and Prefect's) revoked from PUBLIC, so the lake's role cannot even open them.
2. The Conveyor destination LAKE_DESTINATION_NAME (type ducklake): catalog LAKE_CATALOG_URL,
   data LAKE_DATA_PATH (s3://... with LAKE_S3_* or the lake volume's folder), schema
   LAKE_METADATA_SCHEMA. Created when absent. When it exists and still points where the chart
   points it (same catalog server, database and user, data path, schema and S3 endpoint), the
   chart's fields are brought up to date (a new password or S3 key); otherwise it was changed
   by an admin and is left as it is. Another type under that name is left too.

Idempotent: every install and upgrade runs it. Never prints a secret.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# The fields this script owns on the destination; others (dataset_name, ...) are an admin's.
CHART_FIELDS = (
    "catalog_url",
    "data_path",
    "metadata_schema",
    "aws_access_key_id",
    "aws_secret_access_key",
    "endpoint_url",
    "region_name",
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def ensure_database() -> None:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    owner = make_url(os.environ["CONVEYOR_DATABASE_URL"])
    role, database, password = _env("LAKE_USERNAME"), _env("LAKE_DATABASE"), _env("LAKE_PASSWORD")
    if not (role and database and password):
        raise SystemExit("LAKE_USERNAME, LAKE_DATABASE and LAKE_PASSWORD are required")
    private = [d for d in _env("LAKE_PRIVATE_DATABASES").split(",") if d.strip()]
    if database in private or database == owner.database:
        raise SystemExit(f"the lake may not use database {database!r}: Conveyor or Prefect owns it")
    with psycopg.connect(
        host=owner.host,
        port=owner.port or 5432,
        user=owner.username,
        password=owner.password,
        dbname=owner.database,
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        rights = sql.SQL(
            "{} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD {}"
        )
        verb = sql.SQL("ALTER" if found else "CREATE")
        conn.execute(rights.format(verb, sql.Identifier(role), sql.Literal(password)))
        print(f"role {role}: {'password set' if found else 'created'}")
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if row is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
            print(f"database {database}: created, owned by {role}")
        elif row[0] != role:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
            print(f"database {database}: owner set to {role} (was {row[0]})")
        else:
            print(f"database {database}: present")
        for name in private:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone():
                conn.execute(
                    sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                        sql.Identifier(name)
                    )
                )
        if private:
            print(f"CONNECT revoked from PUBLIC on: {', '.join(private)}")


def desired_config() -> dict[str, Any]:
    config: dict[str, Any] = {
        "catalog_url": os.environ["LAKE_CATALOG_URL"],
        "data_path": _env("LAKE_DATA_PATH"),
        "metadata_schema": _env("LAKE_METADATA_SCHEMA", "ducklake"),
    }
    if config["data_path"].startswith("s3://"):
        for field, var in (
            ("aws_access_key_id", "LAKE_S3_ACCESS_KEY_ID"),
            ("aws_secret_access_key", "LAKE_S3_SECRET_ACCESS_KEY"),
            ("endpoint_url", "LAKE_S3_ENDPOINT_URL"),
            ("region_name", "LAKE_S3_REGION"),
        ):
            if _env(var):
                config[field] = _env(var)
    return config


def where(config: dict[str, Any]) -> tuple[Any, ...]:
    """Where a config points, without its secrets: a change of it is an admin's decision."""
    from sqlalchemy.engine import make_url

    url = str(config.get("catalog_url") or "")
    catalog: tuple[Any, ...] = (url,)
    if "://" in url:
        u = make_url(url.replace("postgres://", "postgresql://", 1))
        catalog = (u.host, u.port or 5432, u.database, u.username)
    return (
        catalog,
        str(config.get("data_path") or "").rstrip("/"),
        config.get("metadata_schema") or "ducklake",
        config.get("endpoint_url") or None,
    )


def ensure_destination() -> int:
    from conveyor.db.session import session_scope
    from conveyor.domain.models import EndpointCreate, EndpointPatch
    from conveyor.errors import ValidationFailed
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog
    from conveyor.services.authz import SYSTEM
    from conveyor.settings import get_settings

    settings = get_settings()
    box = SecretBox(settings.secret_keys())
    name = _env("LAKE_DESTINATION_NAME", "lake")
    want = desired_config()
    try:
        with session_scope(settings.effective_database_url) as session:
            obj = catalog.get_by_name("destination", name, session=session)
            if obj is None:
                data = EndpointCreate(name=name, type="ducklake", config=want)
                obj = catalog.create("destination", data, session=session, actor=SYSTEM, box=box)
                print(f"destination {name} (ducklake): created, id {obj.id}")
                return 0
            if obj.type != "ducklake":
                print(f"destination {name} is a {obj.type} destination: left as it is")
                return 0
            have = catalog.decrypted_config("destination", obj, box)
            if where(have) != where(want):
                print(
                    f"destination {name}: an admin pointed it elsewhere; left as it is "
                    "(edit it, or delete it to have the chart's made again)"
                )
                return 0
            patch = {k: want.get(k) for k in CHART_FIELDS if have.get(k) != want.get(k)}
            if not patch:
                print(f"destination {name}: up to date")
                return 0
            catalog.update(
                "destination",
                obj.id,
                EndpointPatch(config=patch),
                session=session,
                actor=SYSTEM,
                box=box,
            )
            print(f"destination {name}: updated {', '.join(sorted(patch))}")
    except ValidationFailed as exc:
        problems = "; ".join(f"{p.loc}: {p.reason}" for p in exc.problems)
        print(f"destination {name}: refused: {problems}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if _env("LAKE_CREATE_DATABASE") == "1":
        ensure_database()
    return ensure_destination()


if __name__ == "__main__":
    sys.exit(main())
