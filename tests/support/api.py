"""A SCIM client over Starlette's TestClient, for tests that call the app in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store import properties as props
from scimd.store.engine import create_engine
from scimd.web.app import create_app

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Api:
    """Requests to ``/scim/v2`` with a bearer token; ``engine`` is the app's database."""

    def __init__(self, client: TestClient, token: str, engine: Any) -> None:
        self.client = client
        self.token = token
        self.engine = engine

    def req(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        if body is not None and not isinstance(body, (bytes, str)):
            kw["content"] = json.dumps(body)
            headers.setdefault("Content-Type", "application/scim+json")
        elif body is not None:
            kw["content"] = body
            headers.setdefault("Content-Type", "application/scim+json")
        return self.client.request(method, "/scim/v2" + path, headers=headers, **kw)

    def user(self, name: str, **extra: Any) -> dict[str, Any]:
        r = self.req("POST", "/Users", {"schemas": [USER], "userName": name, **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def group(self, name: str, members: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
        r = self.req("POST", "/Groups", body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def patch(self, path: str, *ops: dict[str, Any]) -> Any:
        return self.req("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(ops)})

    def ids(self, endpoint: str, flt: str) -> list[str]:
        """The ids a filter finds (asserting a 200)."""
        r = self.req("GET", endpoint, params={"filter": flt})
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json().get("Resources", [])]


@contextmanager
def serving(database_url: str, properties: Sequence[tuple[str, str]] = ()) -> Iterator[Api]:
    """The app on a database, with an application holding both scopes and the given custom
    user properties (name, type); the engine is disposed afterwards."""
    engine = create_engine(database_url)
    app = create_app(Settings(max_payload=64 * 1024, max_results=50), engine)
    try:
        with engine.begin() as conn:
            _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
            for name, kind in properties:
                props.add_property(conn, name, kind, "", audit.CLI)
        with TestClient(app) as client:
            yield Api(client, token, engine)
    finally:
        engine.dispose()
