"""CPU per request of scimd's own code, in-process: POST, GET by id, filter by userName, PATCH,
group creation and 100-member adds, re-sent adds and removes.

The load benchmark (``bench/run.py``) measures throughput over HTTP with the load generator on
the same two cores; runs of the same code differ by a fifth or more there, which hides a change
of a few microseconds. This calls the ASGI application directly, one request at a time, and
reports the process CPU time per request (``time.process_time``): no HTTP parsing, no event loop
contention, no other process (``--concurrency N`` sends N at a time instead, so that writes
share group commits as they do under load). Compare two commits by running it against an export
of each, in turn (``PYTHONPATH=/tmp/snap-COMMIT/src``), a few times: the spread between runs is
a few percent. It also reports the wall time per request, which on PostgreSQL adds the round trips
and the server's own work (one request at a time: no lock is ever waited for).

    python bench/inprocess.py --users 3000 [--concurrency 8] [--database-url sqlite:///path.db]

Without ``--database-url`` a SQLite file in a temporary directory is used. With a PostgreSQL URL
the requests run one at a time, so the read batching never has two reads to share a statement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from scimd.auth import apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web.app import create_app

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
Message = MutableMapping[str, Any]


def user_body(i: int) -> dict[str, Any]:
    """An Entra-style user (~0.6 KB), as bench/load.py's post_user sends."""
    name = f"user{i}@contoso.example"
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": name,
        "active": True,
        "displayName": f"User {i}",
        "title": "Engineer",
        "emails": [{"primary": True, "type": "work", "value": name}],
        "phoneNumbers": [{"type": "mobile", "value": "+1 555 0100"}],
        "name": {"formatted": f"User {i}", "familyName": "Doe", "givenName": "John"},
        ENTERPRISE: {"employeeNumber": str(i), "department": "R&D"},
    }


class Caller:
    """Sends requests straight to the ASGI app, with a bearer token."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app = app
        self.headers = [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/scim+json"),
            (b"host", b"127.0.0.1"),
        ]

    async def __call__(
        self, method: str, path: str, query: str = "", data: Any = None
    ) -> tuple[int, bytes]:
        raw = json.dumps(data).encode() if data is not None else b""
        sent = False
        out: dict[str, Any] = {"body": b""}

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.sleep(3600)  # the app never waits for a disconnect here
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await self.app(scope, receive, send)
        return int(out["status"]), bytes(out["body"])


async def measure(
    users: int, database_url: str, concurrency: int = 1
) -> tuple[dict[str, float], dict[str, float]]:
    engine = create_engine(database_url)
    app = create_app(Settings(access_log=False), engine)
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.create_task(app(lifespan, to_app.get, from_app.put))
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "bench", "bearer", ["API", "USER SYNC"], audit.CLI)
    call = Caller(app, token)
    per: dict[str, float] = {}
    wall: dict[str, float] = {}

    async def timed(name: str, requests: list[tuple[str, str, str, Any]], ok: int) -> list[bytes]:
        bodies: list[bytes] = []
        t0, w0 = time.process_time(), time.perf_counter()
        # `concurrency` requests at a time, so that writes share group commits as under load.
        for k in range(0, len(requests), concurrency):
            sent = requests[k : k + concurrency]
            answers = await asyncio.gather(*(call(*r) for r in sent))
            for (method, path, _, _), (status, body) in zip(sent, answers, strict=True):
                if status != ok:
                    raise SystemExit(f"{name}: {method} {path} answered {status}: {body[:300]!r}")
                bodies.append(body)
        per[name] = (time.process_time() - t0) / len(requests) * 1e6
        wall[name] = (time.perf_counter() - w0) / len(requests) * 1e6
        return bodies

    made = await timed(
        "post_user", [("POST", "/scim/v2/Users", "", user_body(i)) for i in range(users)], 201
    )
    ids = [json.loads(b)["id"] for b in made]
    await timed("get_user", [("GET", f"/scim/v2/Users/{i}", "", None) for i in ids * 4], 200)
    probes = [
        ("GET", "/scim/v2/Users", "filter=" + quote(f'userName eq "user{i}@contoso.example"'), None)
        for i in range(users)
    ]
    await timed("filter_username", probes * 2, 200)
    patches = [
        (
            "PATCH",
            f"/scim/v2/Users/{rid}",
            "",
            {
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "Replace", "path": "name.familyName", "value": f"Doe{k}"},
                    {"op": "Replace", "path": 'emails[type eq "work"].value', "value": f"w{k}@x"},
                ],
            },
        )
        for k, rid in enumerate(ids)
    ]
    await timed("patch_user", patches, 200)
    # Groups: batches of 100 random members added to a 100-member group, added again (no
    # change), then removed, beside groups holding ~20 memberships per user.
    rnd = random.Random(7)
    made = await timed(
        "post_group",
        [
            (
                "POST",
                "/scim/v2/Groups",
                "",
                {
                    "displayName": f"g{k}",
                    "members": [{"value": m} for m in rnd.sample(ids, min(100, len(ids)))],
                },
            )
            for k in range(max(1, users // 5))
        ],
        201,
    )
    group = json.loads(made[0])["id"]
    held = {m["value"] for m in json.loads(made[0]).get("members", [])}
    free = [i for i in ids if i not in held]
    # Disjoint batches (a batch overlapping an earlier one would be partly re-sent adds).
    picked = rnd.sample(free, min(2500, len(free) // 100 * 100))
    batches = [[{"value": m} for m in picked[k : k + 100]] for k in range(0, len(picked), 100)]

    def member_patches(op: str) -> list[tuple[str, str, str, Any]]:
        return [
            (
                "PATCH",
                f"/scim/v2/Groups/{group}",
                "",
                {"schemas": [PATCH_OP], "Operations": [{"op": op, "path": "members", "value": b}]},
            )
            for b in batches
        ]

    await timed("group_add_100", member_patches("add"), 204)
    await timed("group_readd_100", member_patches("add"), 204)  # Entra re-sends adds
    await timed("group_remove_100", member_patches("remove"), 204)
    await to_app.put({"type": "lifespan.shutdown"})
    await from_app.get()
    await running
    engine.dispose()
    return per, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000, help="users created, then read")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests sent at a time (writes then share group commits, as under load)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scimd-inproc-") as scratch:  # removed afterwards
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        per, wall = asyncio.run(measure(args.users, url, args.concurrency))
    figures = {k: round(v, 1) for k, v in per.items()}
    walls = {k: round(v, 1) for k, v in wall.items()}
    print(
        json.dumps(
            {"users": args.users, "concurrency": args.concurrency, "us_cpu_per_request": figures}
        )
    )
    # Wall time: on PostgreSQL it adds the round trips and the server's own work, which a
    # request holding a group's row lock makes every other writer of that group wait for.
    print(json.dumps({"users": args.users, "us_wall_per_request": walls}))


if __name__ == "__main__":
    main()
