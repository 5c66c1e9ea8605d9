"""Use cases shared by the REST API, the web UI, the CLI and ``deployments apply``.

Each function takes the session keyword-only and flushes; the caller owns the transaction.
Authorisation is checked here, so every entry point enforces the same roles.
"""
