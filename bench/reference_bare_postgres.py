"""The PostgreSQL "durable limit" reference for bench/load.py: a bare Starlette app on psycopg 3.

The same HTTP surface and the same minimal semantics as bench/reference_bare.py, on PostgreSQL
instead of SQLite, done the way a bare async Python server would: psycopg 3's async API
(``psycopg.AsyncConnection``, autocommit, psycopg's automatic server-side prepared statements)
and a fixed set of ``--pool-size`` connections (16 by default) opened at startup and handed out
through an ``asyncio.Queue``; no SQLAlchemy, no threads. One statement per read, one transaction
per write (a single autocommitted statement, or a BEGIN/COMMIT block when a write takes two),
JSON documents stored as text, a unique index for ``userName eq``, LIMIT/OFFSET pages over an
identity column in insertion order with a running counter instead of ``count(*)``, and member
adds as one ``INSERT ... SELECT unnest(...) ON CONFLICT DO NOTHING`` per request (ids sorted, so
concurrent adds lock rows in the same order). There is no schema validation, no authentication
(any token is accepted), no ETags and naive PATCH handling, so its figures are the ceiling that
the HTTP stack (uvicorn, Starlette) plus an async PostgreSQL driver and the PostgreSQL server
allow on this machine; a real server on the same PostgreSQL can only be slower.

Routes (base URL ``http://127.0.0.1:PORT/scim/v2``), as in bench/reference_bare.py:

- ``POST /Users``, ``GET /Users/{id}``, ``PATCH /Users/{id}``
- ``GET /Users?filter=userName eq "x"`` and ``GET /Users?startIndex=K&count=N``
- ``POST /Groups``, ``PATCH /Groups/{id}`` (member adds, INSERT ... ON CONFLICT DO NOTHING)

The tables are created at startup if missing; the database itself must exist. The URL may be in
SQLAlchemy's form (``postgresql+psycopg://...``, as scimd takes it): the ``+driver`` part is
dropped before psycopg connects.

Run::

    python bench/reference_bare_postgres.py --port 8002 \\
        --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/bare
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import uvicorn
from reference_bare import (
    FILTER_RE,
    LIST_SCHEMA,
    MEMBER_PATH_RE,
    SCIM_JSON,
    error,
    now,
    scim,
    set_path,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA_SQL = (
    """CREATE TABLE IF NOT EXISTS users (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    user_name_lower TEXT UNIQUE NOT NULL,
    doc TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
)""",
)
ADD_MEMBERS_SQL = (
    "INSERT INTO members (group_id, user_id) SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING"
)
REMOVE_MEMBERS_SQL = "DELETE FROM members WHERE group_id = %s AND user_id = ANY(%s::text[])"


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's form) -> ``postgresql://...`` (libpq's)."""
    return re.sub(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", r"\1://", url)


class Store:
    """A fixed pool of autocommit connections, handed out through a queue."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self.user_count = 0

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def open(self) -> None:
        conns = [await self.connect() for _ in range(self.size)]
        for sql in SCHEMA_SQL:
            await conns[0].execute(sql)
        cur = await conns[0].execute("SELECT count(*) FROM users")
        row = await cur.fetchone()
        self.user_count = int(row[0]) if row else 0
        for conn in conns:
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Borrow a connection; a broken one is replaced before it goes back."""
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            if conn.broken or conn.closed:
                try:
                    conn = await self.connect()
                finally:
                    self.idle.put_nowait(conn)
            else:
                self.idle.put_nowait(conn)

    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One read statement on a pooled connection."""
        async with self.conn() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()


def build_app(url: str, pool_size: int) -> Starlette:
    store = Store(libpq_url(url), pool_size)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    def location(request: Request, kind: str, resource_id: str) -> str:
        return f"{request.base_url}scim/v2/{kind}/{resource_id}"

    async def create_user(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        user_name = doc.get("userName")
        if not isinstance(user_name, str) or not user_name:
            return error(400, "userName is required", "invalidValue")
        resource_id = uuid.uuid4().hex
        stamp = now()
        doc["id"] = resource_id
        doc["meta"] = {
            "resourceType": "User",
            "created": stamp,
            "lastModified": stamp,
            "location": location(request, "Users", resource_id),
            "version": 'W/"1"',
        }
        try:
            async with store.conn() as conn:
                await conn.execute(
                    "INSERT INTO users (id, user_name_lower, doc) VALUES (%s, %s, %s)",
                    (resource_id, user_name.lower(), orjson.dumps(doc).decode()),
                )
        except psycopg.errors.UniqueViolation:
            return error(409, "userName already exists", "uniqueness")
        store.user_count += 1
        return scim(doc, 201, {"Location": doc["meta"]["location"]})

    async def get_user(request: Request) -> Response:
        row = await store.fetchone(
            "SELECT doc FROM users WHERE id = %s", (request.path_params["id"],)
        )
        if row is None:
            return error(404, "user not found")
        return Response(row[0], media_type=SCIM_JSON)

    async def list_users(request: Request) -> Response:
        params = request.query_params
        scim_filter = params.get("filter")
        docs: list[str]
        if scim_filter is not None:
            match = FILTER_RE.match(scim_filter)
            if not match:
                return error(400, "only userName eq filters are supported", "invalidFilter")
            user_name = match.group(1).replace('\\"', '"').replace("\\\\", "\\")
            row = await store.fetchone(
                "SELECT doc FROM users WHERE user_name_lower = %s", (user_name.lower(),)
            )
            docs = [] if row is None else [row[0]]
            total, start = len(docs), 1
        else:
            try:
                start = max(1, int(params.get("startIndex", "1")))
                count = max(0, min(1000, int(params.get("count", "100"))))
            except ValueError:
                return error(400, "startIndex and count must be integers", "invalidValue")
            async with store.conn() as conn:
                cur = await conn.execute(
                    "SELECT doc FROM users ORDER BY seq LIMIT %s OFFSET %s", (count, start - 1)
                )
                rows = await cur.fetchall()
            docs = [row[0] for row in rows]
            total = store.user_count
        # The stored documents are JSON already: splice them in without decoding.
        head = orjson.dumps({"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start})[
            :-1
        ]
        body = head + b',"itemsPerPage":%d,"Resources":[' % len(docs)
        body += ",".join(docs).encode() + b"]}"
        return Response(body, media_type=SCIM_JSON)

    async def patch_user(request: Request) -> Response:
        resource_id = request.path_params["id"]
        patch = orjson.loads(await request.body())
        async with store.conn() as conn:
            cur = await conn.execute("SELECT doc FROM users WHERE id = %s", (resource_id,))
            row = await cur.fetchone()
            if row is None:
                return error(404, "user not found")
            doc = orjson.loads(row[0])
            for operation in patch.get("Operations", []):
                path, value = operation.get("path"), operation.get("value")
                if path:
                    set_path(doc, path, value)
                elif isinstance(value, dict):
                    for key, item in value.items():
                        set_path(doc, key, item)
            doc["meta"]["lastModified"] = now()
            user_name = str(doc.get("userName", ""))
            try:
                await conn.execute(
                    "UPDATE users SET doc = %s, user_name_lower = %s WHERE id = %s",
                    (orjson.dumps(doc).decode(), user_name.lower(), resource_id),
                )
            except psycopg.errors.UniqueViolation:
                return error(409, "userName already exists", "uniqueness")
        return scim(doc)

    async def create_group(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        members = doc.pop("members", None) or []
        resource_id = uuid.uuid4().hex
        stamp = now()
        doc["id"] = resource_id
        doc["meta"] = {
            "resourceType": "Group",
            "created": stamp,
            "lastModified": stamp,
            "location": location(request, "Groups", resource_id),
        }
        user_ids = sorted({str(m.get("value")) for m in members if isinstance(m, dict)})
        async with store.conn() as conn:
            sql = "INSERT INTO groups (id, doc) VALUES (%s, %s)"
            params = (resource_id, orjson.dumps(doc).decode())
            if user_ids:
                async with conn.transaction():
                    await conn.execute(sql, params)
                    await conn.execute(ADD_MEMBERS_SQL, (resource_id, user_ids))
            else:
                await conn.execute(sql, params)
        return scim(doc, 201, {"Location": doc["meta"]["location"]})

    async def patch_group(request: Request) -> Response:
        resource_id = request.path_params["id"]
        patch = orjson.loads(await request.body())
        async with store.conn() as conn:
            cur = await conn.execute("SELECT 1 FROM groups WHERE id = %s", (resource_id,))
            if await cur.fetchone() is None:
                return error(404, "group not found")
            adds: set[str] = set()
            removes: set[str] = set()
            for operation in patch.get("Operations", []):
                op = str(operation.get("op", "")).lower()
                path = str(operation.get("path", ""))
                value = operation.get("value")
                if not MEMBER_PATH_RE.match(path) or not isinstance(value, list):
                    continue  # displayName changes and filtered removes are out of scope
                ids = {str(m.get("value")) for m in value if isinstance(m, dict)}
                if op == "add":
                    adds |= ids
                elif op == "remove":
                    removes |= ids
            statements = [
                (sql, (resource_id, sorted(ids)))
                for sql, ids in ((ADD_MEMBERS_SQL, adds), (REMOVE_MEMBERS_SQL, removes))
                if ids
            ]
            if len(statements) == 1:
                await conn.execute(*statements[0])
            elif statements:
                async with conn.transaction():
                    for sql, params in statements:
                        await conn.execute(sql, params)
        return Response(status_code=204)

    routes = [
        Route("/scim/v2/Users", create_user, methods=["POST"]),
        Route("/scim/v2/Users", list_users, methods=["GET"]),
        Route("/scim/v2/Users/{id}", get_user, methods=["GET"]),
        Route("/scim/v2/Users/{id}", patch_user, methods=["PATCH"]),
        Route("/scim/v2/Groups", create_group, methods=["POST"]),
        Route("/scim/v2/Groups/{id}", patch_group, methods=["PATCH"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bare Starlette + psycopg SCIM reference.")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument(
        "--postgres-url",
        required=True,
        help="database to use (postgresql://... or postgresql+psycopg://...)",
    )
    parser.add_argument("--pool-size", type=int, default=16, help="PostgreSQL connections")
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(args.postgres_url, args.pool_size),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
