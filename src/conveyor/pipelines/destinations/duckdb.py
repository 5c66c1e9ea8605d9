"""DuckDB files: the embedded default destination."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from conveyor.pipelines.config import TypeConfig
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings


class DuckdbConfig(TypeConfig):
    """A DuckDB database file (default: ``CONVEYOR_HOME/data/conveyor.duckdb``)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})

    path: str | None = None
    dataset_name: str | None = None  # default: one per connector


# --- runtime (dlt and duckdb are imported lazily) ----------------------------------


def database_path(cfg: DuckdbConfig, settings: Settings) -> Path:
    """The DuckDB file: the configured path or ``CONVEYOR_HOME/data/conveyor.duckdb``."""
    path = Path(cfg.path).expanduser() if cfg.path else settings.data_dir / "conveyor.duckdb"
    return path if path.is_absolute() else settings.data_dir / path


def confined_path(cfg: DuckdbConfig, settings: Settings) -> Path:
    """``database_path`` resolved, refused unless inside the allowed roots."""
    from conveyor.pipelines import paths

    return paths.check(database_path(cfg, settings), field="destination.path", settings=settings)


def build(cfg: DuckdbConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt

    path = confined_path(cfg, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    credentials = DuckDbCredentials(
        str(path),
        # Rows of a copied table have no order to keep; letting DuckDB insert out of order
        # roughly halves the load of a large Parquet file (measured on 6M rows).
        global_config={"preserve_insertion_order": False},
    )
    return DltTarget(
        destination=dlt.destinations.duckdb(credentials),
        dataset_name=cfg.dataset_name or default_dataset(connector_id),
        # Arrow batches go to Parquet and DuckDB reads those natively (no normalize step).
        loader_file_format="parquet",
        description=f"DuckDB file {path}",
    )


def check(cfg: DuckdbConfig, *, settings: Settings) -> str:
    """Open the file read-write and create and drop a table in it."""
    import duckdb

    path = confined_path(cfg, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE IF NOT EXISTS main._conveyor_check (x INTEGER)")
        con.execute("DROP TABLE main._conveyor_check")
    finally:
        con.close()
    return f"can write to {path}"
