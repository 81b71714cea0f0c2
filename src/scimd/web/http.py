"""SCIM JSON responses for the Starlette routes (the SCIM API itself uses ``exchange``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from scimd.scim.errors import (
    ScimError,
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
