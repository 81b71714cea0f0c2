"""The SQL filter compiler (``scimd.store.sqlfilter``) against the in-memory evaluator.

``scimd.scim.query.matches`` is the reference semantics: every example checks the rows that
``compile_filter`` selects against the resources ``matches`` accepts, on SQLite and (with
``SCIMD_TEST_POSTGRES_URL``) PostgreSQL, and the property tests do the same on random data.
"""

from __future__ import annotations

import os
import string
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scimd.scim import schema as S
from scimd.scim.errors import InvalidFilter, InvalidValue
from scimd.scim.filter import AttrPath, Filter, Present, parse, render_literal
from scimd.scim.query import bind, matches, values_at
from scimd.scim.values import fold
from scimd.store import tables
from scimd.store.engine import create_engine
from scimd.store.sqlfilter import compile_filter, sort_clauses, sort_key, sort_value
from support.live_server import sqlite_url

PG_ENV = "SCIMD_TEST_POSTGRES_URL"
BASE = "https://scim.example.test/scim/v2"
ENT = S.ENTERPRISE_SCHEMA
PROPS = S.USER_PROPERTIES_SCHEMA
RT = S.user_type(
    [
        S.PropertyDef("Level", "Integer"),
        S.PropertyDef("Score", "Decimal"),
        S.PropertyDef("Vip", "Boolean"),
        S.PropertyDef("HiredAt", "DateTime"),
        S.PropertyDef("Code", "String"),
        S.PropertyDef("Birthday", "Date"),
    ]
)
GT = S.GROUP_TYPE
T0 = "2024-01-01T00:00:00.000Z"

# Generated strings: ASCII (with LIKE's wildcards and escape character, and JSON's quote), plus
# letters outside ASCII, among them those PostgreSQL's own lower() maps unlike Python's (under
# C.UTF-8): "İ" (U+0130, which Python lowers to "i̇", two code points) and "Σ" (a final sigma
# at the end of a word). Both backends must fold them as Python does.
ASCII_CHARS = string.ascii_letters + string.digits + ' @._%-\\"'
EXTRA_CHARS = "éÉäÄöÖßñÑøØåÅçÇþÞ😀İΣσς"


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """One database with the scimd tables, and what the tests need to know about it."""

    name: str
    engine: sa.Engine
    alphabet: str


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """The scimd tables in a temporary SQLite file, or in a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlfilter") / "filter.db"
        engine = create_engine(sqlite_url(path))
        tables.metadata.create_all(engine)
        yield Backend("sqlite", engine, ASCII_CHARS + EXTRA_CHARS)
        engine.dispose()
        return
    url = os.environ.get(PG_ENV)
    if not url:
        reason = f"{PG_ENV} is not set: no PostgreSQL server to test against"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    base = create_engine(url)
    schema = f"test_sqlfilter_{uuid.uuid4().hex[:12]}"
    with base.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    engine = base.execution_options(schema_translate_map={None: schema})
    try:
        tables.metadata.create_all(engine)
        yield Backend("postgresql", engine, ASCII_CHARS + EXTRA_CHARS)
    finally:
        with base.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        base.dispose()


# --------------------------------------------------------------------------------------------
# Resources in the storage layout, and as the repository renders them
# --------------------------------------------------------------------------------------------


@dataclass
class StoredUser:
    """A user row: ``doc`` is the canonical resource without id, meta and groups."""

    id: str
    doc: dict[str, Any]
    created: str = T0
    last_modified: str = T0
    version: int = 1


@dataclass
class StoredGroup:
    """A group row and its ``members`` rows: (member id, "User" or "Group")."""

    id: str
    doc: dict[str, Any]
    members: list[tuple[str, str]] = field(default_factory=list)
    created: str = T0
    last_modified: str = T0
    version: int = 1


def _meta(kind: str, endpoint: str, r: StoredUser | StoredGroup) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": r.created,
        "lastModified": r.last_modified,
        "location": f"{BASE}/{endpoint}/{r.id}",
        "version": f'W/"{r.version}"',
    }


def render_user(u: StoredUser, groups: list[StoredGroup]) -> dict[str, Any]:
    """The user as the repository returns it (what ``matches`` sees)."""
    r: dict[str, Any] = {"id": u.id, **u.doc, "meta": _meta("User", "Users", u)}
    mine = [
        {"value": g.id, "$ref": f"{BASE}/Groups/{g.id}", "display": g.doc["displayName"]}
        | {"type": "direct"}
        for g in groups
        if (u.id, "User") in g.members
    ]
    if mine:
        r["groups"] = mine
    return r


def render_group(g: StoredGroup) -> dict[str, Any]:
    """The group as the repository returns it."""
    r: dict[str, Any] = {"id": g.id, **g.doc, "meta": _meta("Group", "Groups", g)}
    if g.members:
        r["members"] = [{"value": m, "type": t, "$ref": f"{BASE}/{t}s/{m}"} for m, t in g.members]
    return r


def insert(
    conn: sa.Connection, users: Sequence[StoredUser], groups: Sequence[StoredGroup] = ()
) -> None:
    """Write users, groups and memberships the way the repository stores them."""
    if users:
        conn.execute(
            tables.users.insert(),
            [
                {
                    "id": u.id,
                    "user_name": u.doc["userName"],
                    "user_name_lower": fold(u.doc["userName"]),
                    "external_id": u.doc.get("externalId"),
                    "active": u.doc.get("active"),
                    "created": u.created,
                    "last_modified": u.last_modified,
                    "version": u.version,
                    "doc": u.doc,
                }
                for u in users
            ],
        )
    for g in groups:
        pk: int = conn.execute(
            tables.groups.insert()
            .values(
                id=g.id,
                display_name=g.doc["displayName"],
                display_name_lower=fold(g.doc["displayName"]),
                external_id=g.doc.get("externalId"),
                created=g.created,
                last_modified=g.last_modified,
                version=g.version,
                doc=g.doc,
            )
            .returning(tables.groups.c.pk)
        ).scalar_one()
        if g.members:
            conn.execute(
                tables.members.insert(),
                [{"group_pk": pk, "member_id": m, "member_type": t} for m, t in g.members],
            )


def sql_ids(conn: sa.Connection, backend: Backend, f: Filter, rt: S.ResourceType) -> set[str]:
    """Ids of the rows the compiled filter selects."""
    table = tables.users if rt.name == "User" else tables.groups
    cond = compile_filter(f, rt, table, backend.name)
    return set(conn.scalars(sa.select(table.c.id).where(cond)))


def attr_path(text: str, rt: S.ResourceType | None = None) -> AttrPath:
    """The attribute path ``text`` parsed (and bound to ``rt`` if given)."""
    f = parse(f"{text} pr")
    if rt is not None:
        f = bind(f, rt)
    assert isinstance(f, Present)
    return f.path


def model_ids(resources: list[dict[str, Any]], f: Filter, rt: S.ResourceType) -> set[str]:
    """Ids of the resources the in-memory evaluator accepts."""
    return {r["id"] for r in resources if matches(f, r, rt)}


@pytest.fixture
def conn(backend: Backend) -> Iterator[sa.Connection]:
    """A connection in a transaction that is rolled back after the test."""
    with backend.engine.connect() as connection:
        trans = connection.begin()
        try:
            yield connection
        finally:
            trans.rollback()


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------

EXAMPLE_USERS = [
    StoredUser(
        "u1",
        {
            "userName": "Alice@Example.com",
            "externalId": "ext-A",
            "active": True,
            "displayName": "Alice Smith",
            "title": "Engineer",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [
                {"type": "home", "value": "alice@home.example"},
                {"type": "work", "value": "alice@work.example", "primary": True},
            ],
            ENT: {"department": "R&D", "manager": {"value": "u2"}},
            PROPS: {
                "Level": 3,
                "Score": 2.5,
                "Vip": True,
                "HiredAt": "2020-01-02T03:04:05.000Z",
                "Code": "A-1",
                "Birthday": "1990-05-06",
            },
        },
        created="2023-01-01T00:00:00.000Z",
        version=2,
    ),
    StoredUser(
        "u2",
        {
            "userName": "bob",
            "externalId": "ext-b",
            "active": False,
            "title": "",
            "name": {"givenName": ""},
            "emails": [{"type": "Work", "value": "BOB@Work.Example"}],
            ENT: {"department": "Sales"},
            PROPS: {
                "Level": 10,
                "Score": -1,
                "Vip": False,
                "HiredAt": "2021-06-30T12:00:00.000Z",
                "Code": "50%_x",
            },
        },
        created="2023-06-01T00:00:00.000Z",
    ),
    StoredUser("u3", {"userName": "50%_x-ray", "emails": []}),
    StoredUser("u4", {"userName": "50zz_x", "emails": [{"type": "work"}]}),
    StoredUser("u5", {"userName": "back\\slash", "displayName": "Ça Ölçer"}),
]
EXAMPLE_GROUPS = [
    StoredGroup("g1", {"displayName": "Admins"}, [("u1", "User"), ("g2", "Group")]),
    StoredGroup(
        "g2", {"displayName": "Staff", "externalId": "gx"}, [("u1", "User"), ("u2", "User")]
    ),
    StoredGroup("g3", {"displayName": "Empty"}),
]

USER_CASES: list[tuple[str, set[str]]] = [
    ('userName eq "alice@example.com"', {"u1"}),
    ('userName eq "ALICE@EXAMPLE.COM"', {"u1"}),
    ('userName ne "bob"', {"u1", "u3", "u4", "u5"}),
    ('userName sw "ALI"', {"u1"}),
    ('userName co "50%_x"', {"u3"}),
    ('userName co "0z"', {"u4"}),
    ('userName co "k\\\\s"', {"u5"}),
    ('userName ew "BOB"', {"u2"}),
    ('userName gt "b"', {"u2", "u5"}),
    ('userName le "50zz_x"', {"u3", "u4"}),
    ('externalId eq "ext-A"', {"u1"}),
    ('externalId eq "EXT-A"', set()),
    ('externalId sw "ext-"', {"u1", "u2"}),
    ('externalId sw ""', {"u1", "u2"}),
    ('externalId co "T-"', set()),
    ('externalId ew "-b"', {"u2"}),
    ('externalId ew "-B"', set()),
    ("externalId pr", {"u1", "u2"}),
    ("externalId eq null", {"u3", "u4", "u5"}),
    ('externalId ne "ext-A"', {"u2", "u3", "u4", "u5"}),
    ("externalId eq jyoung", set()),
    ('id eq "u1"', {"u1"}),
    (f'schemas eq "{ENT}"', {"u1", "u2"}),
    (f'schemas eq "{ENT.upper()}"', {"u1", "u2"}),
    ('schemas eq "urn:ietf:params:scim:schemas:core:2.0:User"', {"u1", "u2", "u3", "u4", "u5"}),
    ('schemas co "enterprise"', {"u1", "u2"}),
    (f'schemas ne "{ENT}"', {"u3", "u4", "u5"}),
    ('schemas eq "urn:unknown"', set()),
    ("schemas pr", {"u1", "u2", "u3", "u4", "u5"}),
    ('id eq "U1"', set()),
    ('emails[type eq "work"].value eq "bob@work.example"', {"u2"}),
    ('emails[type eq "work" and value co "ALICE"]', {"u1"}),
    ('emails[type eq "work"]', {"u1", "u2", "u4"}),
    ('emails[not (type eq "work")]', {"u1"}),
    ('emails[type ne "home"]', {"u1", "u2", "u4"}),
    ("emails[value pr and primary eq true]", {"u1"}),
    ('emails.value ew "EXAMPLE"', {"u1", "u2"}),
    ('emails eq "alice@home.example"', {"u1"}),
    ('emails.value ne "alice@home.example"', {"u2", "u3", "u4", "u5"}),
    ("emails pr", {"u1", "u2", "u4"}),
    ("emails.value pr", {"u1", "u2"}),
    # A complex attribute compared as a whole means its value: "emails.value eq null".
    ("emails eq null", {"u3", "u4", "u5"}),
    ("title pr", {"u1"}),
    ("title eq null", {"u2", "u3", "u4", "u5"}),
    ('title ne "engineer"', {"u2", "u3", "u4", "u5"}),
    ('title eq ""', {"u2"}),
    ('title sw ""', {"u1", "u2"}),
    ('displayName eq "ça ölçer"', {"u5"}),
    ('displayName co "ÖL"', {"u5"}),
    ("name pr", {"u1"}),
    ("name.givenName pr", {"u1"}),
    ('name.givenName eq "alice"', {"u1"}),
    ("active eq true", {"u1"}),
    ("active eq false", {"u2"}),
    ("active ne true", {"u2", "u3", "u4", "u5"}),
    ("active pr", {"u1", "u2"}),
    (f'{ENT}:department eq "r&d"', {"u1"}),
    ('department co "ALE"', {"u2"}),
    ('manager eq "u2"', {"u1"}),
    ('manager.value eq "U2"', set()),
    (f"{ENT}:manager pr", {"u1"}),
    (f"{PROPS}:Level gt 5", {"u2"}),
    (f"{PROPS}:Level ge 3", {"u1", "u2"}),
    (f"{PROPS}:Level eq 3", {"u1"}),
    (f"{PROPS}:Level ne 3", {"u2", "u3", "u4", "u5"}),
    (f"{PROPS}:Score lt 0", {"u2"}),
    (f"{PROPS}:Score ge 2.5", {"u1"}),
    (f"{PROPS}:Score gt 2", {"u1"}),
    (f'{PROPS}:Level eq "10"', {"u2"}),
    (f"{PROPS}:Vip eq true", {"u1"}),
    (f'{PROPS}:Vip eq "False"', {"u2"}),
    (f"{PROPS}:Vip ne true", {"u2", "u3", "u4", "u5"}),
    (f'{PROPS}:HiredAt gt "2020-06-01T00:00:00Z"', {"u2"}),
    (f'{PROPS}:HiredAt eq "2020-01-02T04:04:05+01:00"', {"u1"}),
    # A literal finer than the stored millisecond compares exactly (it was cut first).
    (f'{PROPS}:HiredAt lt "2020-01-02T03:04:05.0001Z"', {"u1"}),
    (f'{PROPS}:HiredAt le "2020-01-02T03:04:05.0001Z"', {"u1"}),
    (f'{PROPS}:HiredAt ge "2020-01-02T03:04:05.0001Z"', {"u2"}),
    (f'{PROPS}:HiredAt gt "2020-01-02T03:04:04.9999Z"', {"u1", "u2"}),
    (f'{PROPS}:HiredAt ge "2020-01-02T03:04:04.9999Z"', {"u1", "u2"}),
    (f'{PROPS}:HiredAt lt "2020-01-02T03:04:04.9999Z"', set()),
    (f'{PROPS}:HiredAt eq "2020-01-02T03:04:05.0009Z"', set()),
    (f'{PROPS}:HiredAt ne "2020-01-02T03:04:05.0009Z"', {"u1", "u2", "u3", "u4", "u5"}),
    # Seven digits, as .NET writes them (Python's datetime keeps six).
    (f'{PROPS}:HiredAt eq "2020-01-02T03:04:05.0000001Z"', set()),
    (f'{PROPS}:HiredAt lt "2020-01-02T03:04:05.0000001Z"', {"u1"}),
    (f'{PROPS}:HiredAt eq "2020-01-02T04:04:05.0000000+01:00"', {"u1"}),
    (f'{PROPS}:Code co "%_"', {"u2"}),
    (f'{PROPS}:Code eq "a-1"', {"u1"}),
    (f'{PROPS}:Birthday lt "2000-01-01"', {"u1"}),
    (f"{PROPS}:Birthday pr", {"u1"}),
    # A Date is a string in /Schemas: its text takes co/sw/ew (they were a 400).
    (f'{PROPS}:Birthday sw "1990-"', {"u1"}),
    (f'{PROPS}:Birthday co "-05-"', {"u1"}),
    (f'{PROPS}:Birthday ew "-07"', set()),
    ('groups.value eq "g2"', {"u1", "u2"}),
    ('groups.value eq "G1"', set()),  # ids are case-exact
    ('groups[display eq "admins"]', {"u1"}),
    ('groups[display sw "st" and not (value eq "g1")]', {"u1", "u2"}),
    ('groups.type eq "direct"', {"u1", "u2"}),
    ('groups.type eq "indirect"', set()),
    ("groups pr", {"u1", "u2"}),
    ("not (groups pr)", {"u3", "u4", "u5"}),
    ('groups.value ne "g1"', {"u2", "u3", "u4", "u5"}),
    ('meta.created lt "2023-03-01T00:00:00Z"', {"u1"}),
    ('meta.lastModified eq "2024-01-01T00:00:00Z"', {"u1", "u2", "u3", "u4", "u5"}),
    ('meta.resourceType eq "User"', {"u1", "u2", "u3", "u4", "u5"}),
    ('meta.resourceType eq "user"', set()),
    ('meta.version eq "W/\\"2\\""', {"u1"}),
    ("meta pr", {"u1", "u2", "u3", "u4", "u5"}),
    ('userName sw "a" or active eq false', {"u1", "u2"}),
    ('not (userName sw "a" or active eq false) and title eq null', {"u3", "u4", "u5"}),
    ("not (not (externalId pr))", {"u1", "u2"}),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_filter_examples(
    backend: Backend, conn: sa.Connection, text: str, expected: set[str]
) -> None:
    """Each example user filter selects the expected users, as the evaluator does."""
    insert(conn, EXAMPLE_USERS, EXAMPLE_GROUPS)
    f = bind(parse(text), RT)
    resources = [render_user(u, EXAMPLE_GROUPS) for u in EXAMPLE_USERS]
    assert model_ids(resources, f, RT) == expected
    assert sql_ids(conn, backend, f, RT) == expected


GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "ADMINS"', {"g1"}),
    ('displayName ne "admins"', {"g2", "g3"}),
    ('displayName sw "s"', {"g2"}),
    ('displayName co "MPT"', {"g3"}),
    ('externalId eq "gx"', {"g2"}),
    ('externalId eq "GX"', set()),
    ('members[value eq "u1"]', {"g1", "g2"}),
    ('members.value eq "u2"', {"g2"}),
    ('members.value eq "U2"', set()),
    ('members[type eq "group"]', {"g1"}),
    ('members[type eq "User" and value eq "u2"]', {"g2"}),
    ('members[not (type eq "User")]', {"g1"}),
    ('members.value ne "u1"', {"g3"}),
    ('members eq "g2"', {"g1"}),
    ("members pr", {"g1", "g2"}),
    ("members eq null", {"g3"}),
    ("members.type pr", {"g1", "g2"}),
    ('meta.resourceType eq "Group"', {"g1", "g2", "g3"}),
    ('id eq "g3" or members.value sw "g"', {"g1", "g3"}),
]


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filter_examples(
    backend: Backend, conn: sa.Connection, text: str, expected: set[str]
) -> None:
    """Each example group filter selects the expected groups, as the evaluator does."""
    insert(conn, EXAMPLE_USERS, EXAMPLE_GROUPS)
    f = bind(parse(text), GT)
    assert model_ids([render_group(g) for g in EXAMPLE_GROUPS], f, GT) == expected
    assert sql_ids(conn, backend, f, GT) == expected


UNSUPPORTED = [
    (GT, 'members.$ref eq "x"'),
    (GT, 'members[display eq "x"]'),
    (GT, "members.display pr"),
    (RT, 'groups.$ref eq "x"'),
    (RT, 'meta.location eq "x"'),
    (GT, "meta.location pr"),
]


@pytest.mark.parametrize(("rt", "text"), UNSUPPORTED, ids=[c[1] for c in UNSUPPORTED])
def test_unsupported_attributes_raise_invalid_filter(
    backend: Backend, rt: S.ResourceType, text: str
) -> None:
    """Attributes that are not stored are rejected at compile time with invalidFilter."""
    table = tables.users if rt is RT else tables.groups
    with pytest.raises(InvalidFilter, match="not supported") as refused:
        compile_filter(bind(parse(text), rt), rt, table, backend.name)
    if "meta.location" in text:  # it says what to filter on
        assert "filter on id" in str(refused.value.detail)


def test_literals_are_bound_parameters(backend: Backend) -> None:
    """No literal value is written into the SQL text; all are bound parameters."""
    marker = "zz'; DROP TABLE users; --"
    text = (
        f"userName eq {render_literal(marker)} or title co {render_literal(marker)}"
        f" or emails[value sw {render_literal(marker)}] or {PROPS}:Level gt 12345"
        f" or groups.display ew {render_literal(marker)}"
    )
    cond = compile_filter(bind(parse(text), RT), RT, tables.users, backend.name)
    compiled = sa.select(tables.users.c.id).where(cond).compile(dialect=backend.engine.dialect)
    assert "DROP" not in str(compiled)
    assert "12345" not in str(compiled)
    assert marker.lower() in compiled.params.values()


def test_wrong_json_types_never_match_nor_error(backend: Backend, conn: sa.Connection) -> None:
    """Values of unexpected JSON types behave as in the evaluator and raise no database error."""
    odd = [
        StoredUser(
            "w1",
            {
                "userName": "w1",
                "title": 5,
                "active": None,
                "emails": "work",
                "name": ["x"],
                PROPS: {"Level": "12", "Vip": "true", "Score": True, "HiredAt": 3},
            },
        ),
        StoredUser(
            "w2",
            {
                "userName": "w2",
                "emails": ["work", 7, {"type": ["work"], "value": {"a": "b"}}],
                "displayName": False,
                PROPS: {"Level": 12.0, "Score": "1", "Code": {"x": 1}},
            },
        ),
        StoredUser("w3", {"userName": "w3", ENT: "Sales", PROPS: [1, 2]}),
        StoredUser(
            "w4", {"userName": "w4", "emails": ["home"], PROPS: {"Score": "x1", "Level": True}}
        ),
        # Only "" values: returned, so listed in schemas (the SQL said absent).
        StoredUser("w5", {"userName": "w5", ENT: {"department": ""}, PROPS: {"Code": ""}}),
        StoredUser("w6", {"userName": "w6", ENT: {}, PROPS: {}}),
    ]
    odd[0].doc.pop("active")
    texts = [
        'title eq "5"',
        'title sw "5"',
        "title pr",
        f"{PROPS}:Level gt 1",
        f"{PROPS}:Level eq 12",
        f"{PROPS}:Vip eq true",
        f"{PROPS}:Score ge 0",
        f'{PROPS}:HiredAt gt "2000-01-01T00:00:00Z"',
        f'{PROPS}:Code co "x"',
        f"{PROPS}:Code pr",
        'emails.value eq "work"',
        'emails[type eq "work"]',
        'emails[not (type eq "home")]',
        "emails pr",
        "emails.value pr",
        'name.givenName eq "x"',
        "name pr",
        'department eq "sales"',
        'displayName eq "false"',
        "displayName pr",
        f'schemas eq "{ENT}"',
        f'schemas eq "{PROPS}"',
        f'not (schemas eq "{PROPS}")',
    ]
    insert(conn, odd)
    resources = [render_user(u, []) for u in odd]
    for text in texts:
        f = bind(parse(text), RT)
        assert sql_ids(conn, backend, f, RT) == model_ids(resources, f, RT), text


def test_binary_values_compare_case_exactly(backend: Backend, conn: sa.Connection) -> None:
    """RFC 7643 §2.3.6: a binary is case exact; base64 "TUlJ" and "tulj" are other bytes."""
    certs = [StoredUser("c1", {"userName": "c1", "x509Certificates": [{"value": "TUlJ"}]})]
    insert(conn, certs)
    resources = [render_user(u, []) for u in certs]
    for text, want in (
        ('x509Certificates.value eq "TUlJ"', {"c1"}),
        ('x509Certificates.value eq "tulj"', set()),
        ('x509Certificates[value sw "tulj"]', set()),
        ('x509Certificates[value sw "TUlJ"]', {"c1"}),
    ):
        f = bind(parse(text), RT)
        assert sql_ids(conn, backend, f, RT) == model_ids(resources, f, RT) == want, text


def test_array_in_single_valued_attribute_does_not_match(
    backend: Backend, conn: sa.Connection
) -> None:
    """An array where the schema says single-valued is a value of the wrong type in SQL."""
    # The evaluator would look into the array; storage is canonical, so this never happens.
    insert(conn, [StoredUser("a1", {"userName": "a1", "title": ["x"], PROPS: {"Score": [1]}})])
    for text in ['title eq "x"', f"{PROPS}:Score ge 0"]:
        assert sql_ids(conn, backend, bind(parse(text), RT), RT) == set(), text


def test_case_folds_as_python_does_for_final_sigma_and_dotted_i(
    backend: Backend, conn: sa.Connection
) -> None:
    """PostgreSQL's own lower() folds "ΣΊΣΥΦΟΣ" to "σίσυφοσ" and "İ" to "i" (Python: "σίσυφος",
    "i̇"), so on PostgreSQL these values did not equal themselves in a filter, and sorted
    differently from SQLite."""
    words = ["İstanbul", "istanbul", "ΣΊΣΥΦΟΣ", "σίσυφοςα", "Iz", "ΟΔΥΣΣΕΥΣ"]
    users = [
        StoredUser(f"w{i}", {"userName": f"w{i}", "displayName": w, PROPS: {"Code": w}})
        for i, w in enumerate(words)
    ]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for w in words:
        for text in (
            f"displayName eq {render_literal(w)}",
            f"displayName sw {render_literal(w[:2])}",
            f"displayName co {render_literal(w[-2:])}",
            f"displayName ne {render_literal(w)}",
            f"{PROPS}:Code eq {render_literal(w.upper())}",
            f"displayName gt {render_literal(w)}",
        ):
            f = bind(parse(text), RT)
            expected = model_ids(resources, f, RT)
            assert sql_ids(conn, backend, f, RT) == expected, text
        eq = bind(parse(f"displayName eq {render_literal(w)}"), RT)
        assert f"w{words.index(w)}" in sql_ids(conn, backend, eq, RT)
    p = AttrPath(None, "displayName")
    table = tables.users
    rows = conn.execute(
        sa.select(table.c.id).order_by(*sort_clauses(p, RT, table, backend.name))
    ).scalars()
    by_id = {r["id"]: r for r in resources}
    assert list(rows) == sorted(by_id, key=lambda i: (sort_value(by_id[i], p, RT), i))


def test_starts_with_ranges_at_the_end_of_unicode(backend: Backend, conn: sa.Connection) -> None:
    """``sw`` is exact for prefixes ending in U+10FFFF or just before the surrogates."""
    names = ["a\U0010ffffb", "a\U0010ffff", "b", "x\ud7ffz", "x\ue000", "\U0010ffff"]
    users = [StoredUser(f"s{i}", {"userName": n}) for i, n in enumerate(names)]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for prefix in ["a\U0010ffff", "x\ud7ff", "\U0010ffff", "x"]:
        f = bind(parse(f"userName sw {render_literal(prefix)}"), RT)
        expected = {u.id for u in users if u.doc["userName"].startswith(prefix)}
        assert model_ids(resources, f, RT) == expected
        assert sql_ids(conn, backend, f, RT) == expected, prefix


def test_multi_valued_simple_attribute(backend: Backend, conn: sa.Connection) -> None:
    """A multi-valued simple attribute matches if any of its values does."""
    schema = S.Schema(
        S.USER_SCHEMA,
        "User",
        "test",
        (
            S.a("userName"),
            S.a("tags", multi_valued=True),
            S.a("nums", S.INTEGER, multi_valued=True),
        ),
    )
    rt = S.ResourceType("User", "/Users", "test", schema)
    users = [
        StoredUser("m1", {"userName": "m1", "tags": ["Red", "green"], "nums": [1, 5]}),
        StoredUser("m2", {"userName": "m2", "tags": [""], "nums": []}),
        StoredUser("m3", {"userName": "m3", "tags": ["blue", 3], "nums": [2, "9"]}),
        StoredUser("m4", {"userName": "m4"}),
    ]
    cases = {
        'tags eq "red"': {"m1"},
        'tags ne "red"': {"m2", "m3", "m4"},
        'tags co "E"': {"m1", "m3"},
        "tags pr": {"m1", "m3"},
        "tags eq null": {"m2", "m4"},
        "nums gt 4": {"m1"},
        "nums lt 3": {"m1", "m3"},
        "nums pr": {"m1", "m3"},
    }
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for text, expected in cases.items():
        f = bind(parse(text), rt)
        assert model_ids(resources, f, rt) == expected, text
        assert sql_ids(conn, backend, f, rt) == expected, text


SORT_CASES: list[tuple[str, bool, list[str]]] = [
    ("userName", False, ["u3", "u4", "u1", "u5", "u2"]),
    ("userName", True, ["u2", "u5", "u1", "u4", "u3"]),
    ("emails.value", False, ["u1", "u2", "u3", "u4", "u5"]),
    ("emails", True, ["u3", "u4", "u5", "u2", "u1"]),
    ("emails.type", False, ["u1", "u2", "u4", "u3", "u5"]),
    ("emails.type", True, ["u3", "u5", "u1", "u2", "u4"]),
    (f"{PROPS}:Level", False, ["u1", "u2", "u3", "u4", "u5"]),
    (f"{PROPS}:Level", True, ["u3", "u4", "u5", "u2", "u1"]),
    (f"{PROPS}:Score", False, ["u2", "u1", "u3", "u4", "u5"]),
    ("name.givenName", True, ["u3", "u4", "u5", "u1", "u2"]),
    ("active", False, ["u2", "u1", "u3", "u4", "u5"]),
    ("displayName", False, ["u1", "u5", "u2", "u3", "u4"]),
    ("meta.created", False, ["u1", "u2", "u3", "u4", "u5"]),
    ("externalId", False, ["u1", "u2", "u3", "u4", "u5"]),
    ("meta.resourceType", True, ["u1", "u2", "u3", "u4", "u5"]),
]


@pytest.mark.parametrize(
    ("path", "descending", "expected"),
    SORT_CASES,
    ids=[f"{p}-{'desc' if d else 'asc'}" for p, d, _ in SORT_CASES],
)
def test_sort_examples(
    backend: Backend, conn: sa.Connection, path: str, descending: bool, expected: list[str]
) -> None:
    """sortBy orders by the primary (else first) value, absent values last ascending."""
    insert(conn, EXAMPLE_USERS, EXAMPLE_GROUPS)
    p = attr_path(path)
    resources = [render_user(u, EXAMPLE_GROUPS) for u in EXAMPLE_USERS]
    assert python_order(resources, p, descending) == expected
    order = sort_clauses(p, RT, tables.users, backend.name, descending)
    assert list(conn.scalars(sa.select(tables.users.c.id).order_by(*order))) == expected


@pytest.mark.parametrize("path", ["groups.display", "meta.location", "name", "members"])
def test_unsupported_sort_paths(backend: Backend, path: str) -> None:
    """Sorting by computed, unstored or complex attributes is an invalidValue error (RFC 7644
    Table 9 keeps invalidFilter for filters)."""
    rt = GT if path == "members" else RT
    table = tables.groups if rt is GT else tables.users
    p = attr_path(path)
    with pytest.raises(InvalidValue) as refused:
        sort_key(p, rt, table, backend.name)
    if path in ("members", "meta.location", "groups.display"):  # it says what to sort by
        assert "sort by" in str(refused.value.detail), refused.value.detail
    with pytest.raises(InvalidValue):
        sort_value({"id": "x"}, p, rt)


def python_order(resources: list[dict[str, Any]], p: AttrPath, descending: bool) -> list[str]:
    """Ids ordered by ``sort_value``, absent values last (first when descending), ties by
    position."""

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, Any]:
        v = sort_value(item[1], p, RT)
        return (1, 0) if v is None else (0, v)

    # reverse=True keeps equal keys in position order, as "pk ascending" does in SQL.
    ordered = sorted(enumerate(resources), key=key, reverse=descending)
    return [r["id"] for _, r in ordered]


# --------------------------------------------------------------------------------------------
# Property tests: random data, random filters, SQL == evaluator
# --------------------------------------------------------------------------------------------

TRICKY_CHARS = "aAbB%_\\éÉß"


def texts(alphabet: str, min_size: int = 0, max_size: int = 5) -> st.SearchStrategy[str]:
    """Strings over ``alphabet``, half their characters from a few that collide under case
    folding or LIKE (``st.text`` would draw them no more often than the others)."""
    tricky = st.sampled_from([c for c in TRICKY_CHARS if c in alphabet])
    chars = st.one_of(tricky, st.sampled_from(alphabet))
    return st.lists(chars, min_size=min_size, max_size=max_size).map("".join)


DATETIMES = st.datetimes(
    min_value=datetime(2019, 12, 31, 23, 0), max_value=datetime(2020, 1, 1, 1, 0)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def canonical(d: datetime) -> str:
    """The stored form of a dateTime."""
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


@st.composite
def datetime_texts(draw: st.DrawFn) -> str:
    """A dateTime property's value as clients send it (stored as sent): RFC 3339 with 0 to 7
    fractional digits (.NET sends 7) and any offset, or the canonical UTC form."""
    d = draw(
        st.datetimes(min_value=datetime(2019, 12, 31, 23, 0), max_value=datetime(2020, 1, 1, 1, 0))
    )
    digits = draw(st.sampled_from([0, 0, 1, 3, 3, 6, 7]))
    offset = draw(st.sampled_from([0, 0, 330, -480, 60]))
    local = d + timedelta(minutes=offset)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{d.microsecond:06d}" + str(draw(st.integers(0, 9)))
        text += "." + frac[:digits]
    if offset == 0 and draw(st.booleans()):
        return text + "Z"
    sign = "+" if offset >= 0 else "-"
    return text + f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


DATES = st.dates(min_value=date(1990, 1, 1), max_value=date(1990, 1, 9))
EMAIL_TYPES = ["work", "home", "Work", "other"]


def _maybe(draw: st.DrawFn, strategy: st.SearchStrategy[Any], p_absent: float = 0.3) -> Any:
    return draw(strategy) if draw(st.floats(0, 1)) >= p_absent else None


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


@st.composite
def user_docs(draw: st.DrawFn, alphabet: str) -> dict[str, Any]:
    """A random canonical User document (no id/meta/groups), with absent and empty values."""
    text = texts(alphabet)
    doc: dict[str, Any] = {"userName": draw(texts(alphabet, min_size=1, max_size=6))}
    _put(doc, "externalId", _maybe(draw, text))
    _put(doc, "displayName", _maybe(draw, text))
    _put(doc, "title", _maybe(draw, text))
    _put(doc, "active", _maybe(draw, st.booleans()))
    name: dict[str, Any] | None = _maybe(draw, st.just({}))
    if name is not None:
        _put(name, "givenName", _maybe(draw, text))
        _put(name, "familyName", _maybe(draw, text))
        doc["name"] = name
    if draw(st.booleans()):
        emails = []
        for _ in range(draw(st.integers(0, 3))):
            e: dict[str, Any] = {}
            _put(e, "value", _maybe(draw, text, 0.2))
            _put(e, "type", _maybe(draw, st.sampled_from(EMAIL_TYPES) | text, 0.2))
            _put(e, "primary", _maybe(draw, st.booleans(), 0.6))
            emails.append(e)
        doc["emails"] = emails
    ent: dict[str, Any] | None = _maybe(draw, st.just({}))
    if ent is not None:
        _put(ent, "department", _maybe(draw, text, 0.2))
        doc[ENT] = ent
    props: dict[str, Any] | None = _maybe(draw, st.just({}), 0.2)
    if props is not None:
        _put(props, "Level", _maybe(draw, st.integers(-3, 3) | st.integers(-(2**53), 2**53)))
        _put(
            props,
            "Score",
            _maybe(
                draw,
                st.integers(-3, 3)
                | st.floats(-5, 5, allow_nan=False, allow_infinity=False).map(
                    lambda x: round(x, 2)
                ),
            ),
        )
        _put(props, "Vip", _maybe(draw, st.booleans()))
        _put(props, "HiredAt", _maybe(draw, datetime_texts()))
        _put(props, "Code", _maybe(draw, text))
        _put(props, "Birthday", _maybe(draw, DATES.map(str)))
        doc[PROPS] = props
    return doc


@st.composite
def datasets(draw: st.DrawFn, alphabet: str) -> tuple[list[StoredUser], list[StoredGroup]]:
    """1-6 users with unique ids and userNames, and 0-3 groups with some of them as members."""
    docs = draw(
        st.lists(
            user_docs(alphabet), min_size=1, max_size=6, unique_by=lambda d: fold(d["userName"])
        )
    )
    ids = draw(
        st.lists(
            st.text("abcAB12", min_size=1, max_size=3),
            min_size=len(docs),
            max_size=len(docs),
            unique=True,
        )
    )
    users = [
        StoredUser(
            i,
            d,
            created=canonical(draw(DATETIMES)),
            last_modified=canonical(draw(DATETIMES)),
            version=draw(st.integers(1, 12)),
        )
        for i, d in zip(ids, docs, strict=True)
    ]
    names = draw(st.lists(texts(alphabet, min_size=1, max_size=4), max_size=3, unique_by=fold))
    groups = [
        StoredGroup(
            f"g{n}{draw(st.sampled_from(['', 'X', 'x']))}",
            {"displayName": name},
            [
                (u.id, "User")
                for u in draw(st.lists(st.sampled_from(users), unique_by=lambda u: u.id))
            ],
        )
        for n, name in enumerate(names)
    ]
    return users, groups


STR, BOOL, INT, DEC, DT, DATE, COMPLEX = "str", "bool", "int", "dec", "dt", "date", "complex"
USER_ATTRS: list[tuple[str, str]] = [
    ("userName", STR),
    ("displayName", STR),
    ("title", STR),
    ("externalId", STR),
    ("id", STR),
    ("active", BOOL),
    ("name", COMPLEX),
    ("name.givenName", STR),
    ("emails", COMPLEX),
    ("emails.value", STR),
    ("emails.type", STR),
    ("emails.primary", BOOL),
    (f"{ENT}:department", STR),
    (f"{PROPS}:Level", INT),
    (f"{PROPS}:Score", DEC),
    (f"{PROPS}:Vip", BOOL),
    (f"{PROPS}:HiredAt", DT),
    (f"{PROPS}:Code", STR),
    (f"{PROPS}:Birthday", DATE),
    ("meta.created", DT),
    ("meta.lastModified", DT),
    ("meta.version", STR),
    ("groups", COMPLEX),
    ("groups.value", STR),
    ("groups.display", STR),
    ("groups.type", STR),
]
ELEMENT_ATTRS = {
    "emails": [("value", STR), ("type", STR), ("primary", BOOL)],
    "groups": [("value", STR), ("display", STR), ("type", STR)],
}
OPS = {
    STR: ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"],
    BOOL: ["eq", "ne"],
    INT: ["eq", "ne", "gt", "ge", "lt", "le"],
    DEC: ["eq", "ne", "gt", "ge", "lt", "le"],
    DT: ["eq", "ne", "gt", "ge", "lt", "le"],
    DATE: ["eq", "ne", "gt", "ge", "lt", "le"],
    COMPLEX: [],
}


class Pool:
    """Values present in the data, so that generated filters match something."""

    def __init__(self, resources: list[dict[str, Any]], rt: S.ResourceType, alphabet: str) -> None:
        self.alphabet = alphabet
        self.by_path: dict[str, list[Any]] = {}
        self.strings: list[str] = []
        attrs = USER_ATTRS if rt is RT else GROUP_ATTRS
        self.elements = ELEMENT_ATTRS if rt is RT else {"members": GROUP_ELEMENT_ATTRS}
        for path, kind in attrs:
            if kind == COMPLEX:
                continue
            bound = attr_path(path, rt)
            vals = [v for r in resources for v in values_at(r, bound, rt)]
            self.by_path[path] = vals
            self.strings += [v for v in vals if isinstance(v, str)]

    def literal(self, draw: st.DrawFn, path: str, kind: str, op: str) -> Any:
        """A literal of ``kind`` for ``op``: mostly a (case-changed, sliced) present value."""
        present = [v for v in self.by_path.get(path, []) if not isinstance(v, (dict, list))]
        if kind == STR:
            source = draw(st.sampled_from(["path", "path", "any", "random"]))
            pool = present if source == "path" else self.strings
            if source == "random" or not pool:
                s = draw(texts(self.alphabet, max_size=4))
            else:
                s = str(draw(st.sampled_from(pool)))
                if op in ("co", "sw", "ew", "gt", "ge", "lt", "le") and s:
                    i = draw(st.integers(0, len(s) - 1))
                    j = draw(st.integers(i + 1, len(s)))
                    s = s[:j] if op == "sw" else s[i:] if op == "ew" else s[i:j]
            case = draw(st.sampled_from(["keep", "keep", "upper", "lower", "swap"]))
            return {"keep": s, "upper": s.upper(), "lower": s.lower(), "swap": s.swapcase()}[case]
        if kind == BOOL:
            return draw(st.booleans())
        if kind in (INT, DEC):
            nums = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
            extra = st.integers(-4, 4) if kind == INT else st.integers(-4, 4) | st.floats(-5, 5)
            from_pool: bool = draw(st.booleans())
            if nums and from_pool:
                return draw(st.sampled_from(nums))
            return draw(extra)
        from_pool = draw(st.booleans())
        if kind == DT:
            if present and from_pool:
                return draw(st.sampled_from(present))
            if path.startswith("meta."):
                return canonical(draw(DATETIMES))
            return draw(datetime_texts())
        assert kind == DATE
        if present and from_pool:
            return draw(st.sampled_from(present))
        return str(draw(DATES))


def _leaf_text(draw: st.DrawFn, pool: Pool, path: str, kind: str) -> str:
    choice = draw(st.sampled_from(["op", "op", "op", "op", "pr", "null"]))
    if kind == COMPLEX or choice == "pr":
        return f"{path} pr"
    if choice == "null":
        return f"{path} {draw(st.sampled_from(['eq', 'ne']))} null"
    op = draw(st.sampled_from(OPS[kind]))
    value = pool.literal(draw, path, kind, op)
    return f"{path} {op} {render_literal(value)}"


def filter_text(
    draw: st.DrawFn,
    pool: Pool,
    attrs: list[tuple[str, str]],
    depth: int,
    parent: str | None = None,
) -> str:
    """A random filter (as text) over ``attrs``; inside ``parent[...]`` when given."""
    kinds = ["leaf"] * 4
    if depth > 0:
        kinds += ["and", "or", "not"]
        if parent is None:
            kinds += ["value"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        path, t = draw(st.sampled_from(attrs))
        pool_path = f"{parent}.{path}" if parent else path
        text = _leaf_text(draw, pool, pool_path, t)
        return text[len(parent) + 1 :] if parent else text
    if kind in ("and", "or"):
        left = filter_text(draw, pool, attrs, depth - 1, parent)
        right = filter_text(draw, pool, attrs, depth - 1, parent)
        return f"({left}) {kind} ({right})"
    if kind == "not":
        return f"not ({filter_text(draw, pool, attrs, depth - 1, parent)})"
    multi = draw(st.sampled_from(sorted(pool.elements)))
    inner = filter_text(draw, pool, pool.elements[multi], depth - 1, multi)
    return f"{multi}[{inner}]"


@st.composite
def filters(draw: st.DrawFn, pool: Pool, attrs: list[tuple[str, str]], depth: int) -> str:
    """A random filter text over ``attrs``, nested up to ``depth`` levels."""
    return filter_text(draw, pool, attrs, depth)


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_user_filters_match_the_evaluator(backend: Backend, data: st.DataObject) -> None:
    """On random users and groups, SQL selects exactly the users the evaluator accepts."""
    users, groups = data.draw(datasets(backend.alphabet), label="dataset")
    resources = [render_user(u, groups) for u in users]
    pool = Pool(resources, RT, backend.alphabet)
    texts = [data.draw(filters(pool, USER_ATTRS, 3), label="filter") for _ in range(4)]
    with backend.engine.connect() as conn, conn.begin() as trans:
        insert(conn, users, groups)
        for text in texts:
            f = bind(parse(text), RT)
            assert sql_ids(conn, backend, f, RT) == model_ids(resources, f, RT), text
        trans.rollback()


GROUP_ATTRS: list[tuple[str, str]] = [
    ("displayName", STR),
    ("externalId", STR),
    ("id", STR),
    ("members", COMPLEX),
    ("members.value", STR),
    ("members.type", STR),
    ("meta.created", DT),
]
GROUP_ELEMENT_ATTRS = [("value", STR), ("type", STR)]


@st.composite
def group_sets(draw: st.DrawFn, alphabet: str) -> list[StoredGroup]:
    """1-5 groups with unique names, optional externalIds and user or group members."""
    names = draw(
        st.lists(
            texts(alphabet, min_size=1, max_size=5),
            min_size=1,
            max_size=5,
            unique_by=str.lower,
        )
    )
    member_ids = ["m1", "M1", "m2", "g0", "g1"]
    groups = []
    for i, name in enumerate(names):
        doc: dict[str, Any] = {"displayName": name}
        _put(doc, "externalId", _maybe(draw, texts(alphabet, max_size=3)))
        members = draw(st.lists(st.sampled_from(member_ids), unique=True))
        groups.append(
            StoredGroup(
                f"g{i}",
                doc,
                [(m, "Group" if m.startswith("g") else "User") for m in members],
                created=canonical(draw(DATETIMES)),
            )
        )
    return groups


@PROPERTY_SETTINGS
@given(data=st.data())
def test_group_filters_match_the_evaluator(backend: Backend, data: st.DataObject) -> None:
    """On random groups, SQL selects exactly the groups the evaluator accepts."""
    groups = data.draw(group_sets(backend.alphabet), label="groups")
    resources = [render_group(g) for g in groups]
    pool = Pool(resources, GT, backend.alphabet)

    texts = [data.draw(filters(pool, GROUP_ATTRS, 2), label="filter") for _ in range(4)]
    with backend.engine.connect() as conn, conn.begin() as trans:
        insert(conn, [], groups)
        for text in texts:
            f = bind(parse(text), GT)
            assert sql_ids(conn, backend, f, GT) == model_ids(resources, f, GT), text
        trans.rollback()


SORT_PATHS = [
    "userName",
    "displayName",
    "title",
    "externalId",
    "id",
    "active",
    "name.givenName",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    f"{ENT}:department",
    f"{PROPS}:Level",
    f"{PROPS}:Score",
    f"{PROPS}:Vip",
    f"{PROPS}:HiredAt",
    f"{PROPS}:Code",
    f"{PROPS}:Birthday",
    "meta.created",
    "meta.version",
]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_sort_matches_sort_value(backend: Backend, data: st.DataObject) -> None:
    """On random users, SQL ORDER BY sort_clauses equals Python order by sort_value."""
    users, _ = data.draw(datasets(backend.alphabet), label="dataset")
    resources = [render_user(u, []) for u in users]
    # Multi-valued paths weigh more: their primary-else-first rule is the subtle part.
    paths = SORT_PATHS + ["emails", "emails.value", "emails.type", "emails.primary"] * 3
    path = attr_path(data.draw(st.sampled_from(paths), label="sortBy"))
    descending = data.draw(st.booleans(), label="descending")
    order = sort_clauses(path, RT, tables.users, backend.name, descending)
    with backend.engine.connect() as conn, conn.begin() as trans:
        insert(conn, users)
        got: list[str] = list(conn.scalars(sa.select(tables.users.c.id).order_by(*order)))
        trans.rollback()
    assert got == python_order(resources, path, descending)


@pytest.mark.parametrize("op", ["sw", "ew", "co"])
def test_an_exact_substring_matches_without_case_across_a_final_sigma(
    backend: Backend, conn: sa.Connection, op: str
) -> None:
    """lower() writes a capital sigma as the final sigma at a word's end only: "ΑΣ" lowered
    did not start "ΑΣΒ" lowered, and `sw`, `ew` and `co` missed substrings a case-sensitive
    comparison finds, in the evaluator and in both databases' SQL alike."""
    names = {  # Greek letters, some of them drawn like Latin ones
        "ΑΣΒ": ("ΑΣ", "Β", "Σ"),  # noqa: RUF001
        "ΟΔΟΣ ΑΒ": ("ΟΔΟΣ", "Σ ΑΒ", "ΟΣ "),  # noqa: RUF001
        "ας": ("ασ", "σ", "σ"),  # noqa: RUF001
    }
    users = [
        StoredUser(f"s{i}", {"userName": name, "displayName": name, PROPS: {"Code": name}})
        for i, name in enumerate(names)
    ]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for i, (name, parts) in enumerate(names.items()):
        part = parts[("sw", "ew", "co").index(op)]
        for path in ("userName", "displayName", f"{PROPS}:Code"):
            f = bind(parse(f"{path} {op} {render_literal(part)}"), RT)
            assert f"s{i}" in model_ids(resources, f, RT), (path, name, part)
            assert sql_ids(conn, backend, f, RT) == model_ids(resources, f, RT), (path, part)


# --------------------------------------------------------------------------------------------
# From a mutation audit of the SQL compiler: each example fails with one small change to it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["co", "ew"])
def test_an_underscore_in_a_substring_is_not_a_wildcard(
    backend: Backend, conn: sa.Connection, op: str
) -> None:
    """LIKE reads ``_`` as any one character: ``userName co "a_b"`` also found "axb" (and
    ``externalId ew "_1"`` any id ending in 1), a near-miss user an identity provider then
    treats as the one it looked for."""
    users = [
        StoredUser("l1", {"userName": "a_b", "externalId": "id_1"}),
        StoredUser("l2", {"userName": "axb", "externalId": "idx1"}),
    ]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for text in (f'userName {op} "a_b"', f'externalId {op} "d_1"', f'title {op} "_"'):
        f = bind(parse(text), RT)
        expected = {"l1"} if "title" not in text else set()
        assert model_ids(resources, f, RT) == expected, text
        assert sql_ids(conn, backend, f, RT) == expected, text


def test_ends_with_the_whole_case_exact_value_matches(
    backend: Backend, conn: sa.Connection
) -> None:
    """``externalId ew "ext-b"`` matches the externalId "ext-b" itself: a value ends with
    itself (SQLite compares case-exact suffixes by length, and the equal length counts)."""
    users = [
        StoredUser("e1", {"userName": "e1", "externalId": "ext-b"}),
        StoredUser("e2", {"userName": "e2", "externalId": "b"}),
    ]
    insert(conn, users)
    for text, want in (
        ('externalId ew "ext-b"', {"e1"}),
        ('externalId ew "b"', {"e1", "e2"}),
        ('externalId ew "xext-b"', set()),
    ):
        f = bind(parse(text), RT)
        assert model_ids([render_user(u, []) for u in users], f, RT) == want, text
        assert sql_ids(conn, backend, f, RT) == want, text


def test_decimal_literals_compare_as_written(backend: Backend, conn: sa.Connection) -> None:
    """``Score eq 0.1`` finds a stored 0.1: the literal is its shortest decimal form, not the
    binary double's exact expansion (0.1000000000000000055...), which equals nothing stored."""
    scores = [0.1, 1.1, 2.675, -0.3]
    users = [
        StoredUser(f"d{i}", {"userName": f"d{i}", PROPS: {"Score": s}})
        for i, s in enumerate(scores)
    ]
    insert(conn, users)
    for i, s in enumerate(scores):
        for op, want in (
            ("eq", {f"d{i}"}),
            ("ge", {f"d{j}" for j, t in enumerate(scores) if t >= s}),
        ):
            f = bind(parse(f"{PROPS}:Score {op} {s!r}"), RT)
            assert sql_ids(conn, backend, f, RT) == want, (op, s)


def test_integers_past_two_to_the_53_compare_exactly(backend: Backend, conn: sa.Connection) -> None:
    """Integers above 2**53 are not doubles: ``Level eq 9007199254740993`` does not find a user
    whose Level is 9007199254740992 (they are the same double)."""
    big = 2**53
    users = [StoredUser("n1", {"userName": "n1", PROPS: {"Level": big}})]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    for text, want in (
        (f"{PROPS}:Level eq {big + 1}", set()),
        (f"{PROPS}:Level ge {big + 1}", set()),
        (f"{PROPS}:Level lt {big + 1}", {"n1"}),
        (f"{PROPS}:Level eq {big}", {"n1"}),
    ):
        f = bind(parse(text), RT)
        assert model_ids(resources, f, RT) == want, text
        assert sql_ids(conn, backend, f, RT) == want, text


def test_stored_date_times_finer_than_the_millisecond_compare_exactly(
    backend: Backend, conn: sa.Connection
) -> None:
    """A custom dateTime is stored as sent, and .NET sends seven fraction digits: the stored
    value must equal itself in a filter and order against literals a tenth of a microsecond
    or a microsecond away, on both databases."""
    stored = {
        "t1": "2020-01-02T03:04:05.1234567Z",
        "t2": "2020-01-02T03:04:05.123456Z",
        "t3": "2020-01-02T04:04:05.12345678+01:00",
        "t4": "2020-01-02T03:04:05.123456789Z",
    }
    users = [StoredUser(k, {"userName": k, PROPS: {"HiredAt": v}}) for k, v in stored.items()]
    insert(conn, users)
    resources = [render_user(u, []) for u in users]
    literals = [
        *stored.values(),
        "2020-01-02T03:04:05.1234566Z",
        "2020-01-02T03:04:05.1234568Z",
        "2020-01-02T03:04:05.123456788Z",
        "2020-01-02T03:04:05.123456781Z",
        "2020-01-02T03:04:05.123Z",
        "2020-01-02T03:04:05.124Z",
    ]
    for lit in literals:
        for op in ("eq", "lt", "gt"):
            f = bind(parse(f'{PROPS}:HiredAt {op} "{lit}"'), RT)
            assert sql_ids(conn, backend, f, RT) == model_ids(resources, f, RT), (op, lit)
    for k, v in stored.items():
        f = bind(parse(f'{PROPS}:HiredAt eq "{v}"'), RT)
        assert sql_ids(conn, backend, f, RT) == {k}


@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_a_date_time_sent_with_an_offset_orders_by_instant(
    backend: Backend, conn: sa.Connection, descending: bool
) -> None:
    """A custom dateTime is stored as sent: "05:00+03:00" is 02:00 UTC, before "03:00Z",
    though its text sorts after it; ``sortBy`` orders by the instant, as filters compare."""
    hired = {
        "o1": "2020-01-02T03:00:00Z",
        "o2": "2020-01-02T05:00:00+03:00",
        "o3": "2020-01-02T02:30:00.000-01:00",
    }
    users = [StoredUser(k, {"userName": k, PROPS: {"HiredAt": v}}) for k, v in hired.items()]
    insert(conn, users)
    p = attr_path(f"{PROPS}:HiredAt")
    expected = ["o3", "o1", "o2"] if descending else ["o2", "o1", "o3"]
    assert python_order([render_user(u, []) for u in users], p, descending) == expected
    order = sort_clauses(p, RT, tables.users, backend.name, descending)
    assert list(conn.scalars(sa.select(tables.users.c.id).order_by(*order))) == expected
