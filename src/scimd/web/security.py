"""Bearer authentication for the SCIM API, with throttling of failed attempts."""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from dataclasses import dataclass

from scimd.scim.errors import InsufficientScope, ScimError, Unauthorized

CHALLENGE = 'Bearer realm="scimd"'


class TooManyFailures(ScimError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class FailureThrottle:
    """Counts failed authentications per client address in a sliding one-minute window.

    Only after a failure (``failed``), never before authenticating: past the limit the failure
    becomes a 429, and a valid token from the same address still gets in."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._fails: dict[str, deque[float]] = {}

    def check(self, address: str) -> None:
        """Raise ``TooManyFailures`` past the limit: that many failures a minute are 401s."""
        q = self._fails.get(address)
        if q is None:
            return
        cutoff = time.monotonic() - 60
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._fails[address]
        elif len(q) > self.per_minute:
            retry = int(q[0] - cutoff) + 1
            raise TooManyFailures(
                f"too many failed authentications from this address; retry in {retry} s",
                retry_after=retry,
            )

    def failed(self, address: str) -> None:
        """Count a failure; past the limit, raise ``TooManyFailures`` (answered 429)."""
        if len(self._fails) > 100_000:  # bound memory under a spray of addresses
            self._fails.clear()
        self._fails.setdefault(address, deque()).append(time.monotonic())
        self.check(address)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a SCIM request authenticates with: a bearer token, or an application's client id
    and secret over HTTP Basic (Okta's "Basic Auth" option), the secret being the same one
    that is the application's bearer token (an access token of the application also works:
    it is checked as the bearer token it is)."""

    token: str
    client_id: str | None = None


def request_credentials(authorization: str | None) -> Credentials:
    if not authorization:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        return _basic(value.strip())
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use the Bearer scheme: 'Authorization: Bearer <token>'")
    return Credentials(value.strip())


def _basic(value: str) -> Credentials:
    """RFC 7617: base64 of ``user-id ":" password`` (UTF-8), here the client id and secret."""
    try:
        padded = value + "=" * (-len(value) % 4)  # some clients leave the padding out
        client_id, sep, secret = base64.b64decode(padded, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        client_id, sep, secret = "", "", ""
    if not (sep and client_id and secret):
        raise Unauthorized(
            "malformed Basic credentials: send base64 of 'client_id:client_secret' (or use"
            " 'Authorization: Bearer <client_secret>')"
        )
    return Credentials(secret, client_id)


def require_scope(scopes: tuple[str, ...], scope: str) -> None:
    if scope not in scopes:
        granted = ", ".join(scopes) or "none"
        raise InsufficientScope(
            f"insufficient scope: this token does not carry the '{scope}' scope (it carries:"
            f" {granted}); give the application that scope, or ask for a token with it",
            scope=scope,
        )
