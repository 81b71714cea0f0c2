"""``scimd apps``: OAuth 2 applications and their secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from scimd.auth import apps as apps_mod
from scimd.cli.common import (
    ClientId,
    DbUrl,
    Json,
    SecretId,
    can_print_secret,
    group,
    run,
    secret_shown,
    show,
    transaction,
)
from scimd.store import audit

app = group("OAuth 2 applications and their secrets (bearer tokens).")


@app.command("create")
def apps_create(
    name: Annotated[
        str, typer.Option(metavar="NAME", help="A name to recognise the application by.")
    ],
    grant: Annotated[
        str,
        typer.Option(
            metavar="GRANT", help="'bearer' (the secret is the token) or 'client_credentials'."
        ),
    ] = "bearer",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SCOPE",
            help="Allowed scope; repeat: --scope API --scope 'USER SYNC' (the default: both).",
        ),
    ] = None,
    lifetime: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            help=(
                "Access token lifetime of a client_credentials application, in seconds"
                " (default 3600; 0 = never expires)."
            ),
        ),
    ] = None,
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Create an application and print its client secret (shown once, stored hashed)."""
    scopes = scope or ["API", "USER SYNC"]

    can_print_secret()

    def go() -> tuple[dict[str, Any], str]:
        with transaction(database_url) as conn:
            return apps_mod.create_app(conn, name, grant, scopes, audit.CLI, lifetime)

    row, secret = run(go)
    data = {**row, "client_secret": secret}
    use = (
        "For Entra ID, paste it as Secret Token."
        if row["grant_type"] == "bearer"
        else "It is not a token: exchange it at POST /oauth2/server/token (client credentials"
        ' grant; in Entra ID, "OAuth2 Client Credentials Grant").'
    )
    with secret_shown(row["client_id"], "created"):
        show(
            data,
            as_json,
            f"client_id:     {row['client_id']}\nclient_secret: {secret}\n"
            f"Copy the secret now: it is not shown again. {use}",
        )


@app.command("list")
def apps_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List applications (secrets are never shown, only their first characters)."""

    def go() -> list[dict[str, Any]]:
        with transaction(database_url, create=False, write=False) as conn:
            return apps_mod.list_apps(conn)

    rows = run(go)
    lines = []
    for r in rows:
        lines.append(
            f"{r['client_id']}  {r['name']!r}  {r['grant_type']}  {','.join(r['scopes'])}  "
            f"{'enabled' if r['enabled'] else 'disabled'}"
        )
        for sec in r["secrets"]:
            state = f"revoked {sec['revoked']}" if sec["revoked"] else "active"
            used = f"last used {sec['last_used']}" if sec["last_used"] else "never used"
            lines.append(
                f"  secret {sec['id']}  {sec['hint']}  created {sec['created']}  {state}  {used}"
            )
    show(rows, as_json, "\n".join(lines) or "no applications")


def _app_action(client_id: ClientId, database_url: str | None, fn: Callable[..., Any]) -> Any:
    def go() -> Any:
        with transaction(database_url, create=False) as conn:
            return fn(conn, client_id, audit.CLI)

    return run(go)


@app.command("revoke")
def apps_revoke(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Revoke every secret and token of an application and disable it (takes effect at once)."""
    _app_action(client_id, database_url, apps_mod.revoke_app)
    typer.echo(f"revoked {client_id}")


@app.command("revoke-secret")
def apps_revoke_secret(
    client_id: ClientId, secret_id: SecretId, database_url: DbUrl = None
) -> None:
    """Revoke one secret (its id is in `apps list`) and the access tokens it obtained: the
    end of a rotation, once every client uses the new secret."""
    _app_action(client_id, database_url, lambda c, i, a: apps_mod.revoke_secret(c, i, secret_id, a))
    typer.echo(f"revoked secret {secret_id} of {client_id}")


@app.command("rotate")
def apps_rotate(client_id: ClientId, database_url: DbUrl = None, as_json: Json = False) -> None:
    """Add a new secret; the old ones keep working until revoked (`apps revoke-secret`), so
    clients can be switched without downtime."""
    can_print_secret()

    def rotate(conn: sa.Connection, i: str, actor: audit.Actor) -> tuple[str, int]:
        """The new secret and its id, which `revoke-secret` takes (a script had to diff
        `apps list` to find it)."""
        secret = apps_mod.rotate_secret(conn, i, actor)
        return secret, apps_mod.secret_id(conn, secret)

    secret, secret_id = _app_action(client_id, database_url, rotate)
    with secret_shown(client_id, "given a new secret"):
        show(
            {"client_id": client_id, "client_secret": secret, "secret_id": secret_id},
            as_json,
            f"client_secret: {secret}\nsecret id:     {secret_id}\n"
            "Copy the secret now: it is not shown again.",
        )


@app.command("disable")
def apps_disable(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Disable an application: its secrets stop working until it is enabled again, and the
    access tokens it obtained are discarded (it asks for new ones once enabled)."""
    _app_action(client_id, database_url, lambda c, i, a: apps_mod.set_enabled(c, i, False, a))
    typer.echo(f"disabled {client_id}")


@app.command("enable")
def apps_enable(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Enable a disabled application."""

    def enable(conn: sa.Connection, i: str, actor: audit.Actor) -> bool:
        """Whether the application has a secret that works (a revoked one stays revoked)."""
        apps_mod.set_enabled(conn, i, True, actor)
        return any(not sec["revoked"] for sec in apps_mod.get_app(conn, i)["secrets"])

    if _app_action(client_id, database_url, enable):
        typer.echo(f"enabled {client_id}")
    else:
        typer.echo(
            f"enabled {client_id}, but every secret of it is revoked: give it a new one with"
            f" `scimd apps rotate {client_id}`"
        )


@app.command("delete")
def apps_delete(client_id: ClientId, database_url: DbUrl = None) -> None:
    """Delete an application and all its secrets and tokens."""
    _app_action(client_id, database_url, apps_mod.delete_app)
    typer.echo(f"deleted {client_id}")
