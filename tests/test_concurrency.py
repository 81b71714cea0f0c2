"""Concurrent membership changes on one group end with exactly the expected member set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from support.live_server import provisioned_server

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def _scenario(base: str, token: str) -> tuple[set[str], set[str]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as c:
        users = []
        for i in range(64):
            r = await c.post("/Users", json={"userName": f"conc{i}@x.com"})
            assert r.status_code == 201, r.text
            users.append(r.json()["id"])
        g = await c.post("/Groups", json={"displayName": "Concurrent"})
        gid = g.json()["id"]
        # Users 0-31 start as members; 32 requests at once each remove one of them
        # (Entra's remove-with-value) and add one of users 32-63 (RFC add).
        first, second = users[:32], users[32:]
        r = await c.patch(
            f"/Groups/{gid}",
            json={
                "schemas": [PATCH],
                "Operations": [
                    {"op": "Add", "path": "members", "value": [{"value": u} for u in first]}
                ],
            },
        )
        assert r.status_code == 204, r.text

        async def swap(out: str, inn: str) -> int:
            body = {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "Remove", "path": "members", "value": [{"value": out}]},
                    {"op": "Add", "path": "members", "value": [{"$ref": None, "value": inn}]},
                ],
            }
            resp = await c.patch(f"/Groups/{gid}", json=body)
            return resp.status_code

        statuses = await asyncio.gather(*(swap(o, i) for o, i in zip(first, second, strict=True)))
        assert set(statuses) == {204}, statuses
        got = await c.get(f"/Groups/{gid}")
        members = {m["value"] for m in got.json().get("members", [])}
        return members, set(second)


def test_concurrent_member_patches(any_database_url: str, tmp_path: Path) -> None:
    """32 concurrent PATCHes swapping distinct members leave exactly the expected set."""
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        members, expected = asyncio.run(_scenario(server.base_url, server.token))
    assert members == expected


async def _user_scenario(base: str, token: str) -> tuple[set[str], list[int], int]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as c:
        r = await c.post("/Users", json={"userName": "one-user@x.com"})
        assert r.status_code == 201, r.text
        uid, etag = r.json()["id"], r.headers["etag"]

        async def add_email(i: int) -> int:
            body = {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "add", "path": "emails", "value": [{"value": f"e{i}@x.com"}]}
                ],
            }
            return (await c.patch(f"/Users/{uid}", json=body)).status_code

        statuses = await asyncio.gather(*(add_email(i) for i in range(16)))
        assert set(statuses) == {200}, statuses
        got = (await c.get(f"/Users/{uid}")).json()
        emails = {e["value"] for e in got.get("emails", [])}

        async def guarded(i: int) -> int:
            body = {
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "path": "displayName", "value": f"n{i}"}],
            }
            resp = await c.patch(f"/Users/{uid}", json=body, headers={"If-Match": current})
            return resp.status_code

        current = (await c.get(f"/Users/{uid}")).headers["etag"]
        assert current != etag
        guarded_statuses = await asyncio.gather(*(guarded(i) for i in range(16)))
        version = int((await c.get(f"/Users/{uid}")).json()["meta"]["version"].split('"')[1])
        return emails, guarded_statuses, version


def test_concurrent_patches_of_one_user(any_database_url: str, tmp_path: Path) -> None:
    """Concurrent PATCHes of one user lose no change, and If-Match admits exactly one writer.

    A PATCH reads the document, applies the operations and writes it back: two at once must
    not both start from the same version (a lost update), on either database.
    """
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        emails, guarded, version = asyncio.run(_user_scenario(server.base_url, server.token))
    assert emails == {f"e{i}@x.com" for i in range(16)}
    assert sorted(guarded) == [200] + [412] * 15
    assert version == 18  # created at 1, 16 email adds, one guarded replace
