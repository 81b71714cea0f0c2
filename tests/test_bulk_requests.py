"""Bulk requests (RFC 7644 §3.7) through the HTTP API: what each operation's path may name,
how its ``bulkId`` references resolve, and what its result says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web.app import create_app

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


class Api:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    def req(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        content = None
        if body is not None:
            content = json.dumps(body)
            headers["Content-Type"] = "application/scim+json"
        return self.client.request(method, "/scim/v2" + path, headers=headers, content=content)

    def bulk(self, *ops: dict[str, Any]) -> list[dict[str, Any]]:
        r = self.req("POST", "/Bulk", {"schemas": [BULK], "Operations": list(ops)})
        assert r.status_code == 200, r.text
        return list(r.json()["Operations"])

    def user(self, name: str) -> dict[str, Any]:
        r = self.req("POST", "/Users", {"schemas": [USER], "userName": name})
        assert r.status_code == 201, r.text
        return dict(r.json())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    with TestClient(app) as client:
        yield Api(client, token)
    engine.dispose()


def _title(value: str) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": value}]}


def test_a_path_with_a_fragment_is_refused_not_a_missing_resource(api: Api) -> None:
    """``/Users/{id}#x`` was read as the id ``{id}#x``: a 404 for a user that exists, which a
    reconciling client takes for a deleted one."""
    u = api.user("fragment@x.com")
    r = api.bulk({"method": "PATCH", "path": f"/Users/{u['id']}#x", "data": _title("T")})
    assert r[0]["status"] == "400", r
    assert "takes no query or fragment" in r[0]["response"]["detail"]
    assert "title" not in api.req("GET", f"/Users/{u['id']}").json()


def test_a_forward_reference_to_a_lower_case_post_resolves(api: Api) -> None:
    """Methods are read whatever their case: a reference to a later ``"post"`` was refused
    as naming an operation that creates nothing, though that POST then created the user."""
    r = api.bulk(
        {
            "method": "POST",
            "path": "/Groups",
            "bulkId": "g",
            "data": {"schemas": [GROUP], "displayName": "G", "members": [{"value": "bulkId:u"}]},
        },
        {"method": "post", "path": "/Users", "bulkId": "u", "data": {"userName": "lower@x.com"}},
    )
    assert [o["status"] for o in r] == ["201", "201"], r
    gid = r[0]["location"].rsplit("/", 1)[1]
    uid = r[1]["location"].rsplit("/", 1)[1]
    members = api.req("GET", f"/Groups/{gid}").json()["members"]
    assert [m["value"] for m in members] == [uid]


def test_a_post_whose_read_only_id_reads_as_its_own_reference_is_created(api: Api) -> None:
    """The read-only ``id`` (any case: attribute names are case-insensitive) is no reference:
    ``"ID": "bulkId:me"`` in a POST named its own operation, and the POST failed as a cycle."""
    r = api.bulk(
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": "me",
            "data": {"ID": "bulkId:me", "userName": "self@x.com"},
        }
    )
    assert r[0]["status"] == "201", r


def test_a_urn_qualified_members_path_naming_no_operation_is_a_409(api: Api) -> None:
    """A PATCH of ``urn:...:Group:members`` is the members, as ``members`` is: a ``bulkId``
    naming no operation is the request's mistake (409, as for ``members``), not a member id
    looked up and found missing (400)."""
    g = api.req("POST", "/Groups", {"schemas": [GROUP], "displayName": "Urn"}).json()
    for path in ("members", f"{GROUP}:members"):
        r = api.bulk(
            {
                "method": "PATCH",
                "path": f"/Groups/{g['id']}",
                "data": {
                    "schemas": [PATCH],
                    "Operations": [
                        {"op": "add", "path": path, "value": [{"value": "bulkId:nope"}]}
                    ],
                },
            }
        )
        assert r[0]["status"] == "409", (path, r)
        assert "names no operation of this request" in r[0]["response"]["detail"]


def test_a_cycle_of_five_names_all_five_and_no_more(api: Api) -> None:
    """The detail lists up to five bulkIds; a cycle of exactly five said "and 0 more"."""
    keys = "abcde"
    r = api.bulk(
        *(
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": k,
                "data": {"displayName": k, "members": [{"value": f"bulkId:{keys[(i + 1) % 5]}"}]},
            }
            for i, k in enumerate(keys)
        )
    )
    assert [o["status"] for o in r] == ["409"] * 5
    detail = r[0]["response"]["detail"]
    assert "'a', 'b', 'c', 'd', 'e' reference each other" in detail
    assert "more" not in detail


def test_each_write_result_carries_the_version_it_made(api: Api) -> None:
    """§3.7.3: a result's ``version`` is the resource's new ETag, which a client keeps for
    its next conditional write; it must be the one a GET then gives."""
    u = api.user("versions@x.com")
    r = api.bulk(
        {"method": "POST", "path": "/Users", "bulkId": "n", "data": {"userName": "new@x.com"}},
        {"method": "PUT", "path": f"/Users/{u['id']}", "data": {"userName": "put@x.com"}},
        {"method": "PATCH", "path": f"/Users/{u['id']}", "data": _title("T")},
    )
    assert [o["status"] for o in r] == ["201", "200", "200"], r
    made = api.req("GET", "/Users/" + r[0]["location"].rsplit("/", 1)[1])
    assert r[0]["version"] == made.headers["etag"]
    assert r[1]["version"] == 'W/"2"'
    assert r[2]["version"] == api.req("GET", f"/Users/{u['id']}").headers["etag"] == 'W/"3"'


def test_a_delete_with_a_stale_version_is_refused_and_deletes_nothing(api: Api) -> None:
    """A DELETE's ``version`` is its If-Match: a client that has not seen the latest change
    must not delete the resource (412); with the current version it is deleted."""
    u = api.user("guarded@x.com")
    changed = api.bulk({"method": "PATCH", "path": f"/Users/{u['id']}", "data": _title("T")})
    assert changed[0]["status"] == "200", changed
    stale = api.bulk({"method": "DELETE", "path": f"/Users/{u['id']}", "version": 'W/"1"'})
    assert stale[0]["status"] == "412", stale
    assert api.req("GET", f"/Users/{u['id']}").status_code == 200
    current = api.bulk({"method": "DELETE", "path": f"/Users/{u['id']}", "version": 'W/"2"'})
    assert current[0]["status"] == "204", current
    assert api.req("GET", f"/Users/{u['id']}").status_code == 404


def test_fail_on_errors_stops_the_operations_a_post_let_run(api: Api) -> None:
    """Operations waiting for a POST run right after it, one by one: when one of them
    reaches ``failOnErrors``, the others must not run (§3.7.3), as any later operation
    would not."""
    g = api.req("POST", "/Groups", {"schemas": [GROUP], "displayName": "Stop"}).json()

    def add_u(path: str) -> dict[str, Any]:
        op = {"op": "add", "path": "members", "value": [{"value": "bulkId:u"}]}
        return {"method": "PATCH", "path": path, "data": {"schemas": [PATCH], "Operations": [op]}}

    body = {
        "schemas": [BULK],
        "failOnErrors": 1,
        "Operations": [
            add_u("/Groups/nope"),
            add_u(f"/Groups/{g['id']}"),
            {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": "u@x.com"}},
        ],
    }
    r = api.req("POST", "/Bulk", body)
    assert r.status_code == 200, r.text
    assert [o["status"] for o in r.json()["Operations"]] == ["404", "201"]
    assert not api.req("GET", f"/Groups/{g['id']}").json().get("members")


def test_a_request_without_operations_is_invalid_syntax(api: Api) -> None:
    """An empty ``Operations`` array is a malformed request (400 invalidSyntax), not a 200
    whose empty reply a client reads as "everything done"."""
    r = api.req("POST", "/Bulk", {"schemas": [BULK], "Operations": []})
    assert r.status_code == 400, r.text
    assert r.json()["scimType"] == "invalidSyntax"
