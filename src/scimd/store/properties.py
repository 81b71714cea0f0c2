"""Custom user properties (the UserProperties extension's attributes), defined at runtime.

Definitions live in the database; a ``schema_version`` setting is bumped with every change so
each server process notices with one cheap read and rebuilds its User resource type.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError, OperationalError

from scimd.scim import schema as S
from scimd.scim.errors import InvalidValue, NotFound, ScimError, Uniqueness
from scimd.scim.values import now_datetime
from scimd.store import audit as A
from scimd.store import modified, versions
from scimd.store.migrate import DatabaseUnsupported
from scimd.store.prepared import dump_json
from scimd.store.tables import settings, user_properties, users

_NAME_MAX = 128
_DESCRIPTION_MAX = 1024
_NAME = re.compile(rf"^[A-Za-z][A-Za-z0-9_]{{0,{_NAME_MAX - 1}}}$")
# The common attributes: inside an extension object clients repeat "schemas", and "id" or
# "meta" there would read as the resource's own.
_RESERVED = frozenset({"id", "schemas", "meta"})
UNSUPPORTED = {
    "reference": "references to other objects",
    "complex": "complex (structured) values",
    "binary": "binary data",
    "multivalued": "multi-valued lists",
    "multi-valued": "multi-valued lists",
    "list": "multi-valued lists",
    "array": "multi-valued lists",
    "parametric": "values linked to parametric tables",
    "entity": "values linked to parametric tables",
}


def canonical_type(name: str) -> str:
    """Map a type name given in any case to one of ``schema.PROPERTY_TYPES``, or explain."""
    for t in S.PROPERTY_TYPES:
        if t.lower() == name.strip().lower():
            return t
    low = name.strip().lower()
    allowed = ", ".join(S.PROPERTY_TYPES)
    if low in UNSUPPORTED:
        raise InvalidValue(
            f"type '{name}' is not supported: custom properties hold basic types only "
            f"({allowed}); {UNSUPPORTED[low]} are not supported, as in Entra's set-up for this app"
        )
    raise InvalidValue(f"unknown type '{name}': choose one of {allowed}")


def schema_version(conn: sa.Connection) -> int:
    return versions.read_one(conn, versions.SCHEMA)


def list_properties(conn: sa.Connection) -> list[S.PropertyDef]:
    rows = conn.execute(sa.select(user_properties).order_by(user_properties.c.pk))
    return [S.PropertyDef(r.name, r.type, r.description) for r in rows]


# The URN the database's users hold their custom property values under, recorded when a
# property is defined: a process configured otherwise (SCIMD_PROPERTIES_URN) would not see the
# values, and `properties remove` run with it found none and left them behind. While no
# property is defined the URN may change freely. (A database whose properties were defined
# before it was recorded gets it with the next definition.)
URN_SETTING = "properties_urn"
# The URN the database's server was last started with: a property is defined under it only.
SERVER_URN_SETTING = "properties_urn_server"


def recorded_urn(conn: sa.Connection, key: str = URN_SETTING) -> str | None:
    stored: str | None = conn.execute(
        sa.select(settings.c.value).where(settings.c.key == key)
    ).scalar_one_or_none()
    return stored


def _any_property(conn: sa.Connection) -> bool:
    return conn.execute(sa.select(user_properties.c.pk).limit(1)).first() is not None


def check_urn(conn: sa.Connection, urn: str, record: bool = False) -> None:
    """Refuse a process set to another URN than the one the database's properties are
    under; ``record``: note ``urn`` as the database's."""
    stored = recorded_urn(conn)
    if stored == urn:
        return
    if stored is not None and _any_property(conn):
        raise DatabaseUnsupported(
            f"this database keeps custom user properties under {stored}, but this process is"
            f" set to {urn}: set SCIMD_PROPERTIES_URN={stored} (or properties_urn in the"
            " settings file) to use it"
        )
    if record:
        _record(conn, URN_SETTING, urn)


def _record(conn: sa.Connection, key: str, value: str) -> None:
    insert: Any = (
        sqlite.insert(settings) if conn.dialect.name == "sqlite" else postgresql.insert(settings)
    )
    conn.execute(
        insert.values(key=key, value=value).on_conflict_do_update(
            index_elements=[settings.c.key], set_={"value": value}
        )
    )


def record_server_urn(conn: sa.Connection, urn: str) -> None:
    """A server starting with ``urn`` (``check_urn`` has accepted it)."""
    if recorded_urn(conn, SERVER_URN_SETTING) != urn:
        _record(conn, SERVER_URN_SETTING, urn)


def _claim_urn(conn: sa.Connection, urn: str) -> None:
    """Before a property is defined under ``urn``: refuse when the database's server was
    started with another. A command run without the server's SCIMD_PROPERTIES_URN defined
    the property under the default URN while the server wrote its values under its own; the
    server then refused to start, and set as its error said, no longer saw those values."""
    server = recorded_urn(conn, SERVER_URN_SETTING)
    if server is not None and server != urn:
        raise DatabaseUnsupported(
            f"this database's server was started with custom user properties under {server},"
            f" but this process is set to {urn}: set SCIMD_PROPERTIES_URN={server} (or"
            " properties_urn in the settings file) to define properties for it (to use"
            " another URN while no property is defined, start the server with it first)"
        )
    check_urn(conn, urn, record=True)


def check_loaded_urn(conn: sa.Connection, urn: str) -> None:
    """For a running server reloading the properties: refuse when they were defined under
    another URN (a second server started with it) rather than take values under ``urn``,
    where the database's other processes would not see them."""
    stored = recorded_urn(conn)
    if stored is not None and stored != urn and _any_property(conn):
        raise UrnConflict(
            f"this server is set to keep custom user properties under {urn}, but the"
            f" database's properties are under {stored} (another server was started with"
            f" it): restart it with SCIMD_PROPERTIES_URN={stored}"
        )


class UrnConflict(ScimError):
    status = 503


def add_property(
    conn: sa.Connection,
    name: str,
    type_name: str,
    description: str,
    actor: A.Actor,
    urn: str = S.USER_PROPERTIES_SCHEMA,
) -> S.PropertyDef:
    """Define a property whose values users hold under ``urn`` (recorded, ``check_urn``)."""
    description = description.strip()
    if len(description) > _DESCRIPTION_MAX or any(
        unicodedata.category(c) == "Cc" for c in description
    ):
        # /Schemas serves it, and `properties list` prints it one line a property.
        raise InvalidValue(
            f"a property's description is one line of at most {_DESCRIPTION_MAX} characters,"
            " without control characters"
        )
    if len(name) > _NAME_MAX:
        raise InvalidValue(
            f"invalid property name '{name[:40]}...': at most {_NAME_MAX} characters"
        )
    if not _NAME.fullmatch(name):  # match()'s $ also took a trailing newline
        raise InvalidValue(
            f"invalid property name '{name}': start with a letter; ASCII letters (A-Z, a-z),"
            " digits and _ only"
        )
    if name.lower() in _RESERVED:
        raise InvalidValue(
            f"invalid property name '{name}': id, schemas and meta name every resource's own"
            " attributes (RFC 7643 §3.1); choose another name"
        )
    if name.lower() in S.USER.attr or name.lower() in S.COMMON:
        core = (S.USER.attr.get(name.lower()) or S.COMMON[name.lower()]).name
        raise InvalidValue(
            f"invalid property name '{name}': the User resource already has '{core}' (RFC 7643"
            " §4.1), and a name without its schema means that one; choose another name"
        )
    if name.lower() in S.ENTERPRISE_USER.attr:
        raise InvalidValue(
            f"invalid property name '{name}': the enterprise extension ({S.ENTERPRISE_SCHEMA})"
            f" defines '{S.ENTERPRISE_USER.attr[name.lower()].name}', and Entra sends it"
            " without its schema (manager, department); choose another name"
        )
    t = canonical_type(type_name)
    _claim_urn(conn, urn)
    exists = _definition(conn, name)
    if exists is not None:
        raise Uniqueness(f"custom property '{exists.name}' is already defined")
    try:
        conn.execute(
            user_properties.insert().values(
                name=name,
                name_lower=name.lower(),
                type=t,
                description=description,
                created=now_datetime(),
            )
        )
    except IntegrityError:  # the same name added at the same moment by another process
        raise Uniqueness(f"custom property '{name}' is already defined") from None
    versions.bump(conn, versions.SCHEMA)
    A.record(conn, actor, "property.add", "UserProperty", name, {"type": t})
    return S.PropertyDef(name, t, description)


def _definition(conn: sa.Connection, name: str) -> Any:
    """The definition named ``name`` in any case (its canonical name, type, ...), or None."""
    return conn.execute(
        sa.select(user_properties).where(user_properties.c.name_lower == name.lower())
    ).first()


def _has_value(conn: sa.Connection, name: str, urn: str) -> Any:
    if conn.dialect.name == "sqlite":
        return sa.func.json_type(users.c.doc, f'$."{urn}"."{name}"').is_not(None)
    return users.c.doc.op("#>")(sa.literal([urn, name], sa.ARRAY(sa.Text))).is_not(None)


def count_values(conn: sa.Connection, name: str, urn: str) -> int:
    """How many users hold a value for the property (shown before removing it), by its name
    in any case, as ``remove_property`` finds it (0 for a name not defined)."""
    row = _definition(conn, name)
    if row is None:
        return 0
    cond = _has_value(conn, row.name, urn)
    return int(conn.execute(sa.select(sa.func.count()).select_from(users).where(cond)).scalar_one())


def value_counts(conn: sa.Connection, names: list[str], urn: str) -> dict[str, int]:
    """How many users hold a value for each property, in one pass over the users table."""
    if not names:
        return {}
    cols = [
        sa.func.coalesce(sa.func.sum(sa.case((_has_value(conn, n, urn), 1), else_=0)), 0)
        for n in names
    ]
    row: tuple[Any, ...] = tuple(conn.execute(sa.select(*cols).select_from(users)).one())
    return {n: int(v) for n, v in zip(names, row, strict=True)}


class ValuesHeld(ScimError):
    """Users hold values of a property whose removal was not confirmed for them."""

    status = 409

    def __init__(self, name: str, held: int) -> None:
        super().__init__(
            f"{held} user(s) hold a value for '{name}'; confirm to remove them with it"
        )
        self.held = held


# How long a removal waits for user writes in progress (PostgreSQL) before giving up: while it
# waits, every new user write queues behind it.
LOCK_WAIT_MS = 5000


def remove_property(
    conn: sa.Connection,
    name: str,
    actor: A.Actor,
    urn: str = S.USER_PROPERTIES_SCHEMA,
    *,
    confirmed: bool = True,
) -> tuple[S.PropertyDef, int]:
    """Remove a definition and the values users hold for it; how many held one. Without
    ``confirmed``, users holding values (counted once writes are held off) are a
    ``ValuesHeld``: a count taken before could be stale by the time of the removal."""
    if conn.dialect.name == "postgresql":
        # Writes of users wait until this commits, and those in progress finish first (their
        # row locks conflict too): otherwise a write judged by the old definitions that
        # committed after the strip below, but before the counter moved, kept a value of the
        # property (measured: 5-9 of 50 racing POSTs), which a later property of the same
        # name and another type would then read. Reads go on. SQLite serialises writes.
        conn.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}"))
        try:
            conn.execute(sa.text("LOCK TABLE users IN EXCLUSIVE MODE"))
        except OperationalError as e:
            if getattr(e.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise ScimError(
                f"users were being written for more than {LOCK_WAIT_MS // 1000} s (a long"
                f" transaction?); '{name}' was not removed: try again",
                status=503,
            ) from None
        conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
    row = _definition(conn, name)
    if row is None:
        raise NotFound(f"custom property '{name}' is not defined")
    if not confirmed:
        held_now = count_values(conn, row.name, urn)
        if held_now:
            raise ValuesHeld(row.name, held_now)
    conn.execute(user_properties.delete().where(user_properties.c.pk == row.pk))
    # A user whose only property it was keeps no empty extension object: a PUT of what a GET
    # returns would otherwise differ from it, and give the user a new version.
    if conn.dialect.name == "sqlite":
        without: Any = sa.func.json_remove(users.c.doc, f'$."{urn}"."{row.name}"')
        emptied: Any = sa.func.json_extract(without, f'$."{urn}"') == "{}"
        no_ext: Any = sa.func.json_remove(users.c.doc, f'$."{urn}"')
    else:
        without = users.c.doc.op("#-")(sa.literal([urn, row.name], sa.ARRAY(sa.Text)))
        emptied = without.op("->")(sa.literal(urn)) == sa.cast(sa.literal("{}"), JSONB)
        no_ext = users.c.doc.op("-")(sa.literal(urn))
    stripped = sa.case((emptied, no_ext), else_=without)
    # The users who hold a value, found in one scan (writes of users wait meanwhile); then each
    # gets a record in its history and a new version (an ETag taken before must not match),
    # both by primary key.
    where = _has_value(conn, row.name, urn)
    holders = [pk for (pk,) in conn.execute(sa.select(users.c.pk).where(where))]
    held = len(holders)
    if holders:
        if conn.dialect.name == "sqlite":
            by_pk, detail = "pk IN (SELECT value FROM json_each(:pks))", ":detail"
        else:
            by_pk = (
                "pk IN (SELECT CAST(value AS BIGINT)"
                " FROM jsonb_array_elements_text(CAST(:pks AS JSONB)))"
            )
            detail = "CAST(:detail AS JSON)"
        pks = dump_json(holders)
        lost = {"property": row.name, "type": row.type}
        conn.execute(
            sa.text(
                "INSERT INTO audit (at, actor_type, actor, actor_name, operation, resource_type,"
                " resource_id, detail, request_id) SELECT :at, :actor_type, :actor, :actor_name,"
                f" :operation, :resource_type, id, {detail}, :request_id FROM users"
                f" WHERE {by_pk} ORDER BY pk"
            ),
            {**A.values(actor, "property.remove", "User", None, lost), "pks": pks},
        )
        conn.execute(
            users.update()
            .where(sa.text(by_pk))
            .values(
                doc=stripped,
                version=users.c.version + 1,
                last_modified=modified.after(conn, users.c.last_modified, now_datetime()),
            ),
            {"pks": pks},
        )
    versions.bump(conn, versions.SCHEMA)
    A.record(
        conn,
        actor,
        "property.remove",
        "UserProperty",
        row.name,
        {"type": row.type, "values_removed": held},
    )
    return S.PropertyDef(row.name, row.type, row.description), held
