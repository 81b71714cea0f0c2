"""Request parsing and SCIM responses: JSON bodies, limits, query parameters."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from scimd.scim.errors import (
    InvalidSyntax,
    InvalidValue,
    PayloadTooLarge,
    ScimError,
    UnsupportedMediaType,
)

SCIM_JSON = "application/scim+json"


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body) if body is not None else b"",
        status_code=status,
        media_type=SCIM_JSON if body is not None else None,
        headers=headers,
    )


def error_response(err: ScimError, headers: dict[str, str] | None = None) -> Response:
    return scim_response(err.to_dict(), err.status, headers)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: 413 past ``max_bytes``, 415 for non-JSON types, 400 otherwise."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise UnsupportedMediaType(
            f"send the body as {SCIM_JSON} (or application/json), not '{ctype}'"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than the {max_bytes}-byte maximum")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than the {max_bytes}-byte maximum")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidSyntax("the request needs a JSON body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidSyntax(f"the body is not valid JSON (UTF-8): {e}") from None


def int_param(request: Request, name: str, default: int) -> int:
    raw = _param(request, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidValue(f"'{name}' must be an integer, got '{raw}'") from None


def _param(request: Request, name: str) -> str | None:
    """Query parameters are matched case-insensitively (clients send startindex, Count...)."""
    v = request.query_params.get(name)
    if v is not None:
        return v
    low = name.lower()
    for k, val in request.query_params.items():
        if k.lower() == low:
            return val
    return None


def str_param(request: Request, name: str) -> str | None:
    return _param(request, name)
