"""The "durable limit" reference for bench/load.py: a bare Starlette app on stdlib sqlite3.

It answers the same HTTP surface as a SCIM server for the operations of bench/load.py, doing the
least work a durable server can do: one SQLite connection used on the event loop (WAL,
synchronous=NORMAL), one commit per write, JSON documents stored as text, an indexed lookup for
``userName eq``, LIMIT/OFFSET pages over rowid order with a running counter instead of
``count(*)``. There is no schema validation, no authentication (any token is accepted), no
ETags and naive PATCH handling, so its figures are the ceiling that the HTTP stack (uvicorn,
Starlette) plus a durable SQLite write path allow on this machine; a real server can only be
slower.

Routes (base URL ``http://127.0.0.1:PORT/scim/v2``):

- ``POST /Users``, ``GET /Users/{id}``, ``PATCH /Users/{id}``
- ``GET /Users?filter=userName eq "x"`` and ``GET /Users?startIndex=K&count=N``
- ``POST /Groups``, ``PATCH /Groups/{id}`` (member adds, INSERT OR IGNORE)

Run::

    python bench/reference_bare.py --port 8001 --db /tmp/bare.db
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import re
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCIM_JSON = "application/scim+json"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
FILTER_RE = re.compile(r'^\s*userName\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)
MEMBER_PATH_RE = re.compile(r"^\s*members\s*$", re.IGNORECASE)
EMAIL_VALUE_RE = re.compile(r'^emails\[type eq "([^"]*)"\]\.value$', re.IGNORECASE)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    user_name_lower TEXT UNIQUE NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
"""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def scim(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=SCIM_JSON, headers=headers)


def error(status: int, detail: str, scim_type: str | None = None) -> Response:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return scim(body, status)


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Naively set ``attr``, ``attr.sub`` or ``emails[type eq "x"].value`` in a document."""
    match = EMAIL_VALUE_RE.match(path)
    if match:
        kind = match.group(1).lower()
        emails = doc.setdefault("emails", [])
        for email in emails:
            if str(email.get("type", "")).lower() == kind:
                email["value"] = value
                return
        emails.append({"type": match.group(1), "value": value})
        return
    parts = path.split(".")
    if len(parts) == 2 and parts[0].startswith("urn:"):
        parts = [path]  # a bare extension URN path is a top-level key
    target = doc
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[parts[-1]] = value


class Store:
    """The SQLite database, used from the event loop thread only."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA_SQL)
        self.user_count: int = self.db.execute("SELECT count(*) FROM users").fetchone()[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction committed at the end of the block, rolled back on error."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement in its own transaction, committed at once."""
        with self.transaction():
            self.db.execute(sql, params)


def build_app(db_path: str) -> Starlette:
    store = Store(db_path)

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
            store.write(
                "INSERT INTO users (id, user_name_lower, doc) VALUES (?, ?, ?)",
                (resource_id, user_name.lower(), orjson.dumps(doc).decode()),
            )
        except sqlite3.IntegrityError:
            return error(409, "userName already exists", "uniqueness")
        store.user_count += 1
        return scim(doc, 201, {"Location": doc["meta"]["location"]})

    async def get_user(request: Request) -> Response:
        row = store.db.execute(
            "SELECT doc FROM users WHERE id = ?", (request.path_params["id"],)
        ).fetchone()
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
            row = store.db.execute(
                "SELECT doc FROM users WHERE user_name_lower = ?", (user_name.lower(),)
            ).fetchone()
            docs = [] if row is None else [row[0]]
            total, start = len(docs), 1
        else:
            try:
                start = max(1, int(params.get("startIndex", "1")))
                count = max(0, min(1000, int(params.get("count", "100"))))
            except ValueError:
                return error(400, "startIndex and count must be integers", "invalidValue")
            rows = store.db.execute(
                "SELECT doc FROM users ORDER BY rowid LIMIT ? OFFSET ?", (count, start - 1)
            ).fetchall()
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
        row = store.db.execute("SELECT doc FROM users WHERE id = ?", (resource_id,)).fetchone()
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
            store.write(
                "UPDATE users SET doc = ?, user_name_lower = ? WHERE id = ?",
                (orjson.dumps(doc).decode(), user_name.lower(), resource_id),
            )
        except sqlite3.IntegrityError:
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
        with store.transaction():
            store.db.execute(
                "INSERT INTO groups (id, doc) VALUES (?, ?)",
                (resource_id, orjson.dumps(doc).decode()),
            )
            store.db.executemany(
                "INSERT OR IGNORE INTO members (group_id, user_id) VALUES (?, ?)",
                [(resource_id, str(m.get("value"))) for m in members if isinstance(m, dict)],
            )
        return scim(doc, 201, {"Location": doc["meta"]["location"]})

    async def patch_group(request: Request) -> Response:
        resource_id = request.path_params["id"]
        patch = orjson.loads(await request.body())
        if store.db.execute("SELECT 1 FROM groups WHERE id = ?", (resource_id,)).fetchone() is None:
            return error(404, "group not found")
        adds: list[tuple[str, str]] = []
        removes: list[tuple[str, str]] = []
        for operation in patch.get("Operations", []):
            op = str(operation.get("op", "")).lower()
            path = str(operation.get("path", ""))
            value = operation.get("value")
            if not MEMBER_PATH_RE.match(path) or not isinstance(value, list):
                continue  # displayName changes and filtered removes are out of scope
            pairs = [(resource_id, str(m.get("value"))) for m in value if isinstance(m, dict)]
            if op == "add":
                adds.extend(pairs)
            elif op == "remove":
                removes.extend(pairs)
        with store.transaction():
            store.db.executemany(
                "INSERT OR IGNORE INTO members (group_id, user_id) VALUES (?, ?)", adds
            )
            store.db.executemany("DELETE FROM members WHERE group_id = ? AND user_id = ?", removes)
        return Response(status_code=204)

    routes = [
        Route("/scim/v2/Users", create_user, methods=["POST"]),
        Route("/scim/v2/Users", list_users, methods=["GET"]),
        Route("/scim/v2/Users/{id}", get_user, methods=["GET"]),
        Route("/scim/v2/Users/{id}", patch_user, methods=["PATCH"]),
        Route("/scim/v2/Groups", create_group, methods=["POST"]),
        Route("/scim/v2/Groups/{id}", patch_group, methods=["PATCH"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bare Starlette + SQLite SCIM reference.")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--db", required=True, help="SQLite database file")
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(args.db),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
