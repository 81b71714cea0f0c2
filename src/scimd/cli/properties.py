"""``scimd properties``: the custom user properties of the UserProperties extension."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from scimd.cli.common import DbUrl, Json, PropertyName, group, load_settings, run, show, transaction
from scimd.scim.errors import ScimError
from scimd.store import audit
from scimd.store import properties as props_mod

app = group("Custom user properties (the UserProperties extension).")


@app.command("add")
def properties_add(
    name: PropertyName,
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="String, Integer, Decimal, Boolean, DateTime or Date (basic types only).",
        ),
    ],
    description: Annotated[str, typer.Option(metavar="TEXT", help="What the property holds.")] = "",
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Define a custom user property; it appears in /Schemas at once."""

    urn = load_settings().properties_urn

    def go() -> Any:
        with transaction(database_url) as conn:
            return props_mod.add_property(conn, name, type_, description, audit.CLI, urn)

    p = run(go)
    show(
        {"name": p.name, "type": p.type, "description": p.description, "path": f"{urn}:{p.name}"},
        as_json,
        f"added {p.name} ({p.type}); map it in Entra as {urn}:{p.name}",
    )


@app.command("list")
def properties_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List custom user properties."""

    def go() -> Any:
        with transaction(database_url, create=False, write=False) as conn:
            props_mod.check_urn(conn, load_settings().properties_urn)
            return props_mod.list_properties(conn)

    rows = run(go)
    data = [{"name": p.name, "type": p.type, "description": p.description} for p in rows]
    text = "\n".join(f"{p.name}  {p.type}  {p.description}" for p in rows)
    show(data, as_json, text or "no custom properties")


@app.command("remove")
def properties_remove(
    name: PropertyName,
    database_url: DbUrl = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Remove even if users hold values.", metavar="")
    ] = False,
) -> None:
    """Remove a custom user property definition."""
    urn = load_settings().properties_urn

    def go() -> Any:
        with transaction(database_url, create=False) as conn:
            props_mod.check_urn(conn, urn)
            try:
                return props_mod.remove_property(conn, name, audit.CLI, urn, confirmed=yes)
            except props_mod.ValuesHeld as e:  # counted with writes held off
                raise ScimError(
                    f"{e.held} user(s) hold a value for '{name}'; re-run with --yes to remove it"
                ) from None

    p, _held = run(go)
    typer.echo(f"removed {p.name}")
