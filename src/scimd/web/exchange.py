"""A SCIM request read straight off the ASGI scope, and the reply sent back.

The SCIM API is the hot path of the server (an identity provider sends thousands of requests per
cycle) and needs none of what Starlette's request, response and routing layers add; building
those took about a third of a GET by id. Headers and query parameters are decoded only when
asked for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

import orjson
from starlette.types import Receive, Scope, Send

from scimd.scim.errors import (
    InsufficientScope,
    InvalidSyntax,
    InvalidToken,
    InvalidValue,
    MethodNotAllowed,
    PayloadTooLarge,
    ScimError,
    UnsupportedMediaType,
)
from scimd.web.security import CHALLENGE

SCIM_JSON = b"application/scim+json"
PLAIN_JSON = b"application/json"


class ScimRequest:
    __slots__ = ("_headers", "_query", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._headers: dict[str, str] | None = None
        self._query: Params | None = None

    @property
    def request_id(self) -> str | None:
        state: dict[str, Any] = self.scope.get("state") or {}
        return state.get("request_id")

    @property
    def client_host(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "-"

    def header(self, name: str) -> str | None:
        """A header by lower-case name (ASGI servers send header names in lower case). Several
        lines of one are their values joined by commas (RFC 9110 §5.3): with If-Match on two
        lines only the last counted, and a write was applied that the first forbade."""
        if self._headers is None:
            headers: dict[str, str] = {}
            for k, v in self.scope["headers"]:
                key, value = k.decode("latin-1").lower(), v.decode("latin-1")
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            self._headers = headers
        return self._headers.get(name)

    def single_header(self, name: str) -> str | None:
        """A header that may appear once (RFC 9110 §5.3: not a list), such as Authorization:
        two of them are a 400, not the last one winning (with two tokens a write was
        authorised, and audited, as whichever came last)."""
        value = self.header(name)
        if value is not None and len(self._headers or ()) < len(self.scope["headers"]):
            raw = name.encode("latin-1")
            count = sum(1 for k, _ in self.scope["headers"] if k.lower() == raw)
            if count > 1:
                raise InvalidSyntax(f"the request has {count} {name} headers; send one")
        return value

    def param(self, name: str) -> str | None:
        """A query parameter, matched case-insensitively (clients send startindex, Count...).

        Given twice with different values, it is a 400 (``?filter=A&filter=B`` answered for A
        alone, where a SearchRequest naming it twice was refused); twice alike, it is itself.
        """
        if self._query is None:
            self._query = query_params(self.scope.get("query_string", b""))
        key = name.lower()
        if key in self._query.conflicts:
            raise InvalidValue(
                f"the query parameter '{name}' is given twice with different values: send it once"
            )
        return self._query.get(key)

    def int_param(self, name: str, default: int) -> int:
        raw = self.param(name)
        if raw is None or raw == "":
            return default
        # ASCII digits only: int() also reads "1_0" and other scripts' digits. (Spaces around
        # are fine: "+1" in a query string is " 1".)
        try:
            if _INTEGER.fullmatch(raw.strip(" \t")):
                return int(raw)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            pass
        raise InvalidValue(f"'{name}' must be an integer, got '{raw[:40]}'")

    async def json(self, max_bytes: int) -> Any:
        """The body as JSON: 413 past ``max_bytes``, 415 for non-JSON types, 400 otherwise."""
        ctype = self.single_header("content-type") or ""  # two: a 400, not one or the other
        if ctype and not _is_json(ctype):
            raise UnsupportedMediaType(
                f"send the body as {SCIM_JSON.decode()} (or application/json), not '{ctype}'"
            )
        refused = coding_problem(self.header("content-encoding"), self.header("transfer-encoding"))
        if refused is not None:
            status, detail = refused
            raise (
                UnsupportedMediaType(detail) if status == 415 else ScimError(detail, status=status)
            )
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise InvalidSyntax("the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        if raw[:3] == _BOM:  # RFC 8259 §8.1: a parser MAY ignore it (Windows tools write one)
            raw = raw[3:]
        if not raw.strip():
            raise InvalidSyntax("the request needs a JSON body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise _not_json(raw, ctype, e) from None
        if type(body) in (dict, list):
            if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
                _check_depth(body)  # (with fewer brackets it cannot be that deep)
            if _check_body(raw, body):
                # orjson reads a whole number past 64 bits as a double: 2^64+1 was stored as
                # 18446744073709551616.0 without a word. Read again, such numbers stay
                # exact, and the schema refuses what it cannot keep, quoting it as sent.
                body = json.loads(raw)
        return body


def coding_problem(content: str | None, transfer: str | None) -> tuple[int, str] | None:
    """The status and words for a body in a coding scimd does not undo, for the SCIM API and
    the token endpoint: a Content-Encoding (a gzipped body was read as text, "not UTF-8 ...
    0x8b": 415, RFC 9110 §15.5.16), or a transfer coding other than chunked ("gzip,
    chunked" was read as plain chunked: 501, RFC 9112 §6.1). Headers given as every line
    joined (RFC 9110 §5.3)."""
    if content is not None and content.strip().lower() not in ("", "identity"):
        return 415, f"the Content-Encoding '{content[:40]}' is not supported: send it uncompressed"
    if transfer is not None and transfer.strip().lower() != "chunked":
        return 501, (
            f"the Transfer-Encoding '{transfer[:40]}' is not supported: send the body chunked"
            " or with a Content-Length"
        )
    return None


def _is_json(ctype: str) -> bool:
    """Whether a Content-Type's media type (its parameters aside) is JSON: ``.../json`` or a
    ``+json`` type such as SCIM's. "json" anywhere let ``text/plain; x=json`` through."""
    subtype = ctype.split(";", 1)[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


_BOM = b"\xef\xbb\xbf"
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def _not_json(raw: bytes, ctype: str, error: orjson.JSONDecodeError) -> ScimError:
    """Why a body did not parse. Bytes that are not UTF-8 got orjson's "str is not valid UTF-8:
    surrogates not allowed: line 1 column 1", which points nowhere near the byte at fault; a
    body sent in the charset its Content-Type declares (ISO-8859-1, UTF-16) is told that
    SCIM's is UTF-8. A declared charset is not blamed for an ASCII body's JSON error: changing
    it would not have fixed that."""
    declared = _CHARSET.search(ctype)
    charset = declared.group(1) if declared else "utf-8"
    try:
        raw.decode("utf-8")
        bad = None
    except UnicodeDecodeError as e:
        bad = e
    # UTF-16 or UTF-32 text of ASCII reads as UTF-8, with NULs.
    if (bad is not None or b"\x00" in raw) and charset.lower().replace("-", "") != "utf8":
        return UnsupportedMediaType(
            f"the body must be UTF-8 (RFC 7644 §3.8), not {charset}: send it as UTF-8 with"
            " Content-Type: application/scim+json; charset=utf-8"
        )
    if bad is not None:
        return InvalidSyntax(
            f"the body is not UTF-8 text (byte {bad.start}, 0x{raw[bad.start]:02x}): SCIM"
            " bodies are JSON in UTF-8 (RFC 7644 §3.8)"
        )
    # orjson's own bound (1,024 levels), and what it says of ~640 unclosed brackets.
    if str(error).startswith(("depth limit exceeded", "failed to allocate memory")):
        return _too_deep()
    return InvalidSyntax(f"the body is not valid JSON: {error}")


def _too_deep() -> InvalidSyntax:
    return InvalidSyntax(
        f"the JSON body is nested more than {MAX_DEPTH} levels deep; SCIM needs a few"
    )


# A SCIM body is a few levels deep (a Bulk operation's data: 5). orjson reads 1,024 levels,
# more than the recursive walks behind it take: 500 levels were a 500 with a traceback.
MAX_DEPTH = 32


def _check_depth(doc: Any) -> None:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        for item in value.values() if type(value) is dict else value:
            if type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))


# The end of a name in a JSON object: its closing quote, then the colon. Every name ends so;
# so may text inside a string value, which only makes the count larger.
_NAME_END = re.compile(rb'"[ \t\r\n]*:')


def _check_body(raw: bytes, body: Any) -> bool:
    """Refuse a name given twice in one object, and tell whether numbers need reading again.

    A parser keeps one of the two, so ``{"method": "PATCH", "method": "DELETE"}`` in a Bulk
    deleted the user, and a PATCH's
    second ``value`` won unseen; RFC 8259 §4 leaves such objects' meaning open. The names the
    parse kept are counted against the name ends in the text: equal, no name was repeated (the
    common case, a few microseconds); more ends than names, the body is read again, names in
    order, to find the one repeated (or to learn that the extra ends were inside strings).

    Returns whether the body holds a number outside 64-bit integers (-2^63 to 2^64), which
    orjson, given one without a fraction, returns as a double: the walk is this one."""
    kept = 0
    wide = False
    stack = [body]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            kept += len(value)
            value = value.values()
        for item in value:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append(item)
            elif kind is float and not -_I64 < item < _U64:  # orjson rounds -2^63-1 to -2^63
                wide = True
    if len(_NAME_END.findall(raw)) > kept:
        json.loads(raw, object_pairs_hook=_names_once)
    return wide


_I64, _U64 = 2.0**63, 2.0**64


def _names_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise InvalidSyntax(
                f"the body gives '{name[:60]}' twice in one object: send each name once"
                " (which of the two counts is not defined, RFC 8259 §4)"
            )
        seen.add(name)
    return dict(pairs)


_INTEGER = re.compile(r"[+-]?[0-9]+")


class Params(dict[str, str]):
    """Query parameters by lower-cased name (the first of a repeated one), and the names
    given more than once with different values (``conflicts``)."""

    __slots__ = ("conflicts",)

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: set[str] = set()


def query_params(raw: bytes) -> Params:
    """``parse_qsl(..., keep_blank_values=True)`` as a dict of lower-cased names (first wins),
    without its per-pair overhead: only parts holding ``%`` or ``+`` are unquoted."""
    out = Params()
    if not raw:
        return out
    try:
        # UTF-8 throughout, strictly: bytes that are not UTF-8 became U+FFFD (or, unescaped,
        # Latin-1 mojibake), so a filter could look for, and find, another name.
        for part in raw.decode().split("&"):
            if not part:
                continue
            k, _, v = part.partition("=")
            if "%" in k or "+" in k:
                k = unquote_plus(k, errors="strict")
            if "%" in v or "+" in v:
                v = unquote_plus(v, errors="strict")
            k = k.lower()
            if out.setdefault(k, v) != v:
                out.conflicts.add(k)
    except UnicodeDecodeError:
        raise InvalidValue(
            "the query string is not UTF-8: percent-encode the UTF-8 bytes of other characters"
        ) from None
    return out


# RFC 9110 §7.2 / RFC 3986 §3.2.2: a DNS name or an IPv4 address, or an IP literal in
# brackets, and an optional port. (reg-name allows sub-delims and %-escapes too, which no
# host name has: a Host of "a b", "x@evil.example" or "evil.example/x?" was copied into the
# Location of every created resource.)
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_GOOD_HOSTS: set[str] = set()


def host_problem(host: str | None, http_version: str) -> str | None:
    """Why a request's Host header cannot be used (RFC 9112 §3.2: a server MUST answer 400
    to an HTTP/1.1 request without one, or with one that is not a host), else None."""
    if host is None:
        if http_version in ("1.0", "0.9"):
            return None
        return "the request has no Host header, which HTTP/1.1 requires (RFC 9112 §3.2)"
    if host in _GOOD_HOSTS:
        return None
    if not _HOST.fullmatch(host):
        shown = host.encode("latin-1", "replace").decode("ascii", "backslashreplace")[:80]
        return (
            f"the Host header {shown!r} is not a host name and optional port (RFC 9110 §7.2);"
            " a non-ASCII name is sent in its xn-- form"
        )
    if len(_GOOD_HOSTS) < 64:  # a few names at most; never unbounded
        _GOOD_HOSTS.add(host)
    return None


def path_problem(scope: Scope) -> str | None:
    """Percent-escapes in the path that are not UTF-8 (``/Users/%ff``) were read as U+FFFD
    ("User '\ufffd' not found"), where a query string's are a 400."""
    try:
        unquote_to_bytes(scope.get("raw_path") or b"").decode()
    except UnicodeDecodeError:
        return "the URL path is not UTF-8: percent-encode the UTF-8 bytes of other characters"
    return None


@dataclass(slots=True)
class Reply:
    """A response: status, body bytes and extra headers (content type and length are added)."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send, head: bool = False, media: bytes = SCIM_JSON) -> None:
        """``head``: the reply to a HEAD request, the GET's headers without its body;
        ``media``: the body's type, as ``reply_media`` chose it from the request's Accept."""
        headers = self.headers
        if self.body:
            # The type follows Accept (``reply_media``): caches are told (RFC 9110 §12.5.5).
            headers = [*headers, (b"content-type", media), (b"vary", b"Accept")]
        elif self.status == 304:  # as the 200 would have (RFC 9110 §15.4.5)
            headers = [*headers, (b"vary", b"Accept")]
        if self.status not in (204, 304):  # RFC 9110 §8.6: none on a 204
            headers = [*headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else self.body})


def reply_media(accept: str | None) -> bytes:
    """The type to label a JSON reply with. RFC 7644 §8.1: a service provider SHOULD support
    ``Accept: application/json``: a client that asks for that type alone (and not for SCIM's)
    gets its bodies labelled so; otherwise, and by default, ``application/scim+json``."""
    if not accept:
        return SCIM_JSON
    media = _MEDIA.get(accept)
    if media is None:
        media = _negotiate(accept)
        if len(_MEDIA) < 64:  # clients send one or two Accept values; never unbounded
            _MEDIA[accept] = media
    return media


_MEDIA: dict[str, bytes] = {}


def _negotiate(accept: str) -> bytes:
    wanted: dict[str, float] = {}
    for part in accept.split(","):
        kind, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        wanted[kind.strip().lower()] = q
    scim = wanted.get(SCIM_JSON.decode(), 0.0)
    plain = wanted.get(PLAIN_JSON.decode(), 0.0)
    return PLAIN_JSON if plain > 0 and plain > scim else SCIM_JSON


def json_reply(body: Any, status: int = 200, etag: str | None = None, **extra: str) -> Reply:
    headers = [(b"etag", etag.encode())] if etag else []
    for k, v in extra.items():
        headers.append((k.replace("_", "-").lower().encode(), v.encode()))
    return Reply(status, orjson.dumps(body), headers)


# A request cancelled by uvicorn past the shutdown timeout (it got a plain-text 500).
STOPPED = (
    "the server stopped while this request ran (a change it made may have been saved): retry it"
)


def stopped_reply() -> Reply:
    """What a request cut off at shutdown answers: a 503 (with Retry-After) to retry."""
    return error_reply(ScimError(STOPPED, status=503))


def error_reply(err: ScimError) -> Reply:
    reply = json_reply(err.to_dict(), err.status)
    if isinstance(err, InvalidToken):
        challenge = f'{CHALLENGE}, error="invalid_token"'  # RFC 6750 §3.1
        reply.headers.append((b"www-authenticate", challenge.encode()))
    elif err.status == 401:
        reply.headers.append((b"www-authenticate", CHALLENGE.encode()))
    elif isinstance(err, InsufficientScope):
        challenge = f'{CHALLENGE}, error="insufficient_scope", scope="{err.scope}"'
        reply.headers.append((b"www-authenticate", challenge.encode()))
    elif err.status == 429:
        retry = getattr(err, "retry_after", 60)
        reply.headers.append((b"retry-after", str(retry).encode()))
    elif err.status == 503:
        reply.headers.append((b"retry-after", b"5"))  # RFC 9110 §10.2.3
    elif isinstance(err, MethodNotAllowed):
        reply.headers.append((b"allow", err.allow.encode()))  # RFC 9110 §15.5.6
    return reply


def _too_large(max_bytes: int) -> PayloadTooLarge:
    """What to do about it: a group's PUT past the limit cannot be made smaller but by PATCH
    (a GET of a group of 100,000 members returns 14 MB; a PUT of it is refused)."""
    return PayloadTooLarge(
        f"the body is larger than the {max_bytes}-byte maximum (maxPayloadSize in"
        " /ServiceProviderConfig): send a Bulk as several with fewer operations, a group's"
        " members in PATCH operations of a few thousand at a time, or have the server's"
        " max_payload (SCIMD_MAX_PAYLOAD) raised"
    )
