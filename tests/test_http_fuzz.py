"""Random requests against a live server on each database: never a 5xx, never a half write.

Hypothesis builds SCIM requests from realistic parts (attribute names, Entra's PATCH forms,
filters) mixed with hostile values (odd Unicode, huge numbers, wrong types, nesting). For
every request:

- the answer is not a server error (5xx), and a 4xx is a SCIM error with that status;
- a 4xx changed nothing: every change writes an audit record in its own transaction, so the
  number of audit records stays the same, and so does the version of the resource it named.

The examples are derandomised so CI runs the same ones every time; set
``SCIMD_FUZZ_EXAMPLES`` to run more locally (new seeds each run then).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.live_server import provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

EXAMPLES = int(os.environ.get("SCIMD_FUZZ_EXAMPLES", "0")) or 120

# Values: plausible ones, and the kinds that broke servers before (NUL, lone surrogates are not
# JSON, so not here; huge numbers; long strings; deep nesting; wrong types).
text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "True",
            "False",
            "42",
            "-1",
            "1e400",
            "2026-11-29T10:00:00Z",
            "\x00",
            "a\x00b",
            "é" * 600,
            "x" * 3000,
            "%00",
            "\\u0000",
            "' OR 1=1 --",
        ]
    ),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1]),
)
scalars = st.one_of(text, numbers, st.booleans(), st.none())
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["value", "type", "primary", "display", "$ref", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
safe_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=12
)
SEEDED: dict[str, list[str]] = {"Users": [], "Groups": []}  # filled once, before any example


def _member_values() -> st.SearchStrategy[Any]:
    some_id = st.sampled_from([*SEEDED["Users"], *SEEDED["Groups"], "no-such-id"])
    return st.lists(st.fixed_dictionaries({"value": some_id}), max_size=3)


# Each attribute gets values of its type most of the time, and anything at all sometimes.
TYPED: dict[str, st.SearchStrategy[Any]] = {
    "userName": safe_text.map(lambda t: f"fz-{t}"),
    "displayName": safe_text,
    "title": safe_text,
    "nickName": safe_text,
    "externalId": safe_text,
    "active": st.sampled_from([True, False, "True", "False", "true"]),
    "name": st.fixed_dictionaries(
        {}, optional={"givenName": safe_text, "familyName": safe_text, "formatted": safe_text}
    ),
    "name.givenName": safe_text,
    "name.familyName": safe_text,
    "emails": st.lists(
        st.fixed_dictionaries(
            {"value": safe_text.map(lambda t: f"{t}@example.com")},
            optional={"type": st.sampled_from(["work", "home", "other"]), "primary": st.booleans()},
        ),
        max_size=3,
    ),
    "phoneNumbers": st.lists(
        st.fixed_dictionaries({"value": safe_text, "type": st.sampled_from(["mobile", "work"])}),
        max_size=2,
    ),
    "members": st.nothing(),  # drawn from the ids seeded for this run: see _value_for
    f"{ENT}:department": safe_text,
    f"{ENT}:manager": st.one_of(
        safe_text, st.fixed_dictionaries({"value": safe_text}), st.lists(safe_text, max_size=1)
    ),
    f"{PROPS}:IdentificationNumber": safe_text,
    f"{PROPS}:Age": st.one_of(st.integers(-5, 200), st.sampled_from(["42", "x", 4.5, 2**40])),
    'emails[type eq "work"].value': safe_text.map(lambda t: f"{t}@example.com"),
    'phoneNumbers[type eq "mobile"].value': safe_text,
}
attribute_names = st.sampled_from(
    [
        *TYPED,
        "groups",
        "id",
        "meta",
        "schemas",
        "password",
        "roles",
        "addresses",
        "x509Certificates",
        'members[value eq "nope"]',
        "emails[value co",
        "name..givenName",
        "urn:x:y:z",
    ]
)
paths = st.one_of(attribute_names, attribute_names, attribute_names, st.text(max_size=20))
GROUP_ATTRIBUTES = ("displayName", "externalId", "members", "schemas")


def _value_for(draw: st.DrawFn, name: str) -> Any:
    if name in TYPED and draw(st.integers(0, 4)):
        return draw(_member_values() if name == "members" else TYPED[name])
    return draw(values)


@st.composite
def documents(draw: st.DrawFn, kind: str) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(values)  # not even an object, sometimes
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        doc["schemas"] = draw(st.sampled_from([[USER], [GROUP], [USER, ENT], [], ["urn:x"], "x"]))
    key = "userName" if kind == "Users" else "displayName"
    if draw(st.integers(0, 6)):
        doc[key] = _value_for(draw, "userName")
    for name in draw(st.lists(attribute_names, max_size=4, unique=True)):
        if kind == "Groups" and name not in GROUP_ATTRIBUTES and draw(st.integers(0, 3)):
            continue  # mostly group attributes on groups
        doc[name] = _value_for(draw, name)
    if kind == "Users" and draw(st.integers(0, 3)) == 0:
        doc[PROPS] = {"IdentificationNumber": draw(scalars), "Age": draw(scalars)}
    return doc


@st.composite
def patch_bodies(draw: st.DrawFn) -> Any:
    ops = []
    for _ in range(draw(st.integers(0, 3))):
        name = st.sampled_from(["add", "Add", "replace", "Replace", "remove", "Remove", "move", 7])
        op: dict[str, Any] = {"op": draw(name)}
        path = draw(paths) if draw(st.integers(0, 3)) else None
        if path is not None:
            op["path"] = path
        if draw(st.integers(0, 3)):
            if path is None:
                names = draw(st.lists(attribute_names, max_size=3, unique=True))
                op["value"] = {n: _value_for(draw, n) for n in names}
            else:
                op["value"] = _value_for(draw, path)
        ops.append(op)
    body: dict[str, Any] = {"Operations": ops}
    if draw(st.integers(0, 5)):
        body["schemas"] = [PATCH]
    return body


filters = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda a, op, v: f"{a} {op} {v}",
        attribute_names,
        st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "EQ", "xx"]),
        st.one_of(scalars.map(json.dumps), st.text(max_size=8)),
    ),
)


@st.composite
def bulk_bodies(draw: st.DrawFn, ids: dict[str, list[str]]) -> Any:
    ops = []
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["Users", "Groups"]))
        method = draw(st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post", None]))
        target = draw(st.sampled_from([*ids[kind], "no-such-id", "bulkId:b0", "bulkId:nope"]))
        op: dict[str, Any] = {"method": method}
        if method in ("POST", "post"):
            op |= {"path": f"/{kind}", "bulkId": f"b{i}", "data": draw(documents(kind))}
        elif method == "PATCH":
            op |= {"path": f"/{kind}/{target}", "data": draw(patch_bodies())}
        elif method == "DELETE" and target in ids[kind]:
            op |= {"path": f"/{kind}/no-such-id"}  # keep the seeded resources
        else:
            op |= {"path": draw(st.one_of(st.just(f"/{kind}/{target}"), st.text(max_size=10)))}
            if draw(st.booleans()):
                op["data"] = draw(documents(kind))
        if draw(st.integers(0, 5)) == 0:
            op["version"] = draw(scalars)
        ops.append(op)
    body: dict[str, Any] = {"Operations": ops}
    if draw(st.integers(0, 5)):
        body["schemas"] = ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]
    if draw(st.integers(0, 3)) == 0:
        body["failOnErrors"] = draw(scalars)
    return body


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, list[str]]) -> tuple[str, str, Any, dict[str, str]]:
    kind = draw(st.sampled_from(["Users", "Groups"]))
    target = draw(st.sampled_from([*ids[kind], "no-such-id", "x" * 70, "%00", "..%2F"]))
    which = draw(st.integers(0, 8))
    if which == 7:  # ids no resource has: what a stale client deletes
        odd = draw(st.sampled_from(["no-such-id", "x" * 70, "%00", "..%2F", "%ED%A0%80"]))
        return "DELETE", f"/{kind}/{odd}", None, {}
    if which == 8:
        return "POST", "/Bulk", draw(bulk_bodies(ids)), {}
    if which == 0:
        return "POST", f"/{kind}", draw(documents(kind)), {}
    if which == 1:
        return "PUT", f"/{kind}/{target}", draw(documents(kind)), {}
    if which == 2:
        return "PATCH", f"/{kind}/{target}", draw(patch_bodies()), {}
    if which == 3:
        params = {"filter": draw(filters)}
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "startIndex",
                        "count",
                        "sortBy",
                        "sortOrder",
                        "attributes",
                        "excludedAttributes",
                    ]
                ),
                max_size=3,
            )
        ):
            params[name] = draw(st.one_of(st.text(max_size=10), numbers.map(str)))
        return "GET", f"/{kind}", None, params
    if which == 4:
        body = {"filter": draw(filters), "startIndex": draw(scalars), "count": draw(scalars)}
        return "POST", f"/{kind}/.search", body, {}
    if which == 5:
        return "GET", f"/{kind}/{target}", None, {"attributes": draw(st.text(max_size=12))}
    headers = {"If-Match": draw(st.sampled_from(['W/"1"', '"x"', "*", "", 'W/"99999999999"']))}
    return "PATCH", f"/{kind}/{target}", draw(patch_bodies()), headers


def _seed(c: httpx.Client) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"Users": [], "Groups": []}
    for i in range(3):
        r = c.post(
            "/Users",
            json={
                "userName": f"seed{i}@example.com",
                "emails": [{"value": f"seed{i}@example.com", "type": "work", "primary": True}],
            },
        )
        assert r.status_code == 201, r.text
        ids["Users"].append(r.json()["id"])
    r = c.post("/Groups", json={"displayName": "seeded", "members": [{"value": ids["Users"][0]}]})
    assert r.status_code == 201, r.text
    ids["Groups"].append(r.json()["id"])
    return ids


def test_random_requests_never_fail_the_server_nor_half_write(
    any_database_url: str, tmp_path: Path
) -> None:
    with provisioned_server(
        any_database_url,
        log_dir=tmp_path,
        user_properties={"IdentificationNumber": "String", "Age": "Integer"},
    ) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        engine = sa.create_engine(server.database_url)
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            ids = _seed(c)
            SEEDED.update(ids)

            def audit_count() -> int:
                with engine.connect() as conn:
                    return int(conn.execute(sa.text("SELECT count(*) FROM audit")).scalar_one())

            def version(path: str) -> str | None:
                r = c.get(path)
                return r.headers.get("etag") if r.status_code == 200 else None

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize="SCIMD_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                ],
            )
            @given(st.data())
            def check(data: st.DataObject) -> None:
                method, path, body, extra = data.draw(requests(ids))
                named = path if path.count("/") == 2 and not path.endswith(".search") else None
                before = audit_count()
                seen = version(named) if named and method != "GET" else None
                kw: dict[str, Any] = {}
                if method == "GET":
                    kw["params"] = extra
                else:
                    kw["headers"] = {"Content-Type": "application/scim+json", **extra}
                    kw["content"] = json.dumps(body)
                r = c.request(method, path, **kw)
                assert r.status_code < 500, (method, path, body, extra, r.status_code, r.text)
                if path == "/Bulk" and r.status_code == 200:
                    for op in r.json()["Operations"]:
                        assert int(op["status"]) < 500, (body, r.text)
                if r.status_code >= 400:
                    err = r.json()
                    assert err["schemas"] == [ERROR], r.text
                    assert err["status"] == str(r.status_code), r.text
                    assert err.get("detail"), r.text
                    assert audit_count() == before, (method, path, body, r.text)
                    if seen is not None:
                        assert version(named) == seen, (method, path, body, r.text)

            check()
        engine.dispose()


form_values = st.one_of(
    st.text(max_size=20), st.sampled_from(["client_credentials", "password", "", "\x00", "x" * 300])
)


def test_random_token_requests_never_fail_the_server(any_database_url: str, tmp_path: Path) -> None:
    """The OAuth 2 token endpoint: random forms and Basic credentials get an OAuth error (400
    or 401), or a token for the real client, never a 5xx."""
    # The failure throttle (30 a minute by default, tested elsewhere) would answer 429 here.
    env = {"SCIMD_AUTH_FAILURES_PER_MINUTE": "1000000"}
    with provisioned_server(any_database_url, log_dir=tmp_path, env=env) as server:
        url = f"{server.root_url}/oauth2/server/token"
        with httpx.Client(timeout=30) as c:

            @settings(
                max_examples=EXAMPLES // 2,
                deadline=None,
                derandomize="SCIMD_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            )
            @given(
                form=st.dictionaries(
                    st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "x"]),
                    form_values,
                    max_size=5,
                ),
                basic=st.one_of(
                    st.none(),
                    st.tuples(form_values, form_values),
                    # What HTTP lets a header hold (visible ASCII and spaces).
                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
                        lambda t: f"Basic {t}".strip()
                    ),
                ),
                real_id=st.booleans(),
            )
            def check(form: dict[str, str], basic: Any, real_id: bool) -> None:
                if real_id and "client_id" in form:
                    form = {**form, "client_id": server.client_id}
                headers = {}
                auth = None
                if isinstance(basic, str):
                    headers["Authorization"] = basic
                elif basic is not None:
                    auth = basic
                r = c.post(url, data=form, headers=headers, auth=auth)
                assert r.status_code in (200, 400, 401), (form, basic, r.status_code, r.text)
                if r.status_code != 200:
                    assert r.json()["error"] in (
                        "invalid_request",
                        "invalid_client",
                        "invalid_grant",
                        "unsupported_grant_type",
                        "invalid_scope",
                        "unauthorized_client",
                    ), r.text

            check()
