"""On PostgreSQL, a request waiting on the database does not hold up the others.

Directory calls run in greenlets on the event loop (``store.onloop``): while one request's
statement waits (here for a row lock another session holds), the server keeps answering.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import sqlalchemy as sa

from support.live_server import provisioned_server

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def _scenario(base: str, token: str, database_url: str) -> tuple[int, list[int], str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        a = (await c.post("/Users", json={"userName": "held@x.com"})).json()["id"]
        b = (await c.post("/Users", json={"userName": "free@x.com"})).json()["id"]
        engine = sa.create_engine(database_url)
        try:
            with engine.connect() as holder:
                tx = holder.begin()
                holder.execute(sa.text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": a})
                body = {
                    "schemas": [PATCH],
                    "Operations": [{"op": "replace", "path": "displayName", "value": "Held"}],
                }
                waiting = asyncio.create_task(c.patch(f"/Users/{a}", json=body))
                await asyncio.sleep(0.5)  # the PATCH is now waiting for the row lock
                others = [
                    (await c.get(f"/Users/{b}")).status_code,
                    (await c.post("/Users", json={"userName": "meanwhile@x.com"})).status_code,
                    (
                        await c.get("/Users", params={"filter": 'userName eq "free@x.com"'})
                    ).status_code,
                ]
                still_waiting = not waiting.done()
                tx.commit()
            patched = await waiting
        finally:
            engine.dispose()
        assert still_waiting, "the PATCH should have been waiting for the lock"
        return patched.status_code, others, patched.json()["displayName"]


def test_a_waiting_request_does_not_block_others(postgres_url: str, tmp_path: Path) -> None:
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        status, others, name = asyncio.run(_scenario(server.base_url, server.token, postgres_url))
    assert others == [200, 201, 200]
    assert (status, name) == (200, "Held")
