"""Alembic environment: runs migrations on the connection scimd hands it."""

from __future__ import annotations

from alembic import context

from scimd.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - scimd always passes a connection
    raise RuntimeError("run migrations through `scimd db upgrade`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
