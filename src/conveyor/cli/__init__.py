"""The ``conveyor`` command line (Typer), one module per command group."""
