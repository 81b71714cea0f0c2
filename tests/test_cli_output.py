"""The scimd command line as users and scripts see it: what a mutation audit of
``scimd.cli`` found that no other test checked."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shlex
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from scimd.cli.main import app
from support.cli import ok as _ok
from support.cli import runner
from support.stores import add_old_audit_records


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_apps_create_defaults_to_a_bearer_token_with_both_entra_scopes(db: str) -> None:
    """`apps create --name X` alone makes what Entra ID needs: a bearer token allowed the
    scopes API and USER SYNC, as the help text says."""
    made = json.loads(_ok("apps", "create", "--name", "Entra", "--json", "--database-url", db))
    assert made["grant_type"] == "bearer"
    assert made["scopes"] == ["API", "USER SYNC"]


def test_apps_create_with_standard_output_closed_makes_no_application(db: str) -> None:
    """With standard output closed, `apps create` would make an application whose secret,
    shown once, nobody saw: it refuses before making it."""
    _ok("db", "upgrade", "--database-url", db)
    closed = subprocess.run(
        f"{shlex.quote(sys.executable)} -m scimd.cli.main apps create --name lost"
        f" --database-url {shlex.quote(db)} >&-",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert closed.returncode == 1 and "standard output is closed" in closed.stderr
    assert "Traceback" not in closed.stderr, closed.stderr
    assert json.loads(_ok("apps", "list", "--json", "--database-url", db)) == []


def test_apps_list_text_says_enabled_disabled_and_never_used(db: str) -> None:
    """`apps list` (text) tells a reader whether each application is enabled and whether each
    secret was used; with none it says so rather than print nothing."""
    _ok("db", "upgrade", "--database-url", db)
    assert _ok("apps", "list", "--database-url", db).strip() == "no applications"
    cid = json.loads(_ok("apps", "create", "--name", "a", "--json", "--database-url", db))[
        "client_id"
    ]
    first = _ok("apps", "list", "--database-url", db).splitlines()
    assert first[0].startswith(cid) and first[0].endswith("  enabled")
    assert "  active  never used" in first[1]
    _ok("apps", "disable", cid, "--database-url", db)
    assert _ok("apps", "list", "--database-url", db).splitlines()[0].endswith("  disabled")


def test_app_commands_say_what_they_did_to_which_application(db: str) -> None:
    """revoke, disable, enable and delete each print one line naming the action and the
    client id, which a log of a script's run keeps."""
    cid = json.loads(_ok("apps", "create", "--name", "a", "--json", "--database-url", db))[
        "client_id"
    ]
    assert _ok("apps", "disable", cid, "--database-url", db).strip() == f"disabled {cid}"
    assert _ok("apps", "enable", cid, "--database-url", db).strip() == f"enabled {cid}"
    assert _ok("apps", "revoke", cid, "--database-url", db).strip() == f"revoked {cid}"
    assert _ok("apps", "delete", cid, "--database-url", db).strip() == f"deleted {cid}"


def test_admin_reset_password_on_a_missing_database_makes_none(tmp_path: Path) -> None:
    """A mistyped path for `admin reset-password` says there is no database there (status
    1) and leaves no new, empty database behind."""
    missing = tmp_path / "typo.db"
    r = runner.invoke(
        app,
        [
            "admin",
            "reset-password",
            "ops",
            "--password-stdin",
            "--database-url",
            f"sqlite:///{missing}",
        ],
        input="a long enough password\n",
    )
    assert r.exit_code == 1 and "no database at" in r.output, r.output
    assert not missing.exists()


def test_audit_prune_stopped_by_a_lock_says_how_many_went_and_exits_5(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: `audit prune`, which works in batches, exits 5 when another process holds the
    write lock, after saying how many records it removed first. Here another process takes
    the lock after the first batch (batches of one record)."""
    import functools
    import sqlite3

    import sqlalchemy as sa

    from scimd.store import audit as audit_mod
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current

    engine = create_engine(db)
    ensure_current(engine)
    with engine.begin() as conn:
        add_old_audit_records(conn, 3)
    engine.dispose()
    holder = sqlite3.connect(db.removeprefix("sqlite:///"), isolation_level=None)
    real = audit_mod.write_transaction
    calls: list[int] = []

    def locked_after_the_first(e: sa.Engine):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # another process writes between two batches
            holder.execute("BEGIN IMMEDIATE")
        return real(e)

    monkeypatch.setattr(audit_mod, "write_transaction", locked_after_the_first)
    monkeypatch.setattr(audit_mod, "prune", functools.partial(audit_mod.prune, batch=1))
    try:
        r = runner.invoke(
            app,
            ["audit", "prune", "--older-than", "1", "--database-url", db],
            env={"SCIMD_DATABASE_TIMEOUT": "1"},
        )
    finally:
        holder.rollback()
        holder.close()
    assert r.exit_code == 5, r.output
    assert "removed 1 audit record(s), then stopped" in r.stderr and "run it again" in r.stderr


def test_audit_list_shows_the_newest_50_by_default(db: str) -> None:
    """README: `scimd audit list` shows the newest 50 records unless given --limit, and says
    on stderr that there are more."""
    from scimd.store import audit as audit_mod
    from scimd.store.engine import create_engine
    from scimd.store.migrate import ensure_current

    engine = create_engine(db)
    ensure_current(engine)
    with engine.begin() as conn:
        for i in range(51):
            audit_mod.record(conn, audit_mod.CLI, "create", "User", f"u{i}", None)
    engine.dispose()
    r = runner.invoke(app, ["audit", "list", "--json", "--database-url", db])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 50 and rows[0]["resource_id"] == "u50"
    assert "(the newest 50 records; --limit for more)" in r.stderr


def test_properties_messages_name_the_path_to_map_and_the_way_to_remove(db: str) -> None:
    """`properties add` names the attribute path to map in Entra; `properties remove` of a
    property users hold values for says to re-run with --yes, and then says it removed it."""
    from scimd.scim.schema import USER_PROPERTIES_SCHEMA as URN
    from scimd.store import audit as audit_mod
    from scimd.store.directory import Directory
    from scimd.store.engine import create_engine

    added = _ok("properties", "add", "Badge", "--type", "String", "--database-url", db)
    assert f"map it in Entra as {URN}:Badge" in added
    d = Directory(create_engine(db))
    d.create("User", {"userName": "u@x.com", URN: {"Badge": "B-7"}}, audit_mod.CLI, "http://x")
    d.close()
    r = runner.invoke(app, ["properties", "remove", "Badge", "--database-url", db])
    assert r.exit_code == 1 and "re-run with --yes" in r.stderr, r.output
    assert _ok("properties", "remove", "Badge", "--yes", "--database-url", db).strip() == (
        "removed Badge"
    )


def _line_after(text: str, start: str) -> str:
    """The rest of the first line of ``text`` that starts (after spaces) with ``start``."""
    for line in text.splitlines():
        if line.strip().startswith(start):
            return line.strip().removeprefix(start)
    raise AssertionError(f"no line starting {start!r} in:\n{text}")


def test_the_first_start_message_gives_a_working_link_and_commands(tmp_path: Path) -> None:
    """On first start `scimd serve` prints, on stderr, where it serves, a one-time set-up link
    that opens the portal's set-up page, and the commands that create the first admin and
    Entra's token, with the database's path quoted for the shell (here it has a space):
    run as printed, they work. Once an application exists the token hint is not repeated;
    with --public-url the banner names that address."""
    import httpx

    from support.live_server import start_server

    folder = tmp_path / "with space"
    folder.mkdir()
    url = f"sqlite:///{folder / 's.db'}"
    with start_server(url, log_dir=tmp_path / "first") as server:
        said = server.stderr_text()
        assert server.stdout_text() == ""
        assert f"scimd serving {server.root_url}/scim/v2/ (database {url})" in said
        assert f"Work portal: {server.root_url}/admin/" in said
        assert "First start: no admin yet." in said
        link = _line_after(said, f"{server.root_url}/admin/setup?token=")
        page = httpx.get(f"{server.root_url}/admin/setup?token={link}", timeout=10)
        assert page.status_code == 200, page.text
        admin = shlex.split(_line_after(said, "or run: "))
        assert admin[-5:] == ["admin", "create", "USERNAME", "--database-url", url], admin
        hint = said.split("No OAuth 2 application yet.")[1].splitlines()[1]
    create = shlex.split(hint)
    assert create[-12:] == [
        "apps", "create", "--name", "Entra ID", "--grant", "bearer",
        "--scope", "API", "--scope", "USER SYNC", "--database-url", url,
    ], create  # fmt: skip
    done = subprocess.run(create, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "client_secret: " in done.stdout, done.stderr
    public = ["--public-url", "https://idp.example.com"]
    with start_server(url, log_dir=tmp_path / "again", extra_args=public) as server:
        said = server.stderr_text()
    assert "scimd serving https://idp.example.com/scim/v2/" in said
    assert "No OAuth 2 application yet" not in said and "First start" in said


def test_a_printed_command_with_a_database_password_says_to_put_it_back() -> None:
    """The first start's commands never show a database password: where one was hidden as
    ***, the command says to put it back, or as printed it would fail to sign in."""
    from scimd.cli import urls

    shown = urls.url_argument("postgresql+psycopg://scimd:s3cret@db.example/scimd")
    assert "s3cret" not in shown
    assert shown == (
        "'postgresql+psycopg://scimd:***@db.example/scimd'  # put the password back in place of ***"
    )
    assert urls.url_argument("postgresql+psycopg://scimd@db.example/scimd") == (
        "postgresql+psycopg://scimd@db.example/scimd"
    )


def test_a_missing_database_says_which_setting_names_it(tmp_path: Path) -> None:
    """A command on a database file that is not there says, in one line, the path it looked
    at and where that path came from (--database-url or SCIMD_DATABASE_URL)."""
    missing = tmp_path / "typo.db"
    r = runner.invoke(app, ["apps", "list", "--database-url", f"sqlite:///{missing}"])
    assert r.exit_code == 1
    assert r.stderr == (
        f"error: no database at {missing}: check --database-url / SCIMD_DATABASE_URL\n"
    )


def _on_a_terminal(args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run the command on a pseudo-terminal of its own (its controlling terminal, where
    getpass asks), typing each answer once its prompt is shown and input is hidden."""
    master, slave = os.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, preexec_fn=own_terminal, pass_fds=(slave,)
    )
    os.close(slave)
    out, pending = b"", list(answers)
    deadline = time.monotonic() + 60  # a bound on a hung command, not a measurement
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if not select.select([master], [], [], 0.05)[0]:
                continue
            try:
                out += os.read(master, 4096)
            except OSError:  # the command exited and closed the terminal
                break
            if pending and out.rstrip().endswith(pending[0][0].encode()):
                # getpass turns echo off (and drops what was typed before) after its prompt
                while termios.tcgetattr(master)[3] & termios.ECHO:
                    assert time.monotonic() < deadline, out
                    time.sleep(0.01)
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        code = proc.wait(timeout=60)
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, out.decode(errors="replace")


def test_passwords_that_differ_at_the_prompt_make_no_admin(tmp_path: Path) -> None:
    """`admin create` without --password-stdin asks twice on the terminal, without echo:
    two different passwords are refused (status 1) and make no admin; the same twice makes
    it. The password never shows on the screen."""
    url = f"sqlite:///{tmp_path / 'admins.db'}"
    command = [sys.executable, "-m", "scimd.cli.main", "admin", "create", "ada"]
    command += ["--database-url", url]
    typed = [("Password:", "long enough pw one"), ("Repeat password:", "long enough pw two")]
    code, said = _on_a_terminal(command, typed)
    assert code == 1 and "error: the passwords differ" in said, said
    assert "long enough" not in said
    assert not (tmp_path / "admins.db").exists()
    typed = [("Password:", "long enough pw one"), ("Repeat password:", "long enough pw one")]
    code, said = _on_a_terminal(command, typed)
    assert code == 0 and "created admin ada" in said, said
    assert "long enough" not in said
    assert _ok("admin", "list", "--database-url", url).split()[0] == "ada"
