"""Alembic migrations of the control plane's database (run by `engine.migrate()`)."""
