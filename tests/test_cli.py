"""The scimd command line: the contract scripts and tests rely on."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimd.auth import apps
from scimd.cli.main import app
from scimd.store import audit
from scimd.store.engine import create_engine
from support.cli import ok as _ok
from support.cli import runner
from support.live_server import free_port, start_server
from support.stores import add_old_audit_records


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _authenticates(db: str, token: str) -> bool:
    engine = create_engine(db)
    with engine.connect() as conn:
        ok = apps.authenticate(conn, token) is not None
    engine.dispose()
    return ok


def test_apps_create_json_prints_id_and_secret_once(db: str, tmp_path: Path) -> None:
    """`apps create --json` prints client_id and client_secret; only a digest is stored."""
    out = _ok(
        "apps",
        "create",
        "--name",
        "Entra",
        "--grant",
        "bearer",
        "--scope",
        "API",
        "--scope",
        "USER SYNC",
        "--json",
        "--database-url",
        db,
    )
    data = json.loads(out)
    assert data["client_id"] and len(data["client_secret"]) >= 40
    assert data["scopes"] == ["API", "USER SYNC"] and data["grant_type"] == "bearer"
    assert _authenticates(db, data["client_secret"])
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("cli.db*"))
    assert data["client_secret"].encode() not in raw
    listing = _ok("apps", "list", "--json", "--database-url", db)
    assert data["client_secret"] not in listing
    assert json.loads(listing)[0]["client_id"] == data["client_id"]


def test_database_url_from_environment(db: str) -> None:
    """SCIMD_DATABASE_URL works in place of --database-url."""
    data = json.loads(
        _ok("apps", "create", "--name", "env", "--json", env={"SCIMD_DATABASE_URL": db})
    )
    assert data["client_id"] in _ok("apps", "list", "--database-url", db)


def test_revoke_rotate_disable_enable_delete(db: str) -> None:
    """Revoke stops a secret at once; rotation keeps old and new valid; disable/enable/delete."""
    a = json.loads(_ok("apps", "create", "--name", "a", "--json", "--database-url", db))
    cid, old = a["client_id"], a["client_secret"]
    rotated = json.loads(_ok("apps", "rotate", cid, "--json", "--database-url", db))
    new = rotated["client_secret"]
    assert _authenticates(db, old) and _authenticates(db, new)
    # The new secret's id, which revoke-secret takes (a script had to diff the listing).
    secrets = json.loads(_ok("apps", "list", "--json", "--database-url", db))[0]["secrets"]
    assert rotated["secret_id"] == secrets[-1]["id"] and secrets[-1]["hint"] == new[:6] + "…"
    # The end of a rotation from a script: the old secret's id is in the listing.
    listing = _ok("apps", "list", "--database-url", db)
    first = json.loads(_ok("apps", "list", "--json", "--database-url", db))[0]["secrets"][0]
    assert f"secret {first['id']}  {old[:6]}" in listing
    for bogus in ("3000000000", "0"):  # past PostgreSQL's integer: no such secret either
        r = runner.invoke(app, ["apps", "revoke-secret", cid, bogus, "--database-url", db])
        assert r.exit_code == 4 and "no active secret" in r.output
    _ok("apps", "revoke-secret", cid, str(first["id"]), "--database-url", db)
    assert not _authenticates(db, old) and _authenticates(db, new)
    assert "revoked 20" in _ok("apps", "list", "--database-url", db)
    _ok("apps", "disable", cid, "--database-url", db)
    assert not _authenticates(db, new)
    _ok("apps", "enable", cid, "--database-url", db)
    assert _authenticates(db, new)
    _ok("apps", "enable", cid, "--database-url", db)  # as asked already: no change
    _ok("apps", "revoke", cid, "--database-url", db)
    assert not _authenticates(db, new)
    _ok("apps", "revoke", cid, "--database-url", db)
    _ok("apps", "disable", cid, "--database-url", db)
    engine = create_engine(db)
    with engine.connect() as conn:
        ops = [r["operation"] for r in audit.history(conn, resource_id=cid)]
    engine.dispose()
    # A repeated enable, revoke or disable changed nothing: no record claims it did.
    assert ops[:3] == ["app.revoke", "app.enable", "app.disable"], ops
    _ok("apps", "delete", cid, "--database-url", db)
    assert _ok("apps", "list", "--json", "--database-url", db).strip() == "[]"
    result = runner.invoke(app, ["apps", "revoke", cid, "--database-url", db])
    assert result.exit_code == 4 and "no application" in result.output


def test_apps_create_rejects_unknown_scope_and_grant(db: str) -> None:
    """Unknown scopes and grant types are refused with a message naming them."""
    r = runner.invoke(
        app, ["apps", "create", "--name", "x", "--scope", "ADMIN", "--database-url", db]
    )
    assert r.exit_code == 1 and "ADMIN" in r.output
    r = runner.invoke(
        app, ["apps", "create", "--name", "x", "--grant", "password", "--database-url", db]
    )
    assert r.exit_code == 1 and "password" in r.output


@pytest.mark.parametrize("bad", ["Reference", "Complex", "multi-valued", "Binary", "Text"])
def test_properties_refuse_non_basic_types(db: str, bad: str) -> None:
    """Only basic property types are accepted, with a message saying which are."""
    r = runner.invoke(app, ["properties", "add", "P", "--type", bad, "--database-url", db])
    assert r.exit_code == 1
    assert bad in r.output and "String, Integer, Decimal, Boolean, DateTime, Date" in r.output


def test_properties_add_list_remove(db: str) -> None:
    """Properties are added with any type spelling, listed, and removed (values warned about)."""
    from scimd.scim.schema import USER_PROPERTIES_SCHEMA as URN
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.directory import Directory

    _ok(
        "properties",
        "add",
        "Level",
        "--type",
        "integer",
        "--description",
        "grade",
        "--database-url",
        db,
    )
    _ok("properties", "add", "Since", "--type", "Date", "--database-url", db)
    listed = json.loads(_ok("properties", "list", "--json", "--database-url", db))
    assert listed == [
        {"name": "Level", "type": "Integer", "description": "grade"},
        {"name": "Since", "type": "Date", "description": ""},
    ]
    r = runner.invoke(app, ["properties", "add", "level", "--type", "String", "--database-url", db])
    assert r.exit_code == 3 and "already defined" in r.output
    d = Directory(create_engine(db), properties_urn=Settings().properties_urn)
    made = d.create("User", {"userName": "p@x.com", URN: {"Level": "3"}}, audit.CLI, "http://x")
    other = d.create("User", {"userName": "q@x.com"}, audit.CLI, "http://x")
    for spelling in ("Level", "LEVEL"):  # names are case-insensitive, the warning too
        r = runner.invoke(app, ["properties", "remove", spelling, "--database-url", db])
        assert r.exit_code == 1 and "1 user(s)" in r.output
    _ok("properties", "remove", "level", "--yes", "--database-url", db)
    with create_engine(db).connect() as conn:
        detail = conn.execute(
            sa.text(
                "SELECT detail FROM audit WHERE operation = 'property.remove'"
                " AND resource_type = 'UserProperty'"
            )
        ).scalar_one()
    assert json.loads(detail) == {"type": "Integer", "values_removed": 1}
    found = {u["userName"]: u for u in d.search("User", None, "http://x").resources}
    assert URN not in found["p@x.com"]
    # The user whose value went has a new version (its old ETag must not match); not the other.
    assert found["p@x.com"]["meta"]["version"] != made.etag
    assert found["q@x.com"]["meta"]["version"] == other.etag
    for reserved in ("id", "Schemas", "META"):
        r = runner.invoke(
            app, ["properties", "add", reserved, "--type", "String", "--database-url", db]
        )
        assert r.exit_code == 1 and "choose another name" in r.output
    for enterprise in ("manager", "Department", "EMPLOYEENUMBER"):
        # Entra sends these without their schema: a property of the same name made its
        # manager requests fail as "unknown attribute".
        r = runner.invoke(
            app, ["properties", "add", enterprise, "--type", "String", "--database-url", db]
        )
        assert r.exit_code == 1 and "enterprise extension" in r.output
    for core in ("userName", "EMAILS", "active", "groups", "externalId"):
        # A name without its schema means the core attribute: the property was reachable only
        # by its full URN, and the portal showed "active" twice.
        r = runner.invoke(
            app, ["properties", "add", core, "--type", "String", "--database-url", db]
        )
        assert r.exit_code == 1 and "the User resource already has" in r.output, r.output
    r = runner.invoke(
        app, ["properties", "add", "A" * 129, "--type", "String", "--database-url", db]
    )
    assert r.exit_code == 1 and "at most 128 characters" in r.output
    d.close()


def test_db_upgrade_and_current(db: str) -> None:
    """`db upgrade` brings an empty database to the newest revision, and says what it did
    (the same line whether or not it upgraded anything)."""
    from scimd.store import migrate

    head = migrate.head()
    assert f"created the database schema at revision {head}" in _ok(
        "db", "upgrade", "--database-url", db
    )
    again = _ok("db", "upgrade", "--database-url", db)
    assert f"the database schema is at revision {head} already" in again
    out = _ok("db", "current", "--database-url", db)
    current, head = out.split("current: ")[1].split("  head: ")
    assert current.strip() == head.strip() != "None"


def test_module_entry_point_runs() -> None:
    """`python -m scimd.cli.main --help` works (how tests and scripts invoke scimd)."""
    done = subprocess.run(
        [sys.executable, "-m", "scimd.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "apps" in done.stdout and "serve" in done.stdout


def test_admin_create_and_reset_password(db: str) -> None:
    """`admin create` and `admin reset-password` take the password on stdin for scripts."""
    from scimd.auth import admins

    r = runner.invoke(
        app,
        ["admin", "create", "ops", "--password-stdin", "--database-url", db],
        input="first password here\n",
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["admin", "create", "OPS", "--password-stdin", "--database-url", db],
        input="another password\n",
    )
    assert r.exit_code == 3 and "an admin named 'ops' already exists" in r.output
    r = runner.invoke(
        app, ["admin", "create", "x", "--password-stdin", "--database-url", db], input="short\n"
    )
    assert r.exit_code == 1 and "at least" in r.output
    r = runner.invoke(
        app,
        ["admin", "reset-password", "ops", "--password-stdin", "--database-url", db],
        input="second password here\n",
    )
    assert r.exit_code == 0, r.output
    engine = create_engine(db)
    with engine.begin() as conn:
        assert admins.verify(conn, "ops", "first password here") is None
        assert admins.verify(conn, "ops", "second password here") is not None
    engine.dispose()


def test_admin_create_without_a_terminal_points_to_password_stdin(db: str) -> None:
    """getpass warned that the password "may be echoed" and read it from the pipe."""
    done = subprocess.run(
        [sys.executable, "-m", "scimd.cli.main", "admin", "create", "bob", "--database-url", db],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: /dev/tty does not open
    )
    assert done.returncode == 1 and "pass it with --password-stdin" in done.stderr, done.stderr
    assert "Warning" not in done.stderr


def test_a_command_group_alone_shows_its_commands() -> None:
    """`scimd db` said only "Missing command."."""
    for group, command in (("db", "upgrade"), ("apps", "create"), ("admin", "delete")):
        done = _scimd(group)
        assert command in done.stdout and "Missing command" not in done.stderr, done.stderr


def test_admin_list_and_delete(db: str) -> None:
    """A departed admin's account could only have its password reset: now it can be listed
    and deleted (its sessions end with it), and deleting the last one says how to go on."""
    from scimd.auth import admins
    from scimd.store import audit, migrate

    engine = create_engine(db)
    migrate.ensure_current(engine)
    with engine.begin() as conn:
        ops = admins.create(conn, "ops", "first password here", audit.CLI)
        admins.create(conn, "Ada", "second password here", audit.CLI)
        session = admins.start_session(conn, ops.pk)
    listed = json.loads(_ok("admin", "list", "--json", "--database-url", db))
    assert [a["username"] for a in listed] == ["Ada", "ops"]
    assert listed[0]["last_login"] is None and "password" not in json.dumps(listed)
    assert "last sign-in never" in _ok("admin", "list", "--database-url", db)
    assert _ok("admin", "delete", "OPS", "--database-url", db).strip() == "deleted admin OPS"
    with engine.begin() as conn:
        assert admins.session_admin(conn, ops.pk, session) is None
        assert admins.verify(conn, "ops", "first password here") is None
        who = conn.execute(sa.text("SELECT operation, resource_id FROM audit ORDER BY pk DESC"))
        assert who.first() == ("admin.delete", "ops")
    r = runner.invoke(app, ["admin", "delete", "ops", "--database-url", db])
    assert r.exit_code == 4 and "no admin named 'ops'" in r.output
    last = _ok("admin", "delete", "ada", "--database-url", db)
    assert "no admin is left: create one with `scimd admin create USERNAME`" in last
    assert _ok("admin", "list", "--database-url", db).strip() == "no admins"
    engine.dispose()


def _scimd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command (its entry point turns what a person can fix into one line)."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "scimd.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["apps", "list", "--database-url", "bogus"], {}, "not a database URL"),
        (["apps", "list", "--database-url", "mysql://x/y"], {}, "no driver for this database"),
        (
            ["apps", "create", "--name", "x", "--database-url", "sqlite:////etc/hostname"],
            {},
            "the database cannot be used",
        ),
        (["serve", "--config", "/nonexistent/scimd.toml"], {}, "cannot read the settings file"),
        (["serve", "--port", "99999"], {}, "--port: 99999 is not a TCP port"),
        (["serve"], {"SCIMD_PORT": "abc"}, "SCIMD_PORT: 'abc' is not a whole number"),
        (["serve"], {"SCIMD_DATABASE_TIMEOUT": "-1"}, "SCIMD_DATABASE_TIMEOUT: -1 is negative"),
        (
            ["serve", "--database-url", "sqlite:///:memory:"],
            {},
            "in-memory database: gone when the server stops",
        ),
        (["apps", "list", "--database-url", "postgres://u@h/d"], {}, "write postgresql+psycopg://"),
        (["apps", "list", "--database-url", "scimd.db"], {}, "e.g. sqlite:///scimd.db"),
        (
            ["serve", "--port", str(free_port()), "--database-url", "sqlite:////dev/null/x.db"],
            {},
            "cannot make the database's directory (File exists): /dev/null",
        ),
        (["apps", "create", "--name", "x", "--database-url", "sqlite://"], {}, "in-memory"),
        (
            ["serve", "--port", "0", "--database-url", "sqlite:////dev/null/never.db"],
            {},
            "port 0 would be a port chosen at random",
        ),
        (
            ["apps", "list", "--database-url", "mysql://u@h/d"],
            {},
            "scimd works with sqlite:///PATH and postgresql+psycopg://",
        ),
    ],
)
def test_user_errors_are_one_line_not_a_traceback(
    args: list[str], env: dict[str, str], said: str
) -> None:
    done = _scimd(*args, env=env)
    assert done.returncode == 1, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_commands_on_what_exists_do_not_create_a_database(tmp_path: Path) -> None:
    """A mistyped path answered "no applications" and left a new database behind."""
    missing = tmp_path / "nodir" / "typo.db"
    url = f"sqlite:///{missing}"
    for args in (
        ["apps", "list"],
        ["apps", "revoke", "some-id"],
        ["properties", "list"],
        ["properties", "remove", "P"],
    ):
        r = runner.invoke(app, [*args, "--database-url", url])
        assert r.exit_code == 1 and "no database at" in r.output, r.output
    done = _scimd("db", "current", "--database-url", url)  # it made an empty database
    assert done.returncode == 1 and "no database at" in done.stderr, done.stderr
    assert not missing.exists() and not missing.parent.exists()
    upgraded = _scimd("db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'up.db'}")
    assert f"note: created a new database at {tmp_path / 'up.db'}" in upgraded.stderr
    # Three slashes are relative to the current directory: said, with the absolute form.
    r = runner.invoke(app, ["apps", "list", "--database-url", "sqlite:///var/lib/typo.db"])
    assert "relative to the current directory" in r.output and "sqlite:////" in r.output
    # A command that makes what it needs says where it made the database.
    r = runner.invoke(app, ["apps", "create", "--name", "a", "--json", "--database-url", url])
    assert r.exit_code == 0 and f"note: created a new database at {missing}" in r.stderr
    assert json.loads(r.stdout)["client_secret"]
    r = runner.invoke(app, ["apps", "create", "--name", "b", "--json", "--database-url", url])
    assert r.exit_code == 0 and "note:" not in r.stderr


def test_apps_create_says_what_each_grant_type_s_secret_is_for(db: str) -> None:
    """A client credentials secret pasted as Entra's Secret Token is a 401."""
    bearer = _ok("apps", "create", "--name", "b", "--database-url", db)
    assert "paste it as Secret Token" in bearer
    cc = _ok(
        "apps", "create", "--name", "c", "--grant", "client_credentials", "--lifetime", "3600",
        "--database-url", db,
    )  # fmt: skip
    assert "Secret Token" not in cc and "exchange it at POST /oauth2/server/token" in cc


def test_a_database_scimd_did_not_make_is_refused_untouched(tmp_path: Path) -> None:
    """Another application's SQLite file got scimd's 13 tables added by `apps list`; one at a
    revision this scimd does not know (a newer scimd made it) gave a traceback."""
    foreign = tmp_path / "foreign.db"
    engine = sa.create_engine(f"sqlite:///{foreign}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    before = foreign.read_bytes()
    serve = ["serve", "--port", str(free_port())]  # not 8000: a tour's server may hold it
    for args in (["apps", "list"], ["apps", "create", "--name", "x"], ["db", "current"], serve):
        done = _scimd(*args, "--database-url", f"sqlite:///{foreign}")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "tables of something else (customers)" in done.stderr, done.stderr
    # Not a byte changed: it was switched to WAL (persistent, and not for every filesystem).
    assert foreign.read_bytes() == before
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["customers"]
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    _ok("apps", "create", "--name", "x", "--database-url", newer)
    newer_engine = sa.create_engine(newer)
    with newer_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    newer_engine.dispose()
    engine.dispose()
    for args in (["apps", "list"], ["db", "upgrade"], ["db", "current"], serve):
        done = _scimd(*args, "--database-url", newer)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "schema revision 0099, which this scimd does not know" in done.stderr


def test_printed_commands_work_as_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first start's hints name the command as it was run (the README runs
    .venv/bin/scimd, not on PATH) and never show the database password."""
    from scimd.cli import common, urls

    monkeypatch.setattr(sys, "argv", [".venv/bin/scimd", "serve"])
    assert common.self_command() == ".venv/bin/scimd"
    monkeypatch.setattr(sys, "argv", ["/x/scimd/cli/main.py", "serve"])
    assert common.self_command().endswith(" -m scimd.cli.main")
    # A relative path is printed absolute: run from another directory, the printed command
    # made a new, empty database there (and its token got 401s from the server).
    assert urls.url_argument("sqlite:///scimd.db") == shlex.quote(
        f"sqlite:///{Path.cwd() / 'scimd.db'}"
    )
    assert urls.url_argument("sqlite:////srv/a:b.db") == "sqlite:////srv/a:b.db"  # no "***"
    shown = urls.url_argument("postgresql+psycopg://u:secret@db/x?a=1&b=2")
    assert "secret" not in shown and shown.startswith("'postgresql+psycopg://u:***@db/x?a=1&b=2'")
    # libpq's password as a query parameter (the form with Unix sockets) was printed in clear.
    url = "postgresql+psycopg:///x?host=/run/postgresql&password=secret&sslpassword=s3cret"
    for shown in (urls.safe_url(url), urls.url_argument(url)):
        assert "secret" not in shown and "password=***&sslpassword=***" in shown
    assert urls.url_argument(url).endswith("# put the password back in place of ***")


def test_a_database_named_by_a_sqlite_uri_is_found(tmp_path: Path) -> None:
    """SQLite's URI form (``file:...?uri=true``) names a file the path check cannot see."""
    url = f"sqlite:///file:{tmp_path / 'uri.db'}?uri=true"
    _ok("apps", "create", "--name", "u", "--database-url", url)
    assert "'u'" in _ok("apps", "list", "--database-url", url)


def test_a_command_writes_while_a_server_commits_between_its_read_and_its_write(
    tmp_path: Path,
) -> None:
    """A command reads, then writes. A server committing in between (Entra provisioning)
    made the write fail at once with "database is locked" (SQLite refuses to upgrade a read
    snapshot that another writer moved past); a command's transaction now takes the write
    lock first, and the server's write waits for it instead."""
    import threading
    import time

    from scimd.cli.common import transaction

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    server_side = create_engine(url)
    errors: list[BaseException] = []

    def server_commits() -> None:
        try:
            with server_side.begin() as conn:
                conn.execute(sa.text("INSERT INTO settings (key, value) VALUES ('srv', '1')"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    try:
        with transaction(url) as conn:
            conn.execute(sa.text("SELECT count(*) FROM settings")).scalar_one()
            writer = threading.Thread(target=server_commits)
            writer.start()
            time.sleep(0.3)  # the server's write has either committed or is waiting for ours
            conn.execute(sa.text("INSERT INTO settings (key, value) VALUES ('cli', '1')"))
        writer.join(30)
        with server_side.connect() as conn:
            keys = set(conn.execute(sa.text("SELECT key FROM settings")).scalars())
    finally:
        server_side.dispose()
    assert not errors
    assert {"srv", "cli"} <= keys


def test_every_command_reads_the_settings_file(tmp_path: Path) -> None:
    """Only ``serve`` took --config: with the properties' URN set there, ``properties add``
    named the default URN and ``properties remove`` found no values under it and removed them
    without asking. ``scimd --config FILE`` (or SCIMD_CONFIG) now reaches every command, and a
    setting the file misspells is an error rather than a default."""
    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.directory import Directory

    urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:UserProperties"
    db = f"sqlite:///{tmp_path / 'conf.db'}"
    conf = tmp_path / "scimd.toml"
    conf.write_text(f'[scimd]\ndatabase_url = "{db}"\nproperties_urn = "{urn}"\n')
    out = _ok("--config", str(conf), "properties", "add", "Badge", "--type", "String")
    assert f"{urn}:Badge" in out
    d = Directory(create_engine(db), properties_urn=Settings(properties_urn=urn).properties_urn)
    d.create("User", {"userName": "c@x.com", urn: {"Badge": "B-7"}}, audit.CLI, "http://x")
    r = runner.invoke(app, ["--config", str(conf), "properties", "remove", "Badge"])
    assert r.exit_code == 1 and "1 user(s)" in r.output
    conf.write_text(f'[scimd]\ndatabse_url = "{db}"\n')
    r = runner.invoke(app, ["--config", str(conf), "apps", "list"])
    assert r.exit_code != 0 and "databse_url" in str(r.exception or r.output)


def test_settings_that_cannot_mean_what_was_written_are_errors(tmp_path: Path) -> None:
    """A public URL with a trailing slash gave //admin links, one without a scheme or with a
    path gave links that lead nowhere; settings beside a [scimd] table were ignored; and a
    misspelt boolean ("flase") quietly meant false."""
    from scimd.settings import SettingsError, load

    assert load(public_url="https://idp.example.com/").public_url == "https://idp.example.com"
    assert load(public_url="http://127.0.0.1:8000").public_url == "http://127.0.0.1:8000"
    for bad, said in (
        ("idp.example.com", "scheme://host"),
        ("ftp://idp.example.com", "scheme://host"),
        ("https://idp.example.com/scimd", "has a path"),
        ("https://idp.example.com/?x=1", "has a path"),
    ):
        with pytest.raises(SettingsError, match=said):
            load(public_url=bad)
    for bad in (
        "idp.example.com:abc",
        "https://idp.example.com:99999",
        "https://u:p@idp.example.com",
        5,
    ):
        with pytest.raises(SettingsError, match="not a"):
            load(public_url=bad)
    conf = tmp_path / "scimd.toml"
    conf.write_text('port = 8331\n[scimd]\nhost = "127.0.0.1"\n')
    with pytest.raises(SettingsError, match=r"outside its \[scimd\] table \(port\)"):
        load(str(conf))
    conf.write_text("[scimd]\nport = 8331\n[other_tool]\nx = 1\n")  # a shared file
    assert load(str(conf)).port == 8331
    with pytest.raises(SettingsError, match="'flase' is not true or false"):
        load(access_log="flase")
    assert load(access_log="off").access_log is False and load(access_log="Yes").access_log
    done = _scimd("apps", "list", env={"SCIMD_PUBLIC_URL": "idp.example.com"})
    assert done.returncode == 1 and "SCIMD_PUBLIC_URL" in done.stderr, done.stderr


def test_a_process_set_to_another_properties_urn_is_refused(db: str) -> None:
    """`properties remove` run with SCIMD_PROPERTIES_URN set otherwise than the server found
    no values under its URN, removed the definition without asking and left them behind."""
    from scimd.scim.schema import USER_PROPERTIES_SCHEMA as URN
    from scimd.store import audit
    from scimd.store.directory import Directory

    _ok("properties", "add", "Badge", "--type", "String", "--database-url", db)
    d = Directory(create_engine(db))
    d.create("User", {"userName": "u@x.com", URN: {"Badge": "B-7"}}, audit.CLI, "http://x")
    d.close()
    other = {"SCIMD_PROPERTIES_URN": "urn:example:other:2.0:UserProperties"}
    serve = ["serve", "--port", str(free_port())]
    for args in (["properties", "remove", "Badge", "--yes"], ["properties", "list"], serve):
        done = _scimd(*args, "--database-url", db, env=other)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"keeps custom user properties under {URN}" in done.stderr, done.stderr
        assert "scimd serving" not in done.stderr  # a refusal comes alone, no banner first
    assert "Badge" in _ok("properties", "list", "--database-url", db)
    # Until a property is defined the URN may change; the first definition records it.
    fresh = db.replace("cli.db", "fresh.db")
    _ok("properties", "add", "Floor", "--type", "Integer", "--database-url", fresh)
    _ok("properties", "remove", "Floor", "--database-url", fresh)
    _ok("properties", "add", "Desk", "--type", "String", "--database-url", fresh, env=other)
    done = _scimd("properties", "list", "--database-url", fresh)
    assert "keeps custom user properties under urn:example:other" in done.stderr, done.stderr


def test_a_property_is_defined_only_under_the_urn_its_server_started_with(db: str) -> None:
    """A command run without the server's SCIMD_PROPERTIES_URN defined a property under the
    default URN while the running server kept its values under its own: the server then
    refused to restart, and set as its error said, no longer saw the values."""
    from starlette.testclient import TestClient

    from scimd.settings import Settings
    from scimd.store import audit
    from scimd.store.directory import Directory
    from scimd.store.properties import UrnConflict
    from scimd.web.app import create_app

    acme = "urn:example:acme:2.0:Custom"
    ours = {"SCIMD_PROPERTIES_URN": acme}
    engine = create_engine(db)
    create_app(Settings(database_url=db, properties_urn=acme), engine)  # a server starts
    done = _scimd("properties", "add", "EmployeeNo", "--type", "String", "--database-url", db)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"server was started with custom user properties under {acme}" in done.stderr
    assert "EmployeeNo" not in _ok("properties", "list", "--database-url", db, env=ours)
    _ok("properties", "add", "EmployeeNo", "--type", "String", "--database-url", db, env=ours)
    # A second server started with another URN (nothing was defined when it started, had it
    # been) answers 503 rather than keep values where the database's other processes look not.
    d = Directory(engine, properties_urn="urn:example:other:2.0:Custom")
    with pytest.raises(UrnConflict, match=f"restart it with SCIMD_PROPERTIES_URN={acme}"):
        d.create("User", {"userName": "u@x.com"}, audit.CLI, "http://x")
    d.close()
    app = create_app(Settings(database_url=db, properties_urn=acme), engine)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200


def test_serve_on_an_address_in_use_says_so_before_printing_a_set_up_link(
    tmp_path: Path,
) -> None:
    """uvicorn reported a busy port only after the banner and a set-up link (pointing at the
    other server), as a JSON log line, without saying what to do."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _scimd(
            "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'p.db'}"
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "setup?token" not in done.stderr and "Traceback" not in done.stderr


def test_a_misspelt_environment_variable_is_pointed_out(db: str) -> None:
    """A misspelt SCIMD_ variable was silently ignored (the default database was used)."""
    _ok("apps", "create", "--name", "w", "--database-url", db)
    done = _scimd("apps", "list", "--database-url", db, env={"SCIMD_DATABSE_URL": "x"})
    assert done.returncode == 0, done.stderr
    assert (
        "warning: SCIMD_DATABSE_URL is not a scimd setting and is ignored"
        " (did you mean SCIMD_DATABASE_URL?)" in done.stderr
    )
    quiet = _scimd("apps", "list", "--database-url", db, env={"SCIMD_TEST_ANYTHING": "x"})
    assert "warning" not in quiet.stderr


def test_enabling_an_application_whose_secrets_are_revoked_says_what_to_do(db: str) -> None:
    """`apps revoke` revokes every secret; `apps enable` then said "enabled" while every
    request still got a 401."""
    made = json.loads(_ok("apps", "create", "--name", "r", "--json", "--database-url", db))
    cid = made["client_id"]
    _ok("apps", "revoke", cid, "--database-url", db)
    out = _ok("apps", "enable", cid, "--database-url", db)
    assert "every secret of it is revoked" in out and f"scimd apps rotate {cid}" in out
    rotated = _ok("apps", "rotate", cid, "--database-url", db)
    assert "Copy the secret now: it is not shown again." in rotated
    secret = rotated.split("client_secret: ")[1].split()[0]
    assert _authenticates(db, secret)
    _ok("apps", "disable", cid, "--database-url", db)
    assert _ok("apps", "enable", cid, "--database-url", db).strip() == f"enabled {cid}"


def test_a_full_disk_is_named_as_such(tmp_path: Path) -> None:
    """On a full disk SQLite says only "disk I/O error". A 1 MiB tmpfs in a private mount
    namespace (``unshare``: no root needed where user namespaces are allowed) is filled, and
    the server is started on a database there."""
    import os

    disk = tmp_path / "disk"
    disk.mkdir()
    with socket.socket() as probe:  # a free port (0 is refused: no link could name it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {disk} && "
        f"{shlex.quote(sys.executable)} -m scimd.cli.main apps create --name a"
        f" --database-url sqlite:///{disk}/s.db >/dev/null && "
        f"(dd if=/dev/zero of={disk}/fill bs=64k 2>/dev/null; true) && "
        f"{shlex.quote(sys.executable)} -m scimd.cli.main serve --port {port}"
        f" --database-url sqlite:///{disk}/s.db"
    )
    args = ["unshare", "--mount", "sh", "-c", script]
    if os.geteuid() != 0:
        args[1:1] = ["--map-root-user"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"the disk holding {disk} is full" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_audit_list_prints_records_whole(db: str) -> None:
    """`scimd audit list` prints records with their whole detail (the portal shortens long
    ones, and nothing else read the log), newest first, by resource or application."""
    a = json.loads(_ok("apps", "create", "--name", "lister", "--json", "--database-url", db))
    b = json.loads(_ok("apps", "create", "--name", "other", "--json", "--database-url", db))
    rows = json.loads(_ok("audit", "list", "--json", "--database-url", db))
    assert [(r["operation"], r["resource_id"]) for r in rows] == [
        ("app.create", b["client_id"]),
        ("app.create", a["client_id"]),
    ]
    assert rows[0]["detail"] == {"name": "other", "grant": "bearer", "scopes": ["API", "USER SYNC"]}
    one = json.loads(
        _ok("audit", "list", "--resource", a["client_id"], "--json", "--database-url", db)
    )
    assert [r["resource_id"] for r in one] == [a["client_id"]]
    text = _ok("audit", "list", "--limit", "1", "--database-url", db)
    assert text.count("\n") == 1 and "app.create" in text and b["client_id"] in text
    cut = runner.invoke(app, ["audit", "list", "--limit", "1", "--database-url", db])
    assert "(the newest record; --limit for more)" in cut.stderr  # not all were shown
    whole = runner.invoke(app, ["audit", "list", "--limit", "2", "--database-url", db])
    assert "--limit" not in whole.stderr  # exactly two: all of them
    assert a["client_secret"] not in text
    none = _ok("audit", "list", "--actor", "nobody", "--database-url", db)
    assert none.strip() == "no audit records"
    # A change an application made names it with the client id that --actor takes.
    engine = create_engine(db)
    with engine.begin() as conn:
        by_app = audit.Actor("app", a["client_id"], "lister", None)
        audit.record(conn, by_app, "create", "User", "u-1", {"userName": "u@x"})
    engine.dispose()
    line = _ok("audit", "list", "--limit", "1", "--database-url", db)
    assert f"lister ({a['client_id']})  create  User u-1" in line
    mine = _ok("audit", "list", "--actor", a["client_id"], "--json", "--database-url", db)
    assert [r["resource_id"] for r in json.loads(mine)] == ["u-1"]


def test_audit_prune_removes_old_records_in_batches_and_records_itself(db: str) -> None:
    """The audit log grew without bound (~8,000 records a minute under a busy sync) and
    nothing removed any: ``scimd audit prune --older-than DAYS``."""
    from scimd.store import audit as audit_mod
    from scimd.store.migrate import ensure_current
    from scimd.store.tables import audit as audit_table
    from support.live_server import run_scimd

    engine = create_engine(db)
    try:
        ensure_current(engine)
        with engine.begin() as conn:  # records are written in time order
            add_old_audit_records(conn, 7)
        _ok("apps", "create", "--name", "x", "--database-url", db)  # a recent record
        assert audit_mod.prune(engine, "2020-01-03T00:00:00.000Z", audit_mod.CLI, batch=1) == 2
        # As the documented command runs (python -m, the console script's module): the
        # command was first defined below the module's __main__ guard, and missing there.
        out = run_scimd("audit", "prune", "--older-than", "30", "--database-url", db).stdout
        assert "removed 5 audit record(s)" in out
        with engine.connect() as conn:
            left = conn.execute(
                sa.select(audit_table.c.operation, audit_table.c.detail).order_by(audit_table.c.pk)
            ).all()
    finally:
        engine.dispose()
    assert [op for op, _ in left] == ["app.create", "audit.prune", "audit.prune"]
    detail = left[-1][1]
    assert (json.loads(detail) if isinstance(detail, str) else detail)["removed"] == 5
    result = runner.invoke(app, ["audit", "prune", "--older-than", "0", "--database-url", db])
    assert result.exit_code != 0


def test_serve_says_when_it_made_a_new_database(tmp_path: Path) -> None:
    """`serve` on a mistyped path (sqlite:/// is relative) made a new empty database and
    said nothing: it looked like lost data. It says so, as the other commands do."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with start_server(url, log_dir=tmp_path / "first") as server:
        assert f"note: created a new database at {tmp_path / 'new.db'}" in server.stderr_text()
    with start_server(url, log_dir=tmp_path / "again") as server:
        assert "created a new database" not in server.stderr_text()


def test_application_names_are_short_plain_and_not_repeated(db: str) -> None:
    """A 5,000-character name filled the portal's list, a right-to-left override reversed the
    text after it wherever the name was shown, and two applications of one name were one in
    the audit log's filter."""
    _ok("apps", "create", "--name", "Entra ID", "--database-url", db)
    for name, said, status in (
        # Named as it exists, the name to look for in the list.
        ("entra id", "an application named 'Entra ID' exists (client id", 3),
        ("x" * 129, "at most 128 characters", 1),
        ("evil\u202etxt", "control or formatting characters (U+202E)", 1),
        ("bell\u0007", "(U+0007)", 1),
    ):
        r = runner.invoke(app, ["apps", "create", "--name", name, "--database-url", db])
        assert r.exit_code == status and said in r.output, r.output
    _ok("apps", "create", "--name", "x" * 128, "--database-url", db)
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a zero-width non-joiner
    _ok("apps", "create", "--name", persian, "--database-url", db)
    listed = json.loads(_ok("apps", "list", "--json", "--database-url", db))
    assert sorted(a["name"] for a in listed) == ["Entra ID", "x" * 128, persian]


def test_the_cli_as_a_scripts_api(db: str, tmp_path: Path) -> None:
    """From an audit of the CLI as scripts use it: names with a trailing newline (an Ansible
    block scalar) were new look-alike entries; an empty --database-url (an unset variable)
    wrote to ./scimd.db; read commands gave an empty database scimd's tables and answered
    "no applications"; arguments that are not UTF-8 and a console that is not were
    tracebacks; a CRLF password file kept its \\r; a precomposed é and e + accent were two
    application names; a description could hold line breaks."""
    import os

    _ok("apps", "create", "--name", "e\u0301", "--database-url", db)
    for args, said, status in (
        (["admin", "create", "alice\n", "--password-stdin"], "username", 1),
        (["properties", "add", "Nl\n", "--type", "String"], "invalid property name", 1),
        (["properties", "add", "Desc", "--type", "String", "--description", "a\nb"], "one line", 1),
        (["apps", "create", "--name", "\u00e9"], "exists", 3),
    ):
        done = _scimd(*args, "--database-url", db)
        assert done.returncode == status and said in done.stderr, (args, done.stderr)
    done = _scimd("apps", "list", "--database-url", "")
    assert done.returncode == 1 and "--database-url is empty" in done.stderr, done.stderr
    empty = tmp_path / "empty.db"
    empty.touch()
    done = _scimd("apps", "list", "--database-url", f"sqlite:///{empty}")
    assert done.returncode == 1 and "holds no scimd database" in done.stderr, done.stderr
    check = create_engine(f"sqlite:///{empty}")
    assert sa.inspect(check).get_table_names() == []  # no tables made
    check.dispose()
    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "scimd.cli.main",
            "apps",
            "create",
            "--name",
            b"bad\xff",
            "--database-url",
            db,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert raw.returncode == 1 and "Traceback" not in raw.stderr, raw.stderr
    latin = _scimd("apps", "list", "--database-url", db, env={"PYTHONIOENCODING": "latin-1"})
    assert latin.returncode == 0 and "Traceback" not in latin.stderr, latin.stderr
    crlf = subprocess.run(
        [
            sys.executable,
            "-m",
            "scimd.cli.main",
            "admin",
            "create",
            "carol",
            "--password-stdin",
            "--database-url",
            db,
        ],
        input="pw-with-crlf-123456\r\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert crlf.returncode == 0, crlf.stderr
    from scimd.auth import admins as admins_mod

    engine = create_engine(db)
    with engine.connect() as conn:
        assert admins_mod.verify(conn, "carol", "pw-with-crlf-123456") is not None
    engine.dispose()


def test_a_secret_that_cannot_be_shown_is_not_made(db: str) -> None:
    """With standard output closed, `apps rotate` made a secret nobody had, and exited 0."""
    cid = json.loads(_ok("apps", "create", "--name", "r", "--json", "--database-url", db))[
        "client_id"
    ]
    closed = subprocess.run(
        f"{shlex.quote(sys.executable)} -m scimd.cli.main apps rotate {cid}"
        f" --database-url {shlex.quote(db)} >&-",
        shell=True,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert closed.returncode == 1 and "standard output is closed" in closed.stderr
    listed = json.loads(_ok("apps", "list", "--json", "--database-url", db))
    assert len(listed[0]["secrets"]) == 1


def test_version_and_a_check_that_an_upgrade_is_due(tmp_path: Path) -> None:
    """A script could not ask which scimd it runs (`--version` was a usage error), nor learn
    from `db current`'s exit status that the database is behind."""
    from scimd.store import migrate

    done = _scimd("--version")
    assert done.returncode == 0 and done.stdout.startswith("scimd ")
    assert f"(schema {migrate.head()})" in done.stdout
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine, "0008")
    engine.dispose()
    behind = _scimd("db", "current", "--check", "--database-url", url)
    assert behind.returncode == 1 and "current: 0008" in behind.stdout
    said = json.loads(_ok("db", "current", "--json", "--database-url", url))
    assert said == {"current": "0008", "head": migrate.head(), "upgrade_due": True}
    assert _scimd("db", "current", "--database-url", url).returncode == 0
    _scimd("db", "upgrade", "--database-url", url)
    assert _scimd("db", "current", "--check", "--database-url", url).returncode == 0


def test_exit_statuses_tell_taken_missing_and_busy_apart(db: str, tmp_path: Path) -> None:
    """Every failure exited 1, so a script (Ansible's `failed_when`) could not tell "the name
    is taken" (fine on a re-run) from "not found" or "the database was busy; retry" without
    parsing the message. A command also waited a fixed 30 s for another process's write lock,
    whatever `SCIMD_DATABASE_TIMEOUT` said."""
    import sqlite3

    _ok("apps", "create", "--name", "Entra", "--database-url", db)
    _ok("properties", "add", "Badge", "--type", "String", "--database-url", db)
    for args, status in (
        (["apps", "create", "--name", "ENTRA"], 3),
        (["properties", "add", "badge", "--type", "Integer"], 3),
        (["apps", "revoke", "00000000-0000-4000-8000-000000000000"], 4),
        (["properties", "remove", "Nothing"], 4),
        (["admin", "delete", "nobody"], 4),
        (["apps", "create", "--name", "x", "--scope", "NOPE"], 1),
    ):
        done = _scimd(*args, "--database-url", db)
        assert done.returncode == status, (args, done.returncode, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    holder = sqlite3.connect(db.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        done = _scimd(
            "apps",
            "create",
            "--name",
            "Okta",
            "--database-url",
            db,
            env={"SCIMD_DATABASE_TIMEOUT": "1"},
        )
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 5, done.stderr
    assert "another process holds its write lock" in done.stderr and "retry" in done.stderr
    names = [a["name"] for a in json.loads(_ok("apps", "list", "--json", "--database-url", db))]
    assert names == ["Entra"]


def test_json_from_the_commands_scripts_read_back(db: str) -> None:
    """`properties add`, `db current` and `audit prune` printed only prose a script had to
    parse (the attribute path to map in Entra, the revisions, the count removed)."""
    from scimd.scim.schema import USER_PROPERTIES_SCHEMA as DEFAULT_PROPERTIES_URN

    added = json.loads(
        _ok("properties", "add", "Badge", "--type", "Integer", "--json", "--database-url", db)
    )
    assert added == {
        "name": "Badge",
        "type": "Integer",
        "description": "",
        "path": f"{DEFAULT_PROPERTIES_URN}:Badge",
    }
    current = json.loads(_ok("db", "current", "--json", "--database-url", db))
    assert current["current"] == current["head"] and current["upgrade_due"] is False
    pruned = json.loads(_ok("audit", "prune", "--older-than", "1", "--json", "--database-url", db))
    assert pruned["removed"] == 0 and pruned["before"].endswith("Z")


def test_an_empty_file_made_into_a_database_is_noted_and_ipv6_urls_have_brackets(
    tmp_path: Path,
) -> None:
    """A database deleted under a running server left an empty file at its path (made by the
    server's next connection); a restart gave it new tables without the "created a new
    database" note, and the data looked merely gone. And the banner wrote an IPv6 address
    as http://::1:8000, which opens nothing."""
    from scimd.cli.serve import _listen_url

    empty = tmp_path / "empty.db"
    empty.touch()
    done = _scimd("db", "upgrade", "--database-url", f"sqlite:///{empty}")
    assert done.returncode == 0 and f"created a new database at {empty}" in done.stderr
    again = _scimd("db", "upgrade", "--database-url", f"sqlite:///{empty}")
    assert "created a new database" not in again.stderr
    assert _listen_url("::1", 8000) == "http://[::1]:8000"
    assert _listen_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"


def test_db_backup_copies_a_database_a_server_writes_to(db: str, tmp_path: Path) -> None:
    """`scimd db backup FILE`: one step of SQLite's backup, which writes of a running server
    do not restart (the sqlite3 shell's `.backup` never finished at Entra's pace), then the
    copy's integrity check. It never overwrites, and PostgreSQL is pointed to pg_dump."""
    import threading

    from scimd.store import audit
    from scimd.store.directory import Directory

    token = json.loads(
        _ok(
            "apps",
            "create",
            "--name",
            "b",
            "--grant",
            "bearer",
            "--scope",
            "USER SYNC",
            "--json",
            "--database-url",
            db,
        )
    )["client_secret"]
    d = Directory(create_engine(db))
    stop = threading.Event()

    def write() -> None:  # a server's writes meanwhile
        i = 0
        while not stop.is_set():
            d.create("User", {"userName": f"b{i}@x.com"}, audit.CLI, "http://x")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copy = tmp_path / "backup.db"
        done = _scimd("db", "backup", str(copy), "--json", "--database-url", db)
    finally:
        stop.set()
        writer.join()
        d.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "backup": str(copy),
        "bytes": copy.stat().st_size,
        "integrity": "ok",
    }
    assert _authenticates(f"sqlite:///{copy}", token)
    again = _scimd("db", "backup", str(copy), "--database-url", db)
    assert again.returncode == 3 and "never overwrites" in again.stderr
    pg = _scimd(
        "db",
        "backup",
        str(tmp_path / "pg.db"),
        "--database-url",
        "postgresql+psycopg://u@127.0.0.1:1/x",
    )
    assert pg.returncode == 1 and "pg_dump" in pg.stderr and not (tmp_path / "pg.db").exists()
    missing = _scimd(
        "db",
        "backup",
        str(tmp_path / "m.db"),
        "--database-url",
        f"sqlite:///{tmp_path / 'nothing.db'}",
    )
    assert missing.returncode == 1 and not (tmp_path / "nothing.db").exists()
    nowhere = _scimd("db", "backup", str(tmp_path / "no" / "dir.db"), "--database-url", db)
    assert nowhere.returncode == 1 and "cannot write in" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr  # it was a traceback of SQLite's error


def test_a_database_url_with_a_bad_port_is_one_line(tmp_path: Path) -> None:
    """A port that is not a number ("db.example:5432x", "host:/db") was a ValueError from
    SQLAlchemy and a 90-line traceback from every command and `serve`. One line now, without
    the URL's password."""
    import os

    bad = "postgresql+psycopg://scimd:s3cret-pw@db.example:5432x/scimd"
    for args, env in (
        (["apps", "list", "--database-url", bad], {}),
        (["apps", "list"], {"SCIMD_DATABASE_URL": bad}),
        (["serve", "--port", "0"], {"SCIMD_DATABASE_URL": "postgresql+psycopg://u@h:/db"}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "scimd.cli.main", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert "host or port cannot be read" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert "s3cret-pw" not in done.stderr


def _links_to(fd: Path, name: str) -> bool:
    """Whether the open file ``fd`` (of /proc/PID/fd) is one named ``name``."""
    try:
        return Path(os.readlink(fd)).name == name
    except OSError:  # closed meanwhile
        return False


def test_ctrl_c_stops_a_command_waiting_for_the_write_lock(tmp_path: Path) -> None:
    """SQLite's busy handler sleeps in C: a command waiting behind another process's write
    lock (a server, a backup) ignored Ctrl-C until the lock was freed (with
    database_timeout 0, possibly never). It stops now while the lock is still held, having
    changed nothing."""
    import os
    import signal
    import sqlite3
    import time

    url = f"sqlite:///{tmp_path / 'held.db'}"
    _ok("db", "upgrade", "--database-url", url)  # makes the database
    holder = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        command = ["apps", "create", "--name", "late", "--grant", "bearer"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "scimd.cli.main", *command, "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SCIMD_DATABASE_TIMEOUT": "0"},  # waits for ever
        )
        # Ctrl-C during Python's start-up (imports) is Python's own traceback: signal it once
        # it has the database open, which its own code does (a loaded machine took over 3 s
        # to get there, and a fixed pause of 2 s failed the test).
        # And from there reach its wait: a fixed pause of 0.2 s failed on a loaded machine.
        # Its wait sleeps between tries (the kernel shows the sleep in /proc/PID/wchan);
        # three polls in a row in that sleep are the wait, not a pause on the way.
        fds = Path(f"/proc/{proc.pid}/fd")
        wchan = Path(f"/proc/{proc.pid}/wchan")
        deadline = time.monotonic() + 60
        asleep = 0
        while asleep < 3:
            assert proc.poll() is None, proc.communicate()  # (ended: its /proc entry goes)
            opened = any(_links_to(fd, "held.db") for fd in fds.iterdir())
            asleep = asleep + 1 if opened and "nanosleep" in wchan.read_text() else 0
            assert time.monotonic() < deadline, "the command never waited for the lock"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # It ends while the lock is still held (before, only once the holder let go).
        out, err = proc.communicate(timeout=30)
        assert proc.returncode != 0, out
        assert "Traceback" not in err, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "late" not in _ok("apps", "list", "--database-url", url)


def test_a_command_behind_a_postgresql_lock_gives_up_after_database_timeout(
    postgres_url: str,
) -> None:
    """On PostgreSQL a command behind another session's lock ignored database_timeout (it
    waited as long as the lock was held): it now stops after it, with the busy status (5)."""
    import os

    _ok("db", "upgrade", "--database-url", postgres_url)
    holder = sa.create_engine(postgres_url)
    with holder.connect() as conn:
        conn.execute(sa.text("LOCK TABLE applications IN ACCESS EXCLUSIVE MODE"))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "scimd.cli.main",
                "apps",
                "create",
                "--name",
                "x",
                "--grant",
                "bearer",
                "--database-url",
                postgres_url,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "SCIMD_DATABASE_TIMEOUT": "1"},
            timeout=60,
        )
        conn.rollback()
    holder.dispose()
    assert done.returncode == 5, done.stderr
    assert "busy" in done.stderr and "nothing was changed" in done.stderr


def test_a_directory_given_as_the_database_is_said_to_be_one(tmp_path: Path) -> None:
    """SQLite's "unable to open database file (PATH)" did not say that PATH is a directory."""
    url = f"sqlite:///{tmp_path}"
    done = subprocess.run(
        [sys.executable, "-m", "scimd.cli.main", "apps", "list", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{tmp_path} is a directory: name a file in it" in done.stderr, done.stderr


def test_db_current_on_an_empty_database_says_there_is_no_schema_yet(tmp_path: Path) -> None:
    """From an audit: on an empty file it printed "current: None", Python's word, and --check
    exited 1 saying nothing more."""
    empty = tmp_path / "empty.db"
    empty.touch()
    done = _scimd("db", "current", "--check", "--database-url", f"sqlite:///{empty}")
    assert done.returncode == 1 and "None" not in done.stdout, done.stdout
    assert "current: none (no scimd schema yet: `scimd db upgrade`" in done.stdout


def test_a_property_type_with_spaces_around_it_is_read(db: str) -> None:
    """A type pasted from a form or a script (" Integer ") names the type as the other
    spellings do, rather than being refused as unknown."""
    added = json.loads(
        _ok("properties", "add", "Level", "--type", " Integer ", "--json", "--database-url", db)
    )
    assert added["type"] == "Integer"


def test_apps_list_json_is_ascii(db: str) -> None:
    """`apps list --json` escapes what is not ASCII (the secret hint's "…" as \\u2026), so a
    script or a console in another encoding reads the same JSON."""
    _ok("apps", "create", "--name", "A", "--grant", "bearer", "--json", "--database-url", db)
    out = _ok("apps", "list", "--json", "--database-url", db)
    assert out.isascii() and "\\u2026" in out
    assert json.loads(out)[0]["secrets"][0]["hint"].endswith("…")


def test_a_command_on_a_current_database_loads_only_what_it_needs(tmp_path: Path) -> None:
    """Scripts run a command per step (`scimd apps create`, `apps list`): each one paid ~0.25 s
    for Alembic and its migration scripts, and for a dummy password digest made at import,
    though a database at the newest revision needs neither. A server start likewise loaded
    httpx and SQLAlchemy's ORM, which only the portal's connection check and PostgreSQL use."""
    db = f"sqlite:///{tmp_path / 'loads.db'}"
    _ok(
        "apps", "create", "--name", "x", "--grant", "bearer", "--scope", "API", "--database-url", db
    )
    probe = (
        "import sys\n"
        "from scimd.cli.main import main\n"
        "sys.argv = ['scimd', 'apps', 'list', '--database-url', sys.argv[1]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "import scimd.web.app, scimd.auth.admins as a\n"
        "print(sorted(m for m in ('alembic', 'httpx', 'sqlalchemy.orm') if m in sys.modules))\n"
        "print(a._dummy.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, db], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == ["[]", "0"], done.stdout
