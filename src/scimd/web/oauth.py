"""``POST /oauth2/server/token``: the OAuth 2 token endpoint (client credentials grant only).

RFC 6749 §4.4 (the grant), §2.3.1 (client authentication: ``client_secret_basic`` and
``client_secret_post``), §3.2 (form-encoded parameters, each at most once, empty ones treated
as absent), §5.1/§5.2 (JSON responses, never cached). The form is parsed here with
``urllib.parse`` (no multipart dependency) and capped at ``MAX_BODY`` bytes.

Every 401 carries ``WWW-Authenticate: Basic realm="scimd"`` (RFC 6749 §5.2 requires it when the
client used the Authorization header; RFC 7235 §3.1 wants a challenge on any 401). Failed client
authentications count toward the SCIM API's per-address ``FailureThrottle``: an address that
exhausts it gets 429 with ``Retry-After`` here and on ``/scim/v2`` alike.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import sqlite3
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote_plus

import orjson
from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import Response

from scimd.auth.tokens import TokenError, invalid_client, issue_token
from scimd.scim.errors import ScimError
from scimd.store.engine import is_unavailable
from scimd.web.exchange import coding_problem
from scimd.web.outage import database_unavailable, unavailable_detail
from scimd.web.scim import Scim
from scimd.web.security import TooManyFailures

MAX_BODY = 16 * 1024
FORM = "application/x-www-form-urlencoded"
BASIC_CHALLENGE = 'Basic realm="scimd"'
GRANT = "client_credentials"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# A client id's shape (a UUID), what a refused request's client id must look like to be logged.
_CLIENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
log = logging.getLogger("scimd.web")


def token_response(
    body: Mapping[str, object], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**NO_STORE, **(headers or {})},
    )


def _unavailable(detail: str) -> Response:
    """RFC 6749 §5.2 has no error for it; ``temporarily_unavailable`` is the authorization
    endpoint's (§4.1.2.1), the one a client recognises as "retry" (a 500 looked like a bug)."""
    return token_response(
        {"error": "temporarily_unavailable", "error_description": detail},
        503,
        {"Retry-After": "5"},
    )


class TokenEndpoint:
    """The token endpoint; shares the SCIM handlers' database runner and failure throttle."""

    def __init__(self, scim: Scim, max_body: int = MAX_BODY) -> None:
        self.scim = scim
        self.max_body = max_body

    async def handle(self, request: Request) -> Response:
        address = request.client.host if request.client else "-"
        try:
            return await self.issue(request)
        except (sa_exc.DBAPIError, sqlite3.Error) as e:
            if not is_unavailable(e):
                raise
            database_unavailable(e, f"{request.method} {request.url.path}")
            return _unavailable(unavailable_detail(e))
        except ScimError as e:
            if e.status != 503:  # the write queue's "busy, retry"
                raise
            return _unavailable(e.detail)
        except TokenError as e:
            if e.error == "invalid_client":
                tried = getattr(request.state, "tried_client", None)
                log.warning(
                    "token request refused: invalid client",
                    extra={"fields": {"client_id": tried, "client": address}},
                )
                # As on the SCIM API: valid credentials always get a token; past the limit a
                # failure from this address is a 429.
                try:
                    self.scim.throttle.failed(address)
                except TooManyFailures as over:
                    return token_response(
                        {"error": "temporarily_unavailable", "error_description": over.detail},
                        429,
                        {"Retry-After": str(over.retry_after)},
                    )
            extra = {"WWW-Authenticate": BASIC_CHALLENGE} if e.status == 401 else None
            return token_response(e.to_dict(), e.status, extra)

    async def issue(self, request: Request) -> Response:
        form = await self.read_form(request)
        grant = form.get("grant_type")
        if grant is None:
            raise TokenError("invalid_request", "the grant_type parameter is required")
        if grant != GRANT:
            raise TokenError(
                "unsupported_grant_type", f"only the '{GRANT}' grant is supported here"
            )
        authorizations = request.headers.getlist("authorization")
        if len(authorizations) > 1:  # which client would it be? (RFC 6749 §3.2: no repeats)
            raise TokenError("invalid_request", "send one Authorization header")
        client_id, client_secret = client_credentials(request.headers.get("authorization"), form)
        # Named in the log if it fails; a value that is no client id (a secret typed into the
        # client id field) is not written there.
        request.state.tried_client = (
            client_id
            if _CLIENT_ID.fullmatch(client_id)
            else (f"(not a client id: {len(client_id)} characters)")
        )
        rid = getattr(request.state, "request_id", None)

        def work() -> dict[str, object]:
            with self.scim.directory.write() as conn:
                return issue_token(
                    conn, client_id, client_secret, form.get("scope"), request_id=rid
                )

        body: dict[str, object] = await self.scim.write(work)
        request.state.client_id = client_id
        return token_response(body)

    async def read_form(self, request: Request) -> dict[str, str]:
        """The form parameters: 413 past the cap, ``invalid_request`` for anything malformed."""
        ctype = request.headers.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() != FORM:
            raise TokenError("invalid_request", f"send the parameters as {FORM}")
        # Every line of each (RFC 9110 §5.3), as the SCIM API reads them.
        refused = coding_problem(
            ", ".join(request.headers.getlist("content-encoding")) or None,
            ", ".join(request.headers.getlist("transfer-encoding")) or None,
        )
        if refused is not None:
            raise TokenError("invalid_request", refused[1], refused[0])
        declared = request.headers.get("content-length")
        too_large = TokenError(
            "invalid_request", f"the body is larger than the {self.max_body}-byte maximum", 413
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise too_large
            chunks.append(chunk)
        try:
            parsed = parse_qs(b"".join(chunks).decode("utf-8"), errors="strict", max_num_fields=64)
        except ValueError:  # also UnicodeDecodeError, and more than 64 fields
            raise TokenError(
                "invalid_request", "the body is not a valid form (UTF-8, at most 64 fields)"
            ) from None
        form: dict[str, str] = {}
        for key, values in parsed.items():
            # RFC 6749 §3.2: no parameter more than once (empty ones were dropped as absent).
            if len(values) > 1:
                raise TokenError("invalid_request", f"the '{key}' parameter is repeated")
            if "\x00" in key or "\x00" in values[0]:
                raise TokenError("invalid_request", f"the '{key}' parameter holds a NUL character")
            form[key] = values[0]
        return form


def client_credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret from HTTP Basic or the form (RFC 6749 §2.3.1).

    Entra ID's "How credentials are sent: Both" sends them in the header and in the body at
    once (facts §5.2). RFC 6749 tells clients not to; the same credentials twice are accepted,
    two different ones are an ``invalid_request``."""
    posted_id = form.get("client_id")
    posted_secret = form.get("client_secret")
    if authorization:
        client_id, client_secret = basic_credentials(authorization)
        if posted_id is not None and posted_id != client_id:
            raise TokenError("invalid_request", "client_id differs from the Basic credentials")
        if posted_secret is not None and not hmac.compare_digest(
            posted_secret.encode(), client_secret.encode()
        ):
            raise TokenError("invalid_request", "client_secret differs from the Basic credentials")
        return client_id, client_secret
    if posted_id is None and posted_secret is None:  # nothing sent: say how to send it
        raise TokenError(
            "invalid_client",
            "no client credentials: send the client id and secret with HTTP Basic"
            " (client_secret_basic) or as client_id and client_secret in the form body"
            " (client_secret_post)",
            401,
        )
    if posted_id is None or posted_secret is None:
        raise invalid_client()
    return posted_id, posted_secret


def basic_credentials(authorization: str) -> tuple[str, str]:
    """Decode ``Basic base64(urlencode(id) ":" urlencode(secret))``; ``invalid_client`` if bad."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client()
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        client_id = unquote_plus(raw_id, errors="strict")
        client_secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise invalid_client() from None
    if not sep or not client_id or not client_secret or "\x00" in decoded + client_id:
        raise invalid_client()  # no client id holds a NUL character
    return client_id, client_secret
