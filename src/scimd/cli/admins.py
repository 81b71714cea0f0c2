"""``scimd admin``: the work portal's admin accounts."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from scimd.auth import admins as admins_mod
from scimd.cli.common import DbUrl, Json, Username, fail, group, run, show, transaction
from scimd.store import audit

app = group("Admin accounts of the work portal.")


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (for scripts).",
        metavar="",
    ),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")  # a password file with CRLF endings
    try:  # where getpass asks; without it getpass warns that it may echo, and reads the pipe
        open("/dev/tty").close()  # only whether it opens
    except OSError:
        fail("no terminal to ask for the password: pass it with --password-stdin")
    first: str = typer.prompt("Password", hide_input=True)
    again: str = typer.prompt("Repeat password", hide_input=True)
    if first != again:
        typer.echo("error: the passwords differ", err=True)
        raise typer.Exit(1)
    return first


@app.command("create")
def admin_create(
    username: Username, database_url: DbUrl = None, password_stdin: PasswordStdin = False
) -> None:
    """Create a portal admin (password hashed with argon2id)."""
    password = _password(password_stdin)

    def go() -> Any:
        with transaction(database_url) as conn:
            return admins_mod.create(conn, username, password, audit.CLI)

    a = run(go)
    typer.echo(f"created admin {a.username}")


@app.command("reset-password")
def admin_reset_password(
    username: Username, database_url: DbUrl = None, password_stdin: PasswordStdin = False
) -> None:
    """Set a new password for an admin; their open sessions end."""
    password = _password(password_stdin)

    def go() -> None:
        with transaction(database_url, create=False) as conn:
            admins_mod.reset_password(conn, username, password, audit.CLI)

    run(go)
    typer.echo(f"password of {username} reset; their sessions are signed out")


@app.command("list")
def admin_list(database_url: DbUrl = None, as_json: Json = False) -> None:
    """List the portal's admins and when each last signed in."""

    def go() -> list[dict[str, Any]]:
        with transaction(database_url, create=False, write=False) as conn:
            return admins_mod.list_admins(conn)

    rows = run(go)
    text = "\n".join(
        f"{a['username']}  created {a['created']}  last sign-in {a['last_login'] or 'never'}"
        for a in rows
    )
    show(rows, as_json, text or "no admins")


@app.command("delete")
def admin_delete(username: Username, database_url: DbUrl = None) -> None:
    """Delete a portal admin; their open sessions end at once."""

    def go() -> int:
        with transaction(database_url, create=False) as conn:
            return admins_mod.delete(conn, username, audit.CLI)

    left = run(go)
    more = "" if left else "; no admin is left: create one with `scimd admin create USERNAME`"
    typer.echo(f"deleted admin {username}{more}")
