"""``scimd audit``: read and prune the audit log."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from scimd import settings as settings_mod
from scimd.cli.common import DbUrl, Json, group, open_engine, run, show
from scimd.store import audit

app = group("The audit log of changes.")


@app.command("prune")
def audit_prune(
    older_than: Annotated[
        int,
        typer.Option(
            metavar="DAYS",
            min=1,
            max=settings_mod.MAX_RETENTION_DAYS,
            help="Delete the records older than this many days.",
        ),
    ],
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Delete old audit records (the log grows with every change; keep what your retention
    policy asks for). Runs in small batches beside a live server."""
    before = audit.cutoff(older_than)

    def go() -> int:
        engine = open_engine(database_url, create=False)
        try:
            return audit.prune(engine, before, audit.CLI)
        finally:
            engine.dispose()

    removed = run(go)
    show(
        {"removed": removed, "before": before},
        as_json,
        f"removed {removed} audit record(s) made before {before}",
    )


@app.command("list")
def audit_list(
    resource: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Only the records of this resource (user, group, app)."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_ID", help="Only the changes this application made."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many, the newest first.")
    ] = 50,
    database_url: DbUrl = None,
    as_json: Json = False,
) -> None:
    """Show audit records, the newest first, with their whole detail (the portal shortens
    long ones): e.g. which members a change added or removed, `--resource GROUP_ID`."""

    def go() -> list[dict[str, Any]]:
        engine = open_engine(database_url, create=False)
        try:
            with engine.connect() as conn:
                # One more than shown: whether there are more to say so.
                return audit.history(conn, resource_id=resource, actor=actor, limit=limit + 1)
        finally:
            engine.dispose()

    rows = run(go)
    more = len(rows) > limit
    rows = rows[:limit]
    for r in rows:
        if isinstance(r.get("detail"), str):  # JSON text on SQLite, decoded on PostgreSQL
            r["detail"] = json.loads(r["detail"])
    lines = []
    for r in rows:
        who = r.get("actor_name") or r["actor_type"]
        if r.get("actor") and r["actor"] != who:
            who += f" ({r['actor']})"  # the client id, which --actor takes
        detail = "" if r["detail"] is None else " " + json.dumps(r["detail"])
        target = f"{r['resource_type']} {r['resource_id'] or ''}".rstrip()
        lines.append(f"{r['at']}  {who}  {r['operation']}  {target}{detail}")
    show(rows, as_json, "\n".join(lines) if lines else "no audit records")
    if more:  # a script must not take the newest N for all of them
        shown = "the newest record" if limit == 1 else f"the newest {limit} records"
        typer.echo(f"({shown}; --limit for more)", err=True)
