"""Input PostgreSQL cannot take: a clear 400 or 404 on both databases, never a 500.

PostgreSQL cannot store a NUL character in text or JSON, nor even take one as a parameter; it
cannot index a value longer than ~2,700 bytes, nor take an OFFSET past 2^63. Such input used
to fail its statement there (a 500, or a 503 "database unavailable"), while SQLite took it.
scimd now refuses it where values come in, so both databases answer alike and nothing is
written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from support.live_server import provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
NUL = "\x00"

BAD_USERS: list[dict[str, Any]] = [
    {"userName": f"a{NUL}b@example.com"},
    {"userName": "n1@example.com", "displayName": f"x{NUL}"},
    {"userName": "n2@example.com", "name": {"givenName": NUL}},
    {"userName": "n3@example.com", "externalId": f"e{NUL}"},
    {"userName": "n4@example.com", "emails": [{"value": "w@example.com", "type": f"w{NUL}"}]},
    {"userName": "n5@example.com", ENTERPRISE: {"department": f"d{NUL}"}},
    {"userName": "n6@example.com", PROPS: {"IdentificationNumber": f"1{NUL}"}},
]


def _error(r: httpx.Response, status: int, scim_type: str | None, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    for word in words:
        assert word in body["detail"], body


def _patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(ops)}


def test_nul_characters_are_refused_on_both_databases(
    any_database_url: str, tmp_path: Path
) -> None:
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        headers = {
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/scim+json",
        }
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            user = c.post("/Users", json={"schemas": [USER], "userName": "ok@example.com"})
            assert user.status_code == 201, user.text
            uid = user.json()["id"]
            group = c.post("/Groups", json={"displayName": "g", "members": [{"value": uid}]})
            assert group.status_code == 201, group.text
            gid = group.json()["id"]

            # Values in bodies: 400 invalidValue naming the attribute; nothing is created.
            for body in BAD_USERS:
                r = c.post("/Users", content=json.dumps({"schemas": [USER], **body}))
                _error(r, 400, "invalidValue", "NUL character")
            attr = next(iter(BAD_USERS[2]["name"]))
            r = c.post("/Users", json={"userName": "n7@example.com", "name": {attr: NUL}})
            _error(r, 400, "invalidValue", "'name.givenName'")
            r = c.post("/Groups", json={"displayName": f"g{NUL}"})
            _error(r, 400, "invalidValue", "'displayName'")
            r = c.put(f"/Users/{uid}", json={"userName": "ok@example.com", "nickName": NUL})
            _error(r, 400, "invalidValue", "'nickName'")
            for op in (
                {"op": "Add", "path": "members", "value": [{"value": f"{uid}{NUL}"}]},
                {"op": "Replace", "value": {"displayName": f"h{NUL}"}},
                {"op": "Remove", "path": f'members[value eq "{uid}{NUL}"]'},
                {"op": "Replace", "path": f"display{NUL}Name", "value": "x"},
            ):
                r = c.patch(f"/Groups/{gid}", json=_patch(op))
                assert r.status_code == 400, r.text
            title = {"op": "replace", "path": "title", "value": NUL}
            r = c.patch(f"/Users/{uid}", json=_patch(title))
            _error(r, 400, "invalidValue", "'title'")

            # Ids in paths: no resource has one, so 404, after authentication.
            for method in ("GET", "PUT", "PATCH", "DELETE"):
                body = _patch({"op": "replace", "path": "title", "value": "t"})
                r = c.request(method, f"/Users/{uid}%00", json=body if method != "GET" else None)
                _error(r, 404, None, "NUL character")
            r = c.get(f"/Groups/{gid}%00")
            _error(r, 404, None, "NUL character")
            assert httpx.get(f"{server.base_url}/Users/{uid}%00").status_code == 401

            # Filters: the escape and the raw character are invalid filters.
            for flt in ('userName eq "a\\u0000"', 'title co "\\u0000"', f'title eq "{NUL}"'):
                _error(c.get("/Users", params={"filter": flt}), 400, "invalidFilter")
                r = c.post("/Users/.search", json={"filter": flt})
                _error(r, 400, "invalidFilter")

            # Bulk: each operation answers for itself.
            r = c.post(
                "/Bulk",
                json={
                    "schemas": [BULK],
                    "Operations": [
                        {"method": "DELETE", "path": f"/Users/{uid}{NUL}"},
                        {"method": "POST", "path": "/Users", "bulkId": "b", "data": BAD_USERS[0]},
                    ],
                },
            )
            assert r.status_code == 200, r.text
            statuses = [op["status"] for op in r.json()["Operations"]]
            assert statuses == ["404", "400"]

            # Nothing was written: the one user is unchanged and still the group's only member.
            listed = c.get("/Users").json()
            assert listed["totalResults"] == 1
            assert listed["Resources"][0]["userName"] == "ok@example.com"
            assert "nickName" not in listed["Resources"][0]
            assert c.get(f"/Groups/{gid}").json()["members"][0]["value"] == uid
            assert c.get(f"/Groups/{gid}").json()["displayName"] == "g"

        # The token endpoint and the portal's URLs.
        token_url = f"{server.root_url}/oauth2/server/token"
        r = httpx.post(
            token_url,
            data={"grant_type": "client_credentials", "client_id": NUL, "client_secret": "s"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"
        r = httpx.post(
            token_url, data={"grant_type": "client_credentials"}, auth=(f"a{NUL}", "secret")
        )
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        for path in ("/admin/audit?who=a%00", "/admin/users/a%00", "/healthz%00"):
            r = httpx.get(f"{server.root_url}{path}")
            assert r.status_code == 400, r.text
            if path.startswith("/admin"):  # a page's address: words for a person
                assert "NUL character" in r.text and r.headers["content-type"].startswith("text/")
            else:
                assert "NUL character" in r.json()["detail"]


def test_overlong_indexed_values_and_huge_start_index(
    any_database_url: str, tmp_path: Path
) -> None:
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            long = "é" * 513
            fits = "é" * 512
            for path, body, attr in (
                ("/Users", {"userName": long}, "userName"),
                ("/Users", {"userName": "x" * 9000}, "userName"),  # was a 503 on PostgreSQL
                ("/Users", {"userName": "a@example.com", "externalId": long}, "externalId"),
                ("/Groups", {"displayName": long}, "displayName"),
                ("/Groups", {"displayName": "g", "externalId": long}, "externalId"),
            ):
                _error(c.post(path, json=body), 400, "invalidValue", f"'{attr}'", "512")
            r = c.post("/Users", json={"userName": fits, "externalId": fits})
            assert r.status_code == 201, r.text
            uid = r.json()["id"]
            r = c.patch(
                f"/Users/{uid}",
                json=_patch({"op": "replace", "path": "userName", "value": long}),
            )
            _error(r, 400, "invalidValue", "'userName'")
            r = c.put(f"/Users/{uid}", json={"userName": "b@example.com", "externalId": long})
            _error(r, 400, "invalidValue", "'externalId'")
            found = c.get("/Users", params={"filter": f'userName eq "{fits}"'}).json()
            assert [u["id"] for u in found["Resources"]] == [uid]
            assert found["Resources"][0]["externalId"] == fits
            assert c.get("/Groups").json()["totalResults"] == 0

            # startIndex past any OFFSET a database takes: past the end, an empty page.
            for start in ("99999999999999999999999", str(2**63)):
                r = c.get("/Users", params={"startIndex": start})
                assert r.status_code == 200, r.text
                assert r.json()["Resources"] == []
                assert r.json()["totalResults"] == 1
            r = c.post("/Users/.search", json={"startIndex": 2**63 - 1, "count": 5})
            assert r.status_code == 200, r.text
            assert r.json()["Resources"] == []
