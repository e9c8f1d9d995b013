"""Alembic environment: always runs on a connection handed over by retrysafe.database.migrate."""

from __future__ import annotations

from alembic import context

from retrysafe.database.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    # Set by retrysafe.database.migrate when a caller follows the progress.
    on_version_apply=context.config.attributes.get("on_version_apply", ()),
)
with context.begin_transaction():
    context.run_migrations()
