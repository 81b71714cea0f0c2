"""Cursors of RFC 9865 pagination: a page's last position, sealed so that only this server's
cursors open, bound to the query that issued them.

A cursor is stateless (a keyset position, not a server-side snapshot): the next page is the
rows after that position in the query's order, so a page costs the same at any depth (an
index page walks ``startIndex`` rows first) and rows added or removed meanwhile neither
repeat nor shift the rows still to come. It holds the last row's sort value and key, which
the client has already seen in the page, the query's fingerprint and when it was issued,
under an HMAC-SHA256 tag with the database's key; base64url without padding (RFC 9865 §2:
unreserved characters only).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from scimd.scim.errors import ExpiredCursor, InvalidCursor

__all__ = ["TIMEOUT", "Position", "fingerprint", "open_cursor", "seal"]

TIMEOUT = 3600  # seconds a cursor stays valid (cursorTimeout, RFC 9865 §4)

_TAG = 16  # bytes of the HMAC kept: forging one is 2^-128 a try
_FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where a page ended: ``kind`` (the resource type of the row, for searches across
    types), the row's sort value (None without ``sortBy`` or when it has none) and its key."""

    kind: str
    value: Any
    key: int


def fingerprint(*parts: Any) -> str:
    """A short digest of what defines a query's order and rows (endpoint, filter, sort): a
    cursor only continues the query that issued it (RFC 9865 §2)."""
    text = json.dumps([repr(p) for p in parts], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seal(key: bytes, query: str, position: Position, now: float) -> str:
    body = json.dumps(
        [_FORMAT, query, int(now), position.kind, _encode(position.value), position.key],
        separators=(",", ":"),
    ).encode()
    tag = hmac.new(key, body, hashlib.sha256).digest()[:_TAG]
    return base64.urlsafe_b64encode(tag + body).rstrip(b"=").decode("ascii")


def open_cursor(key: bytes, cursor: str, query: str, now: float, timeout: int) -> Position:
    """The position ``cursor`` holds; ``InvalidCursor`` for one this server did not issue,
    or issued for another query, ``ExpiredCursor`` past ``timeout`` seconds."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    tag, body = raw[:_TAG], raw[_TAG:]
    if len(tag) < _TAG or not hmac.compare_digest(
        tag, hmac.new(key, body, hashlib.sha256).digest()[:_TAG]
    ):
        raise InvalidCursor(
            "the cursor is not one this server issued: start with an empty cursor and pass"
            " each page's nextCursor unchanged"
        )
    fmt, issued_for, issued, kind, value, row = json.loads(body)
    if fmt != _FORMAT or issued_for != query:
        raise InvalidCursor(
            "the cursor belongs to another query: repeat the first page's filter, sortBy and"
            " sortOrder on the same endpoint (only cursor and count may change)"
        )
    if int(now) - issued > timeout:  # whole seconds, as sealed: never less than ``timeout``
        raise ExpiredCursor(
            f"the cursor has expired (cursors last {timeout} seconds, see cursorTimeout in"
            " /ServiceProviderConfig): start again with an empty cursor"
        )
    return Position(kind, _decode(value), int(row))


def _encode(value: Any) -> Any:
    """A sort value as JSON, its type kept (a Decimal, a datetime and text differ)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return {"f": value.hex()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    raise TypeError(f"cannot hold a sort value of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "f" in value:
        return float.fromhex(value["f"])
    if "d" in value:
        return Decimal(value["d"])
    return dt.datetime.fromisoformat(value["t"])
