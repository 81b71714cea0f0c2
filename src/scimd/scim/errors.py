"""SCIM errors as exceptions (RFC 7644 §3.12).

Raised anywhere in the core or storage, rendered once by the web layer, so every failure a client
sees carries an HTTP status, a ``scimType`` where the RFC defines one, and a detail a person can
act on.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    """A failure with SCIM semantics."""

    status: int = 400
    scim_type: str | None = None

    def __init__(
        self, detail: str, *, status: int | None = None, scim_type: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if scim_type is not None:
            self.scim_type = scim_type

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "status": str(self.status),
            "detail": self.detail,
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class InvalidFilter(ScimError):
    scim_type = "invalidFilter"


class InvalidPath(ScimError):
    scim_type = "invalidPath"


class InvalidValue(ScimError):
    scim_type = "invalidValue"


class UnknownMembers(InvalidValue):
    """Members naming no User or Group; ``ids`` lets a PATCH say which operation sent them."""

    def __init__(self, ids: list[str]) -> None:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        super().__init__(f"members must be existing Users or Groups; unknown id(s): {shown}")
        self.ids = ids


class InvalidSyntax(ScimError):
    scim_type = "invalidSyntax"


class InvalidCursor(ScimError):
    scim_type = "invalidCursor"  # RFC 9865 §2.3


class ExpiredCursor(ScimError):
    scim_type = "expiredCursor"  # RFC 9865 §2.3


class NoTarget(ScimError):
    scim_type = "noTarget"


class Mutability(ScimError):
    scim_type = "mutability"


class Uniqueness(ScimError):
    status = 409
    scim_type = "uniqueness"


class TooMany(ScimError):
    scim_type = "tooMany"


class InvalidVersion(ScimError):
    scim_type = "invalidVers"


def clipped(text: str, limit: int = 60) -> str:
    """Client text quoted in an error, cut to ``limit`` characters: a 10,000-character id
    came back whole in its 404, and a whole 300-term filter in its 400."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def around(text: str, pos: int, width: int = 30) -> str:
    """The part of ``text`` around ``pos`` (``width`` characters on each side), for an
    error that points at a position in a long filter or path."""
    if len(text) <= 2 * width + 10:
        return text
    start, end = max(0, pos - width), min(len(text), pos + width)
    return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")


class NotFound(ScimError):
    status = 404


class PreconditionFailed(ScimError):
    status = 412


class PayloadTooLarge(ScimError):
    status = 413


class Unauthorized(ScimError):
    status = 401


class InvalidToken(Unauthorized):
    """A token was sent and is not valid (RFC 6750 §3.1 names it in the reply)."""


class Forbidden(ScimError):
    status = 403


class InsufficientScope(Forbidden):
    """A valid token whose application lacks a scope (RFC 6750 §3.1 names it in the reply)."""

    def __init__(self, detail: str, *, scope: str) -> None:
        super().__init__(detail)
        self.scope = scope


class MethodNotAllowed(ScimError):
    status = 405

    def __init__(self, detail: str, *, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow  # the methods the resource takes, for the Allow header


class UnsupportedMediaType(ScimError):
    status = 415


class InternalError(ScimError):
    """A fault of the server's own: its traceback is logged with the request id."""

    status = 500

    def __init__(self) -> None:
        super().__init__("internal error; the request id identifies it in the logs")
