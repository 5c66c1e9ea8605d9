"""What a destination module hands the runner: a dlt destination and how to load into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DltTarget:
    """A dlt destination, the dataset to load into and the loader file format."""

    destination: Any
    dataset_name: str
    loader_file_format: str | None = None
    # True when the destination keeps no dlt state of its own (a REST sink): the runner then
    # keeps the pipeline's working directory under CONVEYOR_HOME between runs.
    local_state: bool = False
    description: str = ""
    # dlt settings for this run (environment-style keys), e.g. load-file rotation.
    dlt_env: dict[str, str] = field(default_factory=dict)


def default_dataset(connector_id: int) -> str:
    """Each connector's own dataset (schema) unless the destination names one."""
    return f"connector_{connector_id}"
