"""Typed settings from the environment (``SCIMD_*``) and an optional TOML file.

Read by ``web`` and ``cli`` only and passed down explicitly; nothing below them reads the
environment.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scimd.scim.schema import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    USER_PROPERTIES_SCHEMA,
    USER_SCHEMA,
)

DEFAULT_DATABASE_URL = "sqlite:///scimd.db"
# A hundred years: a retention past it is a typo (and a date before year 1 for the cutoff).
MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    # Public base URL (scheme://host[:port]) used in Location/meta.location; derived from the
    # request when empty.
    public_url: str = ""
    # Largest page a client can ask for (advertised in ServiceProviderConfig.filter.maxResults).
    max_results: int = 1000
    default_count: int = 100
    # Request body cap in bytes (also Bulk maxPayloadSize).
    max_payload: int = 1_048_576
    max_bulk_operations: int = 1000
    properties_urn: str = USER_PROPERTIES_SCHEMA
    # Failed bearer authentications allowed per client address per minute before 429.
    auth_failures_per_minute: int = 30
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed (comma-
    # separated addresses or networks, "*" for any; uvicorn's --forwarded-allow-ips); empty:
    # none, the client is the TCP peer. Loopback by default, for the TLS proxy on the same
    # host that the docs recommend: believing nobody made every client 127.0.0.1, one bucket
    # of the sign-in limits that anyone could fill to keep every admin out. A proxy that
    # passes a client's X-Forwarded-For on unchanged (a raw TCP proxy) lets clients pick their
    # address per attempt: name nobody ("") then. (uvicorn takes the rightmost address not
    # believed, so nginx's $proxy_add_x_forwarded_for cannot be spoofed through.)
    forwarded_allow_ips: str = "127.0.0.1"
    # Key signing portal session cookies; empty = generated once and kept in the database.
    session_secret: str = ""
    log_level: str = "info"
    access_log: bool = True
    # SCIM requests that may wait on a network database (PostgreSQL) at once, each with a read
    # and a write connection (``store.onloop``); the others queue. SQLite needs none. 8 beat 4
    # once concurrent reads shared statements (more of them wait together).
    database_connections: int = 8
    # Seconds a request may wait for PostgreSQL (a call, or opening a connection) before its
    # connections are closed and it is answered 503; 0 waits forever. A server that is up but
    # silent otherwise holds every request until the clients give up.
    database_timeout: int = 30
    # Seconds a stopping server (SIGTERM, Ctrl+C) waits for requests in progress; then it
    # closes their connections. Without a bound one client sending its body a byte at a time
    # kept the process alive until it was killed (losing the last access log lines).
    shutdown_timeout: int = 15
    # Seconds an idle keep-alive connection stays open. Longer than the proxies in front keep
    # theirs (nginx and cloud load balancers: 60 s): uvicorn's 5 s closed connections a proxy
    # was about to reuse, and a request sent at that moment got no answer (a 502).
    keep_alive_timeout: int = 75
    # Days of audit records a server keeps: older ones are deleted at start and hourly
    # (``store.retention``). 0 keeps every record (``scimd audit prune`` removes them by hand):
    # an audit trail is deleted only when its owner says how long it must be kept.
    audit_retention_days: int = 0


# SCIMD_ variables that are not settings: the settings file, and the test and benchmark tools'.
_NOT_SETTINGS = ("SCIMD_CONFIG", "SCIMD_SCREENSHOTS")
_OTHER_TOOLS = ("SCIMD_TEST_", "SCIMD_BENCH_", "SCIMD_FUZZ_")


def unknown_environment() -> list[str]:
    """What to say about ``SCIMD_`` variables that name no setting: a misspelt one was
    silently ignored (``SCIMD_DATABSE_URL`` ran on the default database)."""
    known = {f"SCIMD_{f.name.upper()}" for f in fields(Settings)}
    out = []
    for name in sorted(os.environ):
        if (
            not name.startswith("SCIMD_")
            or name in known
            or name in _NOT_SETTINGS
            or name.startswith(_OTHER_TOOLS)
        ):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is not a scimd setting and is ignored{guess}")
    return out


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot be used, said so that a person can fix it."""


# A host name or an IP address (IPv6 without its brackets, as urlsplit gives it).
_HOST = re.compile(r"[A-Za-z0-9.\-_]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9.\-_~]+)?")


def check_database_url(url: str, where: str) -> None:
    """Refuse a database URL SQLAlchemy cannot read, in one line: a port that is not a number
    ("host:5432x", "host:/db") was a ValueError and a 90-line traceback from every command.
    The message does not repeat the URL, which may hold a password."""
    try:
        make_url(url)
    except (ValueError, ArgumentError) as e:
        why = (
            "its host or port cannot be read"
            if isinstance(e, ValueError)
            else "it cannot be parsed"
        )
        raise SettingsError(
            f"{where}: not a database URL ({why}): write e.g. sqlite:///scimd.db or"
            " postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None


def _public_url(value: str, where: str | None) -> str:
    """``scheme://host[:port]``, without a trailing slash: locations and links are built by
    appending paths to it (``https://idp.example.com/`` gave ``//admin``), and the portal's
    own links are absolute paths, so a path prefix cannot work behind it."""
    label = where or "public_url"
    if not isinstance(value, str):
        raise SettingsError(f"{label}: {value!r} is not a URL (write it as a string)")
    parts = urlsplit(value.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or past 65535
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.username is not None
        or parts.netloc.endswith(":")  # an empty port
        or not _HOST.fullmatch(parts.hostname)  # "idp example.com", "idp.example.com\\admin"
    ):
        idna = " (an internationalised host name in its xn-- form)" if not value.isascii() else ""
        raise SettingsError(
            f"{label}: {value!r} is not a base URL: write scheme://host[:port]{idna}, e.g."
            " https://idp.example.com"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise SettingsError(
            f"{label}: {value!r} has a path; scimd must be served at the root of its host"
            " (https://idp.example.com, its SCIM base then being /scim/v2)"
        )
    return f"{parts.scheme}://{parts.netloc}"


# Settings with a least value: a negative max_results was a negative LIMIT (no paging at
# all on SQLite), 0 answered every list with no Resources (Entra then created users that
# existed: 409s), and a max_payload of 0 refused every write as too large.
_AT_LEAST: tuple[tuple[str, int, str], ...] = (
    ("max_results", 1, "the largest page a client may ask for"),
    ("default_count", 1, "the page size when a client names none"),
    ("max_payload", 1024, "the largest request body, in bytes"),
    ("max_bulk_operations", 1, "operations per Bulk request"),
    ("auth_failures_per_minute", 1, "failed authentications per address per minute"),
    ("database_connections", 1, "requests waiting on PostgreSQL at once"),
)
MIN_SESSION_SECRET = 32
# Schemas a custom-properties URN must not be: their attributes would be replaced by the
# properties (the enterprise extension's manager, which Entra sends, became "not a property").
_RESERVED_URNS = frozenset(u.lower() for u in (USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_SCHEMA))


def _whole(v: Any, where: str) -> int:
    """A whole number, from an int or a string of one: int() read a TOML 18233.9 as 18233 and
    true as 1 (a server on port 1)."""
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise SettingsError(f"{where}: {v!r} is not a whole number")
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"{where}: {v!r} is not a whole number") from None


def _check_urn(urn: str, where: str) -> None:
    """The custom properties' schema URN is written into the database with the first property:
    an empty one (properties at ":Name", a schema with id "") or a core schema's stays there."""
    parts = urn.split(":")
    if (
        len(parts) < 3
        or parts[0].lower() != "urn"
        or not all(parts)
        or any(c.isspace() or not c.isprintable() for c in urn)
    ):
        raise SettingsError(
            f"{where}: {urn!r} is not a schema URN (urn:...:Name, no spaces, no empty part), e.g."
            f" {USER_PROPERTIES_SCHEMA}"
        )
    odd = sorted({c for c in urn if c in '[]()",'})
    if odd:
        # Filters, PATCH paths and attribute lists end a URN at these: no property under it
        # could be named in a filter, a path or ``attributes``.
        raise SettingsError(
            f"{where}: {urn!r} holds {' '.join(odd)}, which end an attribute path in filters,"
            f" PATCH paths and attribute lists; use a URN without them, e.g."
            f" {USER_PROPERTIES_SCHEMA}"
        )
    if urn.lower() in _RESERVED_URNS or urn.lower().startswith("urn:ietf:params:scim:api:"):
        raise SettingsError(
            f"{where}: {urn} is a schema SCIM defines; custom properties need a URN of their own,"
            f" e.g. {USER_PROPERTIES_SCHEMA}"
        )


def _check_proxies(value: str, where: str) -> None:
    """uvicorn reads an entry it cannot parse ("localhost", "127.0.0.1/8", a space-separated
    list) as a literal that matches no address: the proxy's header was silently not believed,
    and every client shared the proxy's sign-in limit."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if "*" in entries and len(entries) > 1:  # uvicorn trusts any only for "*" alone
        raise SettingsError(f"{where}: '*' (any proxy) stands alone, not in a list")
    for entry in entries:
        if entry == "*":
            continue
        try:
            if "/" in entry:
                ipaddress.ip_network(entry)
            else:
                ipaddress.ip_address(entry)
        except ValueError as e:
            raise SettingsError(
                f"{where}: {entry!r} is not an IP address or network ({e}); separate entries"
                " with commas, e.g. 127.0.0.1,10.0.0.0/8"
            ) from None


def load(config_file: str | None = None, **overrides: Any) -> Settings:
    """Defaults, then the TOML file (``[scimd]`` table or top level), then env, then overrides."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    path = config_file or os.environ.get("SCIMD_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:  # was blamed on the command's arguments
            raise SettingsError(
                f"the settings file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8"
            ) from None
        except OSError as e:
            raise SettingsError(f"cannot read the settings file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"the settings file {path} is not valid TOML: {e}") from None
        table = data.get("scimd", data)
        stray = sorted(k for k, v in data.items() if k != "scimd" and not isinstance(v, dict))
        if "scimd" in data and stray:  # these were silently ignored (other tables may be)
            raise SettingsError(
                f"the settings file {path} has settings outside its [scimd] table"
                f" ({', '.join(stray)}): put every setting in the table, or none"
            )
        if not isinstance(table, dict):
            raise SettingsError(f"the settings file {path}: [scimd] must be a table")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(k for k in table if k not in known and k != "scimd")
        if unknown:  # a typo must not quietly run the server on its defaults
            raise SettingsError(
                f"the settings file {path} names unknown setting(s): {', '.join(unknown)}"
                f" (known: {', '.join(sorted(known))})"
            )
        values.update(table)
        where.update({k: f"'{k}' in {path}" for k in table})
    for f in fields(Settings):
        env = os.environ.get(f"SCIMD_{f.name.upper()}")
        if env is not None:
            values[f.name] = env
            where[f.name] = f"SCIMD_{f.name.upper()}"
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    where.update({k: f"--{k.replace('_', '-')}" for k in given})
    s = Settings()
    typed: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in values:
            default = getattr(s, f.name)
            v = values[f.name]
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    word = str(v).strip().lower()
                    # "flase" meant false, silently; so did an empty variable (${UNSET} in a
                    # compose file turned the access log off)
                    if word not in _TRUE + _FALSE:
                        raise SettingsError(
                            f"{where[f.name]}: {v!r} is not true or false (true/false, yes/no,"
                            " on/off, 1/0)"
                        )
                    v = word in _TRUE
            elif isinstance(default, int):
                v = _whole(v, where[f.name])
            elif f.name == "forwarded_allow_ips" and isinstance(v, list):  # TOML's natural form
                if not all(isinstance(x, str) for x in v):
                    raise SettingsError(f"{where[f.name]}: {v!r} must list addresses as strings")
                v = ",".join(v)
            elif not isinstance(v, str):  # a TOML number or list: a traceback at start
                raise SettingsError(
                    f"{where[f.name]}: {v!r} is not a string (quote it in the file)"
                )
            typed[f.name] = v
    out = replace(s, **typed)
    if not 0 <= out.port <= 65535:
        raise SettingsError(f"{where.get('port', 'port')}: {out.port} is not a TCP port (0-65535)")
    for name, least, what in _AT_LEAST:
        if getattr(out, name) < least:
            raise SettingsError(
                f"{where.get(name, name)}: {getattr(out, name)} is too small ({what}; at least"
                f" {least})"
            )
    if out.default_count > out.max_results:
        if "default_count" in where:
            raise SettingsError(
                f"{where['default_count']}: {out.default_count} is more than max_results"
                f" ({out.max_results}), the largest page"
            )
        out = replace(out, default_count=out.max_results)  # only max_results was lowered
    if out.keep_alive_timeout < 1:
        raise SettingsError(
            f"{where.get('keep_alive_timeout', 'keep_alive_timeout')}:"
            f" {out.keep_alive_timeout} is not a number of seconds (1 or more)"
        )
    for name in ("database_timeout", "shutdown_timeout"):
        if getattr(out, name) < 0:
            raise SettingsError(
                f"{where.get(name, name)}: {getattr(out, name)} is negative (seconds; 0 waits"
                " forever)"
            )
    if not 0 <= out.audit_retention_days <= MAX_RETENTION_DAYS:
        raise SettingsError(
            f"{where.get('audit_retention_days', 'audit_retention_days')}:"
            f" {out.audit_retention_days} is not a number of days from 0 (keep every record)"
            f" to {MAX_RETENTION_DAYS}"
        )
    check_database_url(out.database_url, where.get("database_url", "database_url"))
    if out.public_url:
        out = replace(out, public_url=_public_url(out.public_url, where.get("public_url")))
    _check_urn(out.properties_urn, where.get("properties_urn", "properties_urn"))
    _check_proxies(out.forwarded_allow_ips, where.get("forwarded_allow_ips", "forwarded_allow_ips"))
    if out.session_secret and len(out.session_secret) < MIN_SESSION_SECRET:
        raise SettingsError(
            f"{where.get('session_secret', 'session_secret')}: {len(out.session_secret)}"
            f" characters; a key signing sessions needs at least {MIN_SESSION_SECRET} (e.g."
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or leave it"
            " empty for one kept in the database"
        )
    if out.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(
            f"{where.get('log_level', 'log_level')}: {out.log_level!r} is not a log level"
            " (DEBUG, INFO, WARNING, ERROR or CRITICAL)"
        )
    return out
