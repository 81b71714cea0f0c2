"""Alembic environment: runs migrations on the connection scimd hands it."""

from __future__ import annotations

from alembic import context

from scimd.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - scimd always passes a connection
    raise RuntimeError("run migrations through `scimd db upgrade`")


DIALECT: str = connection.dialect.name


def _here(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
    """Tables and indexes of one database only (``info["dialect"]``) are compared there."""
    return reflected or bool(getattr(obj, "info", {}).get("dialect", DIALECT) == DIALECT)


context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=DIALECT == "sqlite",
    include_object=_here,
)
with context.begin_transaction():
    context.run_migrations()
