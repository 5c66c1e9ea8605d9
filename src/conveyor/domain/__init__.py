"""Domain models shared by the web app, the reconciler, the flow and the CLI."""
