"""The SCIM request read off the ASGI scope: its query string parser agrees with the standard
library's, and its headers and body are read as HTTP and RFC 7644 say."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.scim.errors import InvalidValue
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web.app import create_app
from scimd.web.exchange import MAX_DEPTH, query_params
from support.live_server import LiveServer

USER = "urn:ietf:params:scim:schemas:core:2.0:User"

PIECES = st.sampled_from(
    ["filter", "Filter", "count", "a+b", "%20", "%zz", "=", "&", "+", "%", "%C3%A9", "é"]
)
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=8).map("".join)


def reference(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(raw.decode(), keep_blank_values=True, errors="strict"):
        out.setdefault(k.lower(), v)
    return out


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_raw_query_strings_parse_like_parse_qsl(text: str) -> None:
    raw = text.encode("utf-8")
    try:
        expected = reference(raw)
    except UnicodeDecodeError:  # e.g. "%8f": a byte that is not UTF-8
        with pytest.raises(InvalidValue, match="not UTF-8"):
            query_params(raw)
        return
    assert query_params(raw) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=20)), max_size=5))
def test_encoded_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    assert query_params(raw) == reference(raw)
    for k, _ in pairs:
        if k:
            assert k.lower() in query_params(raw)


def test_entra_filter_query() -> None:
    raw = b"filter=userName%20eq%20%22a%2Bb%40x.example%22&excludedAttributes=members"
    assert query_params(raw) == {
        "filter": 'userName eq "a+b@x.example"',
        "excludedattributes": "members",
    }


def test_non_ascii_is_utf8_and_nothing_else() -> None:
    """Raw or percent-encoded, a query is UTF-8 (RFC 3986 §2.5): é either way. Bytes that are
    not UTF-8 are refused rather than read as U+FFFD (a filter would then look for, and
    could find, another name) or as Latin-1."""
    assert query_params('filter=userName eq "josé"'.encode()) == {"filter": 'userName eq "josé"'}
    assert query_params(b"filter=jos%C3%A9") == {"filter": "josé"}
    for raw in (b"filter=repl%FFchar", b"filter=repl\xffchar", b"a%E9=1", b"x=%C3"):
        with pytest.raises(InvalidValue, match="not UTF-8"):
            query_params(raw)


# -- the request read off the scope, over the in-process API ---------------------------------


class Scim:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    def req(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        sent = {"Authorization": f"Bearer {self.token}", **headers}
        return self.client.request(method, "/scim/v2" + path, content=body, headers=sent)


@pytest.fixture(scope="module")
def scim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scim]:
    path = tmp_path_factory.mktemp("exchange") / "x.db"
    engine = create_engine(f"sqlite:///{path}")
    app = create_app(Settings(max_payload=64 * 1024), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    with TestClient(app) as client:
        yield Scim(client, token)
    engine.dispose()


def _user(name: str) -> bytes:
    return json.dumps({"schemas": [USER], "userName": name}).encode()


def test_a_camel_case_parameter_given_twice_with_different_values_is_refused(scim: Scim) -> None:
    """``startIndex`` is looked up by its camel-case name: given twice with different values
    (in any case) it is a 400, not a page from whichever value came first."""
    for query in ("startIndex=1&startIndex=3", "startIndex=1&startindex=3", "sortBy=id&SORTBY=x"):
        r = scim.req("GET", f"/Users?{query}")
        assert r.status_code == 400, (query, r.text)
        assert r.json()["scimType"] == "invalidValue"
        assert "given twice" in r.json()["detail"]


def test_an_empty_paging_parameter_takes_its_default(scim: Scim) -> None:
    """``?count=&startIndex=`` (a client filling in a template with nothing) is the default
    page, not a 400 for a number that was never given."""
    r = scim.req("GET", "/Users?startIndex=&count=")
    assert r.status_code == 200, r.text
    assert r.json()["startIndex"] == 1


def test_a_body_of_only_whitespace_is_told_it_needs_a_body(scim: Scim) -> None:
    """Blank lines are no body: the client is told to send one, not shown a JSON parser's
    complaint about column 1."""
    r = scim.req("POST", "/Users", b" \r\n\t", **{"Content-Type": "application/scim+json"})
    assert r.status_code == 400, r.text
    assert "needs a JSON body" in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("media", {"Content-Type": "Application/SCIM+JSON; charset=UTF-8"}),
        ("content", {"Content-Type": "application/scim+json", "Content-Encoding": "Identity"}),
        ("transfer", {"Content-Type": "application/scim+json", "Transfer-Encoding": "Chunked"}),
    ],
)
def test_media_types_and_codings_are_read_in_any_case(
    scim: Scim, name: str, headers: dict[str, str]
) -> None:
    """Media types and coding names are case-insensitive (RFC 9110 §8.3.1, §8.4.1, RFC 9112
    §7): a client writing them capitalised is not refused with a 415 or a 501."""
    r = scim.req("POST", "/Users", _user(f"{name}-case@example.com"), **headers)
    assert r.status_code == 201, r.text


def test_a_media_type_merely_ending_in_json_is_not_json(scim: Scim) -> None:
    """Only ``.../json`` and ``...+json`` are JSON: ``application/notjson`` is a 415."""
    r = scim.req(
        "POST", "/Users", _user("notjson@example.com"), **{"Content-Type": "application/notjson"}
    )
    assert r.status_code == 415, r.text


def test_a_body_declared_utf8_without_the_dash_is_told_which_byte_is_wrong(scim: Scim) -> None:
    """``charset=utf8`` names UTF-8: a Latin-1 byte in such a body is a 400 pointing at the
    byte, not a 415 telling the client to send the UTF-8 it said it sent."""
    body = json.dumps({"schemas": [USER], "userName": "jos\xe9"}, ensure_ascii=False)
    ctype = "application/scim+json; charset=utf8"
    r = scim.req("POST", "/Users", body.encode("latin-1"), **{"Content-Type": ctype})
    assert r.status_code == 400, r.text
    assert "byte" in r.json()["detail"]


def test_a_body_one_level_deeper_than_the_maximum_is_refused(scim: Scim) -> None:
    """The depth bound is exact: 32 levels are read, 33 are a 400 that says so."""
    for depth, refused in ((MAX_DEPTH, False), (MAX_DEPTH + 1, True)):
        nested: Any = []
        for _ in range(depth - 2):  # the user object and the list holding the nest: 2 levels
            nested = [nested]
        body = json.dumps({"schemas": [USER], "userName": "deep", "x": nested}).encode()
        r = scim.req("POST", "/Users", body, **{"Content-Type": "application/scim+json"})
        assert r.status_code == 400, r.text
        assert ("nested more than" in r.json()["detail"]) is refused, (depth, r.text)


@pytest.mark.parametrize(
    "accept",
    ["Application/JSON", "application/json, application/scim+json;Q=0"],
)
def test_accept_is_read_in_any_case(scim: Scim, accept: str) -> None:
    """Media ranges and their ``q`` are case-insensitive (RFC 9110 §12.5.1): a client asking
    for ``application/json`` so written gets its replies labelled so (RFC 7644 §8.1)."""
    r = scim.req("GET", "/Users?count=1", Accept=accept)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"


def test_a_304_carries_no_content_length(scim: Scim) -> None:
    """A 304 has no body, and a ``Content-Length: 0`` on it would tell a cache that the
    resource it holds is empty (RFC 9110 §8.6, §15.4.5): it carries none."""
    created = scim.req(
        "POST", "/Users", _user("etag304@example.com"), **{"Content-Type": "application/scim+json"}
    )
    assert created.status_code == 201, created.text
    path = f"/Users/{created.json()['id']}"
    r = scim.req("GET", path, **{"If-None-Match": created.headers["etag"]})
    assert r.status_code == 304, r.text
    assert "content-length" not in r.headers


def _read_reply(s: socket.socket) -> bytes:
    """One whole reply (head and Content-Length body) off a socket: its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "the connection closed before a reply"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line[15:])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "the connection closed inside a reply"
        body += chunk
    return head.split(b" ", 2)[1]


def _raw(live_server: LiveServer, request_line: str, *headers: str) -> tuple[socket.socket, str]:
    """A connection to the live server, and the head of a request to it with its Host and
    bearer token: for what no HTTP client library would send."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    lines = [request_line, f"Host: {url.netloc}", f"Authorization: Bearer {live_server.token}"]
    head = "\r\n".join([*lines, *headers]) + "\r\n\r\n"
    return socket.create_connection((url.hostname, url.port), timeout=5), head


def test_a_large_body_does_not_count_toward_the_next_requests_head(
    live_server: LiveServer,
) -> None:
    """The 64 KiB bound is on a request's line and headers: after a 100 KB body on a
    keep-alive connection (sent once the server asked for it with 100 Continue), the next
    request, its head arriving in pieces, is answered, not refused with a 431 for the body
    before it."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    auth = f"Host: {url.netloc}\r\nAuthorization: Bearer {live_server.token}\r\n"
    body = _user("large-body@example.com")
    body = body[:-1] + b" " * 100_000 + b"}"
    post = (
        f"POST /scim/v2/Users HTTP/1.1\r\n{auth}Content-Type: application/scim+json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(post)
        assert _read_reply(s) == b"100"
        s.sendall(body)
        assert _read_reply(s) == b"201"
        s.sendall(b"GET /scim/v2/Users?count=1 HTTP/1.1\r\n")
        s.sendall(auth.encode() + b"\r\n")
        assert _read_reply(s) == b"200"


def test_a_chunked_body_that_goes_wrong_is_answered_400(live_server: LiveServer) -> None:
    """A body whose chunked framing breaks after the head was taken (a chunk size that is not
    hex) is the running request's own fault: the client gets its 400 and the connection
    closes, rather than waiting, unanswered, for a body that will never parse."""
    s, head = _raw(
        live_server,
        "POST /scim/v2/Users HTTP/1.1",
        "Content-Type: application/scim+json",
        "Transfer-Encoding: chunked",
    )
    with s:
        s.sendall(head.encode() + b'2\r\n{"\r\nzz\r\n')
        assert _read_reply(s) == b"400"


def test_a_head_past_64_kib_arriving_whole_is_a_431(live_server: LiveServer) -> None:
    """The bound on a request's head holds however its bytes arrive: a 70 KB header sent in
    one piece is refused (431), not handed to the application."""
    s, head = _raw(live_server, "GET /scim/v2/Users HTTP/1.1", f"X-Pad: {'a' * 70_000}")
    with s:
        s.sendall(head.encode())
        assert _read_reply(s) == b"431"


def test_a_client_that_half_closes_mid_body_is_let_go(live_server: LiveServer) -> None:
    """A client that ends its sending side before the body it announced is whole will never
    send the rest: the connection closes at once, rather than staying open (and the request
    waiting for its body) for good."""
    s, head = _raw(
        live_server,
        "POST /scim/v2/Users HTTP/1.1",
        "Content-Type: application/scim+json",
        "Content-Length: 100",
    )
    with s:
        s.sendall(head.encode() + b'{"schemas":')
        s.shutdown(socket.SHUT_WR)
        try:
            rest = s.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
