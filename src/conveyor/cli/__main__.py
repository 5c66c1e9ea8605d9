"""Allow `python -m conveyor.cli`."""

from conveyor.cli.main import app

app()
