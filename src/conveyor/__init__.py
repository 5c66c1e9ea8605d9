"""Conveyor: connectors in a database, one Prefect deployment each, data moved with dlt."""

__version__ = "0.1.0"
