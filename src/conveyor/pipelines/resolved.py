"""A connector as a run needs it, and what a run moved: shared by the runner, the direct
copy and the file transfer (which import this, never each other's callers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.pipelines.config import TypeConfig
from conveyor.pipelines.contract import ConveyorType, DestinationType, SourceType
from conveyor.pipelines.registry import get_type


@dataclass(frozen=True, repr=False)
class ResolvedConnector:
    """A connector as the flow needs it: merged, decrypted (in memory only), validated."""

    def __repr__(self) -> str:  # never print the decrypted configs
        return f"ResolvedConnector(id={self.id}, {self.source_type} -> {self.destination_type})"

    id: int
    name: str
    source_type: str
    source: TypeConfig
    destination_type: str
    destination: TypeConfig
    secrets: tuple[str, ...] = ()
    # Keys the connector's state outside Conveyor (``Connector.state_key``); None: a
    # connector from before state keys, whose state is named by its id alone.
    state_key: str | None = None
    # New source columns: propagate | ignore_new_columns | pause (Connector.schema_changes).
    schema_changes: str = "propagate"

    @property
    def pipeline_name(self) -> str:
        """dlt's pipeline name, which names its state (cursors, schema) at the destination:
        new on create and on reset, so a connector never inherits another's state."""
        base = f"conveyor_connector_{self.id}"
        return f"{base}_{self.state_key}" if self.state_key else base

    @property
    def source_info(self) -> SourceType:
        found: ConveyorType = get_type("source", self.source_type)
        assert isinstance(found, SourceType)
        return found

    @property
    def destination_info(self) -> DestinationType:
        found: ConveyorType = get_type("destination", self.destination_type)
        assert isinstance(found, DestinationType)
        return found

    @property
    def is_transfer(self) -> bool:
        """Files copied as they are instead of rows loaded into tables: the source can hand
        files over and either end's config asks for it."""
        src, dst = self.source_info, self.destination_info
        if not src.capabilities.file_transfer:
            return False
        return src.wants_transfer(self.source) or dst.wants_transfer(self.destination)


@dataclass
class RunStats:
    """What a run moved: rows per table, bytes, schema changes and notes for the log."""

    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    schema_changes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int | None = None
    steps: dict[str, float] = field(default_factory=dict)  # dlt step -> seconds

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())
