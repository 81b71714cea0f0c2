"""The SCIM 2.0 endpoints under ``/scim/v2`` (RFC 7644 §3).

Routing is by hand so that what Entra and other clients send is tolerated: resource segments
match case-insensitively, ``//`` and a trailing slash are ignored, and Entra's feature-flag query
parameters are ignored. Each handler parses, makes one directory call and renders.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimd.auth import apps
from scimd.scim.errors import (
    InvalidSyntax,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    ScimError,
    Unauthorized,
)
from scimd.scim.filter import parse
from scimd.scim.resource import parse_attribute_list
from scimd.settings import Settings
from scimd.store.directory import Directory, Listing
from scimd.web import bulk, discovery
from scimd.web.http import error_response, int_param, read_json, scim_response, str_param
from scimd.web.security import CHALLENGE, FailureThrottle, bearer_token, require_scope

log = logging.getLogger("scimd.web")

RESOURCES = {"users": "User", "groups": "Group"}
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


class Scim:
    """Holds what the handlers share; one per app."""

    def __init__(self, settings: Settings, directory: Directory) -> None:
        self.settings = settings
        self.directory = directory
        self.throttle = FailureThrottle(settings.auth_failures_per_minute)
        self._last_used: dict[int, float] = {}
        self.in_thread = directory.engine.dialect.name != "sqlite"
        # A dedicated pool: each worker keeps its own database connection (see Directory).
        self.executor = (
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="scimd-db")
            if self.in_thread
            else None
        )

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a blocking database call.

        SQLite calls run on the event loop: they take microseconds and a thread hop costs
        more than the call. Network databases run in a worker thread.
        """
        if self.executor is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kw))
        return fn(*args, **kw)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def base(self, request: Request) -> str:
        root = self.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
        return f"{root}/scim/v2"

    # -- entry point ------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        try:
            principal = await self.authenticate(request)
            request.state.client_id = principal.client_id
            return await self.dispatch(request, principal)
        except ScimError as e:
            headers = {"WWW-Authenticate": CHALLENGE} if e.status == 401 else None
            if e.status == 429:
                headers = {"Retry-After": "60"}
            return error_response(e, headers)

    async def authenticate(self, request: Request) -> apps.Principal:
        address = request.client.host if request.client else "-"
        self.throttle.check(address)
        try:
            token = bearer_token(request.headers.get("authorization"))
        except Unauthorized:
            self.throttle.failed(address)
            raise

        def lookup() -> apps.Principal | None:
            with self.directory.read() as conn:
                return apps.authenticate(conn, token)

        principal: apps.Principal | None = await self.db(lookup)
        if principal is None:
            self.throttle.failed(address)
            raise Unauthorized("the bearer token is not valid, or has been revoked or expired")
        require_scope(principal.scopes, apps.SCIM_SCOPE)
        now = time.monotonic()
        if now - self._last_used.get(principal.app_pk, 0.0) > 60:
            # "Last used" for the portal, written at most once a minute per application.
            self._last_used[principal.app_pk] = now

            def touch() -> None:
                with self.directory.write() as conn:
                    apps.touch_last_used(conn, principal.app_pk)

            await self.db(touch)
        return principal

    async def dispatch(self, request: Request, principal: apps.Principal) -> Response:
        parts = [p for p in request.path_params.get("rest", "").split("/") if p]
        method = request.method
        if not parts:
            raise NotFound("this is the SCIM base URL: use /Users, /Groups or /Schemas below it")
        head = parts[0].lower()
        actor = principal.actor(request.state.request_id)
        if head in RESOURCES:
            name = RESOURCES[head]
            if len(parts) == 1:
                if method == "GET":
                    return await self.list(request, name)
                if method == "POST":
                    return await self.create(request, name, actor)
                raise MethodNotAllowed(f"{method} is not allowed on /{parts[0]}")
            if len(parts) == 2 and parts[1] == ".search":
                _require(method, "POST", request.url.path)
                return await self.search(request, name)
            if len(parts) == 2:
                rid = parts[1]
                handler = {
                    "GET": self.get,
                    "PUT": self.replace,
                    "PATCH": self.patch,
                    "DELETE": self.delete,
                }.get(method)
                if handler is None:
                    raise MethodNotAllowed(f"{method} is not allowed on a {name}")
                return await handler(request, name, rid, actor)
        elif head == ".search" and len(parts) == 1:
            _require(method, "POST", request.url.path)
            return await self.search(request, None)
        elif head == "bulk" and len(parts) == 1:
            _require(method, "POST", request.url.path)
            body = await read_json(request, self.settings.max_payload)
            result = await bulk.run(self, request, body, actor)
            return scim_response(result)
        elif head == "serviceproviderconfig" and len(parts) == 1:
            _require(method, "GET", request.url.path)
            return scim_response(
                discovery.service_provider_config(self.settings, self.base(request))
            )
        elif head == "resourcetypes":
            _require(method, "GET", request.url.path)
            types = await self.db(self.directory.resource_types)
            docs = discovery.resource_types(types, self.base(request))
            return _one_or_list(docs, parts, "name", "ResourceType")
        elif head == "schemas":
            _require(method, "GET", request.url.path)
            types = await self.db(self.directory.resource_types)
            docs = discovery.schemas(types, self.base(request))
            return _one_or_list(docs, parts, "id", "Schema")
        elif head == "me":
            raise ScimError("/Me is not supported: use /Users/{id}", status=501)
        raise NotFound(f"no such endpoint: {request.url.path}")

    # -- handlers ---------------------------------------------------------------------------
    async def list(self, request: Request, name: str) -> Response:
        q = self._list_params(
            filter_text=str_param(request, "filter"),
            start=int_param(request, "startIndex", 1),
            count=int_param(request, "count", self.settings.default_count),
            sort_by=str_param(request, "sortBy"),
            sort_order=str_param(request, "sortOrder"),
            attributes=str_param(request, "attributes"),
            excluded=str_param(request, "excludedAttributes"),
        )
        listing = await self.db(self.directory.search, name, base=self.base(request), **q)
        return scim_response(_list_body(listing))

    async def search(self, request: Request, name: str | None) -> Response:
        body = await read_json(request, self.settings.max_payload)
        if not isinstance(body, dict):
            raise InvalidSyntax("a SearchRequest must be a JSON object")

        def field(key: str) -> Any:
            for k, v in body.items():
                if k.lower() == key.lower():
                    return v
            return None

        def join(v: Any) -> str | None:
            if v is None:
                return None
            if isinstance(v, list):
                return ",".join(str(x) for x in v)
            return str(v)

        start = field("startIndex")
        count = field("count")
        for key, v in (("startIndex", start), ("count", count)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidValue(f"'{key}' must be an integer")
        q = self._list_params(
            filter_text=field("filter"),
            start=start if start is not None else 1,
            count=count if count is not None else self.settings.default_count,
            sort_by=field("sortBy"),
            sort_order=field("sortOrder"),
            attributes=join(field("attributes")),
            excluded=join(field("excludedAttributes")),
        )
        base = self.base(request)
        if name is None:
            q.pop("sort_by")
            q.pop("descending")
            listing = await self.db(self.directory.search_all, base=base, **q)
        else:
            listing = await self.db(self.directory.search, name, base=base, **q)
        return scim_response(_list_body(listing))

    def _list_params(
        self,
        *,
        filter_text: Any,
        start: int,
        count: int,
        sort_by: Any,
        sort_order: Any,
        attributes: str | None,
        excluded: str | None,
    ) -> dict[str, Any]:
        if filter_text is not None and not isinstance(filter_text, str):
            raise InvalidValue("'filter' must be a string")
        if sort_by is not None and not isinstance(sort_by, str):
            raise InvalidValue("'sortBy' must be an attribute path")
        order = (sort_order or "ascending").lower() if isinstance(sort_order, str) else "ascending"
        if order not in ("ascending", "descending"):
            raise InvalidValue("'sortOrder' must be 'ascending' or 'descending'")
        return {
            "flt": parse(filter_text) if filter_text else None,
            # RFC 7644 §3.4.2.4: startIndex < 1 means 1; count < 0 means 0; capped at maxResults.
            "start": max(start, 1),
            "count": min(max(count, 0), self.settings.max_results),
            "sort_by": sort_by or None,
            "descending": order == "descending",
            "attributes": parse_attribute_list(attributes),
            "excluded": parse_attribute_list(excluded),
        }

    async def create(self, request: Request, name: str, actor: Any) -> Response:
        body = await read_json(request, self.settings.max_payload)
        written = await self.db(self.directory.create, name, body, actor, self.base(request))
        res = written.resource
        assert res is not None
        return scim_response(res, 201, {"Location": res["meta"]["location"], "ETag": written.etag})

    async def get(self, request: Request, name: str, rid: str, actor: Any) -> Response:
        res, tag = await self.db(
            self.directory.get,
            name,
            rid,
            self.base(request),
            parse_attribute_list(str_param(request, "attributes")),
            parse_attribute_list(str_param(request, "excludedAttributes")),
        )
        if_none = request.headers.get("if-none-match")
        if if_none and tag in [t.strip() for t in if_none.split(",")]:
            return Response(status_code=304, headers={"ETag": tag})
        return scim_response(res, 200, {"ETag": tag})

    async def replace(self, request: Request, name: str, rid: str, actor: Any) -> Response:
        body = await read_json(request, self.settings.max_payload)
        written = await self.db(
            self.directory.replace,
            name,
            rid,
            body,
            actor,
            self.base(request),
            request.headers.get("if-match"),
        )
        return scim_response(written.resource, 200, {"ETag": written.etag})

    async def patch(self, request: Request, name: str, rid: str, actor: Any) -> Response:
        body = await read_json(request, self.settings.max_payload)
        attributes = parse_attribute_list(str_param(request, "attributes"))
        excluded = parse_attribute_list(str_param(request, "excludedAttributes"))
        # Entra wants 204 for group PATCH (a body with every member is costly); users get 200
        # with the resource, as do groups when the client asks for attributes.
        render = name == "User" or bool(attributes or excluded)
        written = await self.db(
            self.directory.patch,
            name,
            rid,
            body,
            actor,
            self.base(request),
            request.headers.get("if-match"),
            render=render,
            attributes=attributes,
            excluded=excluded,
        )
        if not render:
            return Response(status_code=204, headers={"ETag": written.etag})
        return scim_response(written.resource, 200, {"ETag": written.etag})

    async def delete(self, request: Request, name: str, rid: str, actor: Any) -> Response:
        await self.db(self.directory.delete, name, rid, actor, request.headers.get("if-match"))
        return Response(status_code=204)


def _require(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed}")


def _list_body(listing: Listing) -> dict[str, Any]:
    return {
        "schemas": [discovery.LIST_RESPONSE],
        "totalResults": listing.total,
        "itemsPerPage": len(listing.resources),
        "startIndex": listing.start,
        "Resources": listing.resources,
    }


def _one_or_list(docs: list[dict[str, Any]], parts: list[str], key: str, what: str) -> Response:
    if len(parts) == 1:
        return scim_response(discovery.list_response(docs))
    wanted = "/".join(parts[1:]).lower()
    for d in docs:
        if str(d[key]).lower() == wanted:
            return scim_response(d)
    raise NotFound(f"no {what} '{'/'.join(parts[1:])}'")
