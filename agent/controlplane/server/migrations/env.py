"""Alembic environment: runs on the connection `engine.migrate()` hands over.

There is no alembic.ini: the control plane migrates itself at start-up, inside
the transaction (and, on PostgreSQL, under the advisory lock) that
`engine.migrate()` opened.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
