"""Responses leave in one write per event-loop step (``web/coalesce.py``), in order, whole;
on PostgreSQL only those to GETs, and only while the server is busy.

The transport under test wraps a real socket transport on loopback; a counting wrapper on
that transport's ``write``/``writelines`` observes how many writes reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from uvicorn.config import Config
from uvicorn.server import ServerState

from scimd.web.coalesce import CoalescingTransport, GetCoalescingHttpToolsProtocol, Load
from support.live_server import LiveServer, provisioned_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


class _Server(asyncio.Protocol):
    """Server side of one loopback connection; hands its transport to the test."""

    def __init__(self, made: asyncio.Future[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made.set_result(transport)


async def _pair() -> tuple[
    CoalescingTransport, list[int], asyncio.StreamReader, asyncio.StreamWriter
]:
    """A coalescing server transport, the sizes of the writes reaching the socket's own
    transport, and the client's reader and writer."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Server(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    real = await made
    server.close()
    writes: list[int] = []
    write = real.write

    def counted_write(data: Any) -> None:
        writes.append(len(data))
        write(data)

    def counted_writelines(chunks: Any) -> None:
        joined = b"".join(chunks)  # what asyncio's own writelines does, one write
        writes.append(len(joined))
        write(joined)

    real.write = counted_write  # type: ignore[method-assign]
    real.writelines = counted_writelines  # type: ignore[method-assign]
    return CoalescingTransport(real, loop), writes, reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def test_writes_of_one_step_reach_the_socket_as_one_write() -> None:
    async def scenario() -> None:
        t, writes, reader, writer = await _pair()
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        t.write(b"")
        t.write(b"hello")
        assert writes == [] and t.get_write_buffer_size() == 43
        await asyncio.sleep(0)
        assert writes == [43]
        t.write(b"one")
        await asyncio.sleep(0)
        t.writelines([b"two", b"three"])
        await asyncio.sleep(0)
        assert writes == [43, 3, 8]
        got = await reader.readexactly(54)
        assert got == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloonetwothree"
        t.write(b"last")
        t.close()  # what is pending goes first, then the end of the stream
        assert await reader.read() == b"last"
        assert t.is_closing()
        await _close(writer)

    asyncio.run(scenario())


def test_a_transport_not_holding_writes_at_once_with_what_is_pending() -> None:
    async def scenario() -> None:
        t, writes, reader, writer = await _pair()
        t.write(b"held")
        t.hold = False
        t.write(b"now")  # with what was pending, in one write
        assert writes == [7] and t.get_write_buffer_size() == 0
        t.write(b"!")
        assert writes == [7, 1]
        await asyncio.sleep(0)  # the flush scheduled for "held" finds nothing left
        assert writes == [7, 1]
        t.hold = True
        t.write(b"later")
        assert writes == [7, 1]
        await asyncio.sleep(0)
        assert writes == [7, 1, 5]
        assert await reader.readexactly(13) == b"heldnow!later"
        t.close()
        await _close(writer)

    asyncio.run(scenario())


def test_a_large_write_goes_at_once_with_what_is_pending() -> None:
    async def scenario() -> None:
        t, writes, reader, writer = await _pair()
        t.hold_below = 10
        t.write(b"head")
        t.write(b"a body of 19 bytes!")  # what is pending goes with it, in one write
        assert writes == [23] and t.get_write_buffer_size() == 0
        t.write(b"0123456789")
        assert writes == [23, 10]
        t.write(b"small")
        assert writes == [23, 10]
        await asyncio.sleep(0)
        assert writes == [23, 10, 5]
        assert await reader.readexactly(38) == b"heada body of 19 bytes!0123456789small"
        t.close()
        await _close(writer)

    asyncio.run(scenario())


def test_abort_drops_what_is_pending() -> None:
    async def scenario() -> None:
        t, writes, reader, writer = await _pair()
        t.write(b"sent")
        await asyncio.sleep(0)
        t.write(b"never")
        t.abort()
        await asyncio.sleep(0)
        assert writes == [4]
        received = b""
        try:
            while chunk := await reader.read(100):
                received += chunk
        except ConnectionResetError:
            pass
        assert received == b"sent"
        await _close(writer)

    asyncio.run(scenario())


def _responses(host: str, port: int, request: bytes, n: int) -> list[tuple[bytes, bytes]]:
    """Send ``request`` (several pipelined requests) and read ``n`` whole responses back:
    (status, body) each, in the order they arrived."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        data = b""
        out: list[tuple[bytes, bytes]] = []
        while len(out) < n:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
            while b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    (
                        int(v)
                        for k, _, v in (x.partition(b": ") for x in lines[1:])
                        if k.lower() == b"content-length"
                    ),
                    0,
                )
                if len(rest) < length:
                    break
                out.append((lines[0].split(b" ")[1], rest[:length]))
                data = rest[length:]
    return out


def test_pipelined_requests_get_whole_responses_in_order(live_server: LiveServer) -> None:
    """Three requests sent at once on one keep-alive connection: three whole responses, in
    the order asked (their writes share the coalescing buffer)."""
    url = urlsplit(live_server.base_url)
    paths = ["/scim/v2/ServiceProviderConfig", "/scim/v2/Users/nope", "/scim/v2/Schemas"]
    request = "".join(
        f"GET {p} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {live_server.token}\r\n\r\n"
        for p in paths
    ).encode()
    assert url.hostname is not None and url.port is not None
    got = _responses(url.hostname, url.port, request, 3)
    assert [status for status, _ in got] == [b"200", b"404", b"200"]
    assert all(body.startswith(b"{") and body.endswith(b"}") for _, body in got)


def test_an_upgrade_request_is_an_ordinary_request(live_server: LiveServer) -> None:
    """``scimd serve`` has no WebSocket endpoints: a request asking to upgrade gets its
    ordinary HTTP reply."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    upgrade = (
        f"GET /healthz HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    [(status, body)] = _responses(url.hostname, url.port, upgrade.encode(), 1)
    assert status == b"200" and json.loads(body)["status"] == "ok"


def test_pipelined_reads_and_writes_keep_their_order(any_database_url: str, tmp_path: Path) -> None:
    """GETs (held until the end of a step on PostgreSQL) and writes (sent at once there)
    pipelined on one connection: whole responses, in the order asked, on both databases."""
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        url = urlsplit(server.base_url)
        assert url.hostname is not None and url.port is not None
        body = json.dumps(
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "pipe@x.io"}
        )
        auth = f"Host: {url.netloc}\r\nAuthorization: Bearer {server.token}\r\n"
        requests = [
            f"GET /scim/v2/ServiceProviderConfig HTTP/1.1\r\n{auth}\r\n",
            f"POST /scim/v2/Users HTTP/1.1\r\n{auth}Content-Type: application/scim+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}",
            f"GET /scim/v2/Users?filter=userName%20eq%20%22pipe@x.io%22 HTTP/1.1\r\n{auth}\r\n",
            f"DELETE /scim/v2/Users/nope HTTP/1.1\r\n{auth}\r\n",
            f"GET /scim/v2/Users/nope HTTP/1.1\r\n{auth}\r\n",
        ]
        got = _responses(url.hostname, url.port, "".join(requests).encode(), 5)
    assert [status for status, _ in got] == [b"200", b"201", b"200", b"404", b"404"]
    created = json.loads(got[1][1])
    found = json.loads(got[2][1])
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == created["id"]


def test_serve_holds_every_reply_on_sqlite_and_replies_to_gets_elsewhere() -> None:
    """On PostgreSQL a request waits for its statement across loop steps; holding the replies
    to writes until the end of a step cost POSTs 10-15% there, holding those to GETs gained
    while requests queued for the connection slots."""
    from scimd.cli.serve import _http_protocol
    from scimd.web.coalesce import CoalescingHttpToolsProtocol, GetCoalescingHttpToolsProtocol

    assert _http_protocol("sqlite:///scimd.db", 8) is CoalescingHttpToolsProtocol
    made = _http_protocol("postgresql+psycopg://u@127.0.0.1/db", 12)
    assert isinstance(made, functools.partial)
    assert made.func is GetCoalescingHttpToolsProtocol
    assert made.keywords["load"].busy_above == 12 and made.keywords["load"].active == 0


def test_get_replies_are_held_only_while_the_server_is_busy() -> None:
    """The protocol on real loopback connections: a GET's reply is held while more than
    ``busy_above`` requests are in progress, written at once otherwise; a POST's always. The
    count follows requests that finish and connections that close mid-request."""
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            await release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    def request(method: str, path: str = "/") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        config = Config(app=app, log_config=None, access_log=False)
        config.load()
        state = ServerState()
        load = Load(busy_above=2)
        protocols: list[GetCoalescingHttpToolsProtocol] = []

        def protocol() -> GetCoalescingHttpToolsProtocol:
            p = GetCoalescingHttpToolsProtocol(
                config=config, server_state=state, app_state={}, load=load
            )
            protocols.append(p)
            return p

        server = await loop.create_server(protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        held: list[bool] = []

        async def ask(method: str) -> None:
            writer.write(request(method))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            if method != "HEAD":
                assert await reader.readexactly(2) == b"ok"
            # Set when the request's headers were complete, kept until the next request's.
            transport = protocols[0].transport
            assert isinstance(transport, CoalescingTransport)
            held.append(transport.hold)

        async def waiting() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request("GET", "/wait"))
            return r, w

        await ask("GET")  # only itself in progress
        slow = [await waiting() for _ in range(2)]
        while load.active < 2:
            await asyncio.sleep(0.01)
        await ask("GET")  # 3 in progress
        await ask("POST")
        gone = await waiting()
        while load.active < 3:
            await asyncio.sleep(0.01)
        # A request whose connection is reset before its reply (one the client only
        # closed is still answered: see the half-close test).
        gone[1].get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        gone[1].close()
        while load.active > 2:
            await asyncio.sleep(0.01)
        release.set()
        for r, w in slow:
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            w.close()
        while load.active:
            await asyncio.sleep(0.01)
        await ask("HEAD")  # only itself again
        assert held == [False, True, False, False]
        writer.close()
        server.close()
        await server.wait_closed()
        assert load.active == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


def _reading_app(bodies: list[bytes]) -> Any:
    """An ASGI app that reads each request's whole body into ``bodies`` ("<disconnected>"
    when the client went away first) and answers 200 "ok"."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                bodies.append(b"<disconnected>")
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append(body)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _serve(app: Any, protocol: Any, **settings: Any) -> tuple[asyncio.Server, int]:
    """``app`` served by the protocol class ``protocol`` on a loopback port of its own."""
    config = Config(app=app, log_config=None, access_log=False, **settings)
    config.load()
    state = ServerState()
    server = await asyncio.get_running_loop().create_server(
        lambda: protocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1]


def test_heads_too_large_or_too_slow_and_stalled_bodies_end_the_connection() -> None:
    """uvicorn's protocol buffered a head of any size and waited forever on a client that
    dribbled its head or paused its body (slowloris). A whole request is unaffected."""
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    got_bodies: list[bytes] = []
    app = _reading_app(got_bodies)

    class Quick(CoalescingHttpToolsProtocol):
        # A second each: the pauses below are a tenth of that, so a pause of the test process
        # (a collection, a loaded machine) does not count as the client's.
        MAX_HEAD = 4096
        HEAD_TIMEOUT = 1.0
        BODY_IDLE_TIMEOUT = 1.0

    async def scenario() -> None:
        server, port = await _serve(app, Quick)

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", port)

        # A whole request, then one sent in pieces faster than the limits: answered.
        r, w = await connect()
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await r.readexactly(2)
        for piece in (b"POST / HTTP/1.1\r\nHo", b"st: x\r\nContent-Length: 4\r\n\r\nbo", b"dy"):
            w.write(piece)
            await asyncio.sleep(0.1)
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await r.readexactly(2)
        await asyncio.sleep(1.3)  # idle between requests is uvicorn's keep-alive (5 s)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        w.close()

        # A head past MAX_HEAD: 431, a SCIM error, and the connection closes.
        r, w = await connect()
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n")
        reply = await asyncio.wait_for(r.read(), 5)
        assert reply.startswith(b"HTTP/1.1 431") and b'"status":"431"' in reply
        w.close()

        # A whole head past MAX_HEAD in one read (it was complete before it could be counted,
        # and went to the application), with a body after it: 431 all the same, readable.
        r, w = await connect()
        w.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nX-Big: "
            + b"a" * 20000
            + b"\r\n\r\nbody"
        )
        reply = await asyncio.wait_for(r.read(), 5)
        assert reply.startswith(b"HTTP/1.1 431") and b'"status":"431"' in reply
        w.close()

        # A connection that sends nothing is closed quietly (a 408 would be read as the answer
        # to the request a client sends later); a head dribbled a byte at a time gets a 408.
        r, w = await connect()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        r, w = await connect()
        status = asyncio.ensure_future(r.readuntil(b"\r\n"))
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"1" * 40 + b"\r\n"
        times: list[float] = []
        for byte in head:  # a byte every 0.05 s: 3.5 s for the head
            if status.done():
                break
            w.write(bytes([byte]))
            times.append(time.monotonic())
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(status, 5) == b"HTTP/1.1 408 Request Timeout\r\n"
        answered = time.monotonic()
        # Refused HEAD_TIMEOUT after its first byte, before it was whole, though it never
        # paused as long as that: a head has HEAD_TIMEOUT in all, not per pause.
        assert len(times) < len(head) and answered - times[0] >= Quick.HEAD_TIMEOUT
        assert max(b - a for a, b in itertools.pairwise(times)) < Quick.HEAD_TIMEOUT
        w.close()

        # A body that stops: the connection closes and the application stops waiting.
        r, w = await connect()
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        while not got_bodies or got_bodies[-1] != b"<disconnected>":
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    # The two POSTs, the GET, the stalled body; the refused heads never reached the application.
    assert got_bodies == [b"body", b"body", b"", b"<disconnected>"]


def test_a_client_leaving_mid_body_is_no_server_error(tmp_path: Path) -> None:
    """A client that closes the connection in the middle of a token request or a portal
    form (or whose paused body the server closes) made a 500 and a traceback."""
    import socket
    import time

    from support.live_server import sqlite_url

    with provisioned_server(sqlite_url(tmp_path / "gone.db"), log_dir=tmp_path) as server:
        url = urlsplit(server.root_url)
        assert url.hostname is not None and url.port is not None
        for path in ("/oauth2/server/token", "/admin/login"):
            with socket.create_connection((url.hostname, url.port)) as s:
                s.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    "Content-Length: 100\r\n\r\ngrant_type=".encode()
                )
                time.sleep(0.2)
        time.sleep(0.3)
        metrics = httpx.get(f"{server.root_url}/metrics", timeout=10).text
        logs = server.process.stderr_text()
    assert 'status="500"' not in metrics
    assert "Traceback" not in logs and "unhandled error" not in logs


def test_a_pipelined_body_waiting_for_the_request_before_it_is_not_stalled() -> None:
    """From a review: uvicorn stops reading while a pipelined request waits for the one before
    it, so the rest of its body cannot arrive; the body-idle guard counted that wait as the
    client's and closed the connection under the first request (a write waiting for a lock),
    whose applied change then got no reply."""
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(1.0)  # longer than the body-idle limit below
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    class Quick(CoalescingHttpToolsProtocol):
        HEAD_TIMEOUT = 0.3
        BODY_IDLE_TIMEOUT = 0.3

    async def scenario() -> bytes:
        server, port = await _serve(app, Quick)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nAAAAA")
        await asyncio.sleep(0.1)
        w.write(b"PUT /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nBBB")
        await asyncio.sleep(0.1)
        w.write(b"BBBBBBB")  # not read until /slow is answered
        got = b""
        while got.count(b"HTTP/1.1 200") < 2 or not got.endswith(b"BBBBBBBBBB"):
            chunk = await asyncio.wait_for(r.read(65536), 10)
            if not chunk:
                break
            got += chunk
        w.close()
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(scenario())
    assert got.count(b"HTTP/1.1 200") == 2 and got.endswith(b"BBBBBBBBBB"), got


def test_a_client_pipelining_without_reading_is_bounded() -> None:
    """uvicorn read again after every reply even with requests queued behind it, so a client
    sending requests it never read the replies of had the server read and queue everything
    it sent (4 MB of requests: 230 MB of memory, never given back). Reading now waits for
    the queue to drain, and a client queueing more than MAX_PIPELINE requests is closed."""
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    release = asyncio.Event()
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.append(scope["path"])
        if scope["path"] == "/slow":
            await release.wait()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    class Small(CoalescingHttpToolsProtocol):
        MAX_PIPELINE = 4

    def pipelined(*paths: str) -> bytes:
        return b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)

    async def replies(r: asyncio.StreamReader, n: int) -> int:
        got = 0
        with contextlib.suppress(asyncio.IncompleteReadError):
            for _ in range(n):
                await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
                await r.readexactly(2)
                got += 1
        return got

    async def scenario() -> None:
        server, port = await _serve(app, Small)
        # Four queued behind a slow one, four more sent meanwhile: all eight answered, as
        # the second four are read only once the first are done.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(pipelined("/slow", "/a", "/b", "/c"))
        await asyncio.sleep(0.2)
        w.write(pipelined("/d", "/e", "/f", "/g"))
        await asyncio.sleep(0.2)
        release.set()
        assert await replies(r, 8) == 8
        w.close()
        # More than MAX_PIPELINE queued at once: those queued are answered (a write among
        # them may be applied), then the connection closes; the rest never start.
        release.clear()
        started.clear()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(pipelined("/slow", *[f"/{i}" for i in range(50)]))
        await asyncio.sleep(0.2)
        release.set()
        assert await replies(r, 5) == 5
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert started == ["/slow", "/0", "/1", "/2", "/3"]
        w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_an_empty_line_after_a_reply_does_not_keep_the_connection_forever() -> None:
    """llhttp takes an empty line between requests (RFC 9112 §2.2) without starting one, but
    its bytes cancelled uvicorn's keep-alive timer, which only a reply sets again: such a
    connection stayed open until the server restarted."""
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        # A second: ten times the pauses below.
        server, port = await _serve(app, CoalescingHttpToolsProtocol, timeout_keep_alive=1.0)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        await r.readexactly(2)
        w.write(b"\r\n")
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed at the keep-alive timeout
        w.close()
        # Empty lines more often than the timeout: the timer runs on from the reply (each one
        # started it over, and two bytes a minute held a connection for good).
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        await r.readexactly(2)
        sent = 0
        while not w.is_closing() and sent < 40:  # 40 x 0.1 s: far past the 1 s timeout
            w.write(b"\r\n")
            sent += 1
            try:
                if await asyncio.wait_for(r.read(), 0.1) == b"":
                    break  # closed
            except TimeoutError:
                continue
        assert sent < 40, "the connection outlived its keep-alive timeout"
        w.close()
        # An empty line, then a request: answered as before.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        await r.readexactly(2)
        w.write(b"\r\n")
        await asyncio.sleep(0.1)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_an_unknown_token_waiting_to_send_its_body_gets_401_first(live_server: LiveServer) -> None:
    """A client sending ``Expect: 100-continue`` with an unknown token was invited to send its
    whole body (up to 1 MiB), then answered 401. The token is checked first now; a known one
    is still invited."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    body = b'{"userName": "expecting@x.com"}'
    for token, first in (("wrong", b"HTTP/1.1 401"), (live_server.token, b"HTTP/1.1 100")):
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(
                f"POST {url.path}/Users HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/scim+json\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            reply = s.recv(65536)
            assert reply.startswith(first), reply[:100]
            if first.endswith(b"100"):
                s.sendall(body)
                while b"HTTP/1.1 201" not in reply and (more := s.recv(65536)):
                    reply += more
                assert b"HTTP/1.1 201" in reply, reply[:300]


def test_a_body_trickling_in_is_cut_off_in_the_end() -> None:
    """Only a pause of the body closed the connection: a byte every 29 s held it for as long
    as the client liked (months for 1 MiB). A body has BODY_TIMEOUT in all."""
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    bodies: list[bytes] = []
    app = _reading_app(bodies)

    class Quick(CoalescingHttpToolsProtocol):
        # Ten times the pauses below, or more: a pause of the test process is not the client's.
        HEAD_TIMEOUT = 1.0
        BODY_IDLE_TIMEOUT = 1.0
        BODY_TIMEOUT = 2.0

    async def scenario() -> None:
        server, port = await _serve(app, Quick)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        began = time.monotonic()  # the head is whole: the body's time starts
        times: list[float] = []
        closed = asyncio.ensure_future(r.read())
        while not closed.done() and len(times) < 100:  # 10 s for the body
            w.write(b"a")  # never pausing as long as BODY_IDLE_TIMEOUT
            times.append(time.monotonic())
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(closed, 5) == b""
        ended = time.monotonic()
        # Cut off BODY_TIMEOUT after the body began, not at its end, and not for a pause.
        assert len(times) < 100 and ended - began >= Quick.BODY_TIMEOUT
        assert max(b - a for a, b in itertools.pairwise(times)) < Quick.BODY_IDLE_TIMEOUT
        w.close()
        # A whole body sent in pieces within the time: answered.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await asyncio.sleep(0.2)
        w.write(b"cd")
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert bodies[0] == b"<disconnected>" and bodies[-1] == b"abcd"


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_a_request_asking_to_upgrade_keeps_its_body(any_database_url: str, tmp_path: Path) -> None:
    """``Upgrade: h2c`` (curl --http2 and Java's HttpClient send it on http:// URLs) stopped
    the parser at the end of the head: the POST's body was lost (400 "needs a JSON body"),
    and sent in a later segment it was read, and answered, as a request of its own (a proxy
    forwarding Upgrade saw two answers to one request). RFC 9110 §7.8: the server may
    ignore the upgrade; the request is read as any other, body included."""
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        url = urlsplit(server.base_url)
        assert url.hostname is not None and url.port is not None
        auth = f"Host: {url.netloc}\r\nAuthorization: Bearer {server.token}\r\n"
        for n, split in enumerate((False, True)):
            body = json.dumps({"schemas": [USER], "userName": f"h2c{n}@x.io"}).encode()
            head = (
                f"POST /scim/v2/Users HTTP/1.1\r\n{auth}Connection: Upgrade, HTTP2-Settings\r\n"
                "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
                f"Content-Type: application/scim+json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            after = f"GET /scim/v2/Users?filter=userName%20eq%20%22h2c{n}@x.io%22 HTTP/1.1\r\n"
            after += f"{auth}Connection: close\r\n\r\n"
            with socket.create_connection((url.hostname, url.port), timeout=10) as s:
                if split:  # the body in a later segment: it was read as a request
                    s.sendall(head)
                    time.sleep(0.2)
                    s.sendall(body + after.encode())
                else:
                    s.sendall(head + body + after.encode())
                data = _read_all(s)
            statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
            assert statuses == [b"201", b"200"], data[:600]
            assert data.count(b'"totalResults":1') == 1, data[-300:]


def test_a_client_that_half_closes_after_its_request_gets_the_reply(
    any_database_url: str, tmp_path: Path
) -> None:
    """``shutdown(SHUT_WR)`` after sending (``nc -N``, forwarders passing the client's FIN
    on) means "nothing more to send": the connection was closed without a reply, and a POST
    had been applied all the same. Every request read whole is answered, then it closes."""
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        url = urlsplit(server.base_url)
        assert url.hostname is not None and url.port is not None
        auth = f"Host: {url.netloc}\r\nAuthorization: Bearer {server.token}\r\n"
        body = json.dumps({"schemas": [USER], "userName": "half@x.io"})
        requests = (
            f"POST /scim/v2/Users HTTP/1.1\r\n{auth}Content-Type: application/scim+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
            f"GET /healthz HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n"
        )
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(requests.encode())
            s.shutdown(socket.SHUT_WR)
            data = _read_all(s)
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
        assert statuses == [b"201", b"200"], data[:600]
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
            s.shutdown(socket.SHUT_WR)
            assert _read_all(s).startswith(b"HTTP/1.1 200")


def test_a_request_refused_before_its_expected_body_closes_the_connection(
    live_server: LiveServer,
) -> None:
    """RFC 9110 §10.1.1: answered before it was invited to send its body (401 for the token,
    413 for its declared size), a client may skip the body and reuse the connection: its next
    request was read as the body the server waited for, and got no answer for 30 s. The
    refusal now says ``connection: close`` and closes."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    for token, length, status in (
        ("wrong", 20, b"401"),
        (live_server.token, 50_000_000, b"413"),
    ):
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(
                f"POST {url.path}/Users HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/scim+json\r\n"
                f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            data = _read_all(s)  # returns: the server closes
        head = data.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 " + status) and b"connection: close" in head, head
    # HTTP/1.0 knows no 100 Continue (RFC 9110 §10.1.1, §15.2): none is sent to it.
    body = json.dumps({"schemas": [USER], "userName": "ten@x.io"})
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(
            f"POST {url.path}/Users HTTP/1.0\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {live_server.token}\r\nContent-Type: application/scim+json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n{body}".encode()
        )
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 201"), data[:200]


def test_a_host_header_that_is_no_host_is_a_400(live_server: LiveServer) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request without a Host, or with one that is not a host,
    MUST get a 400. ``Host: a b``, ``x@evil.example`` or non-ASCII bytes were copied into the
    Location and meta.location of what was created (the last as mojibake)."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    body = json.dumps({"schemas": [USER], "userName": "host@x.io"}).encode()

    def ask(path: str, host: bytes | None, version: str = "1.1", method: str = "POST") -> bytes:
        head = f"{method} {path} HTTP/{version}\r\n".encode()
        if host is not None:
            head += b"Host: " + host + b"\r\n"
        head += f"Authorization: Bearer {live_server.token}\r\nConnection: close\r\n".encode()
        if method == "POST":
            head += b"Content-Type: application/scim+json\r\n"
            head += f"Content-Length: {len(body)}\r\n".encode()
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(head + b"\r\n" + (body if method == "POST" else b""))
            return _read_all(s)

    for bad in (b"a b", b"x@evil.example", b"evil.example/x?", "ü.example".encode()):
        reply = ask("/scim/v2/Users", bad)
        assert reply.startswith(b"HTTP/1.1 400"), (bad, reply[:200])
        assert b"is not a host name" in reply and b'"status":"400"' in reply
        for path in ("/healthz", "/admin/login"):
            assert ask(path, bad, method="GET").startswith(b"HTTP/1.1 400"), (bad, path)
    reply = ask("/scim/v2/Users", None)
    assert reply.startswith(b"HTTP/1.1 400") and b"no Host header" in reply, reply[:300]
    assert ask("/healthz", None, method="GET").startswith(b"HTTP/1.1 400")
    for n, good in enumerate((url.netloc.encode(), b"[::1]:8080", b"scim.example.com")):
        body = json.dumps({"schemas": [USER], "userName": f"host{n}@x.io"}).encode()
        reply = ask("/scim/v2/Users", good)
        assert reply.startswith(b"HTTP/1.1 201"), (good, reply[:300])
        assert b"location: http://" + good + b"/scim/v2/Users/" in reply
    # HTTP/1.0 has no Host requirement.
    assert ask("/healthz", None, version="1.0", method="GET").startswith(b"HTTP/1.1 200")
    # A path whose escapes are not UTF-8 (it was read as U+FFFD: "User '\ufffd' not found"),
    # also where the path is tidied (a doubled slash, a trailing one, capitals).
    for path in ("/scim/v2/Users/%ff", "/scim/v2//Users/%ff", "/SCIM/v2/Users/%ff/"):
        reply = ask(path, url.netloc.encode(), method="GET")
        assert reply.startswith(b"HTTP/1.1 400") and b"not UTF-8" in reply, (path, reply[:300])
    # Outside the SCIM API too: two Host lines are a 400, and refusals are logged with an id.
    for path in ("/healthz", "/admin/login", "/oauth2/server/token"):
        reply = ask(path, url.netloc.encode() + b"\r\nHost: evil.example", method="GET")
        assert reply.startswith(b"HTTP/1.1 400") and b"send one" in reply, (path, reply[:300])
        assert b"x-request-id: " in reply.lower()


def test_a_transfer_coding_other_than_chunked_is_a_501(live_server: LiveServer) -> None:
    """``Transfer-Encoding: gzip, chunked`` was read as plain chunked (the gzip data then
    "not UTF-8"): RFC 9112 §6.1, a transfer coding the server does not know is a 501."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    body = json.dumps({"schemas": [USER], "userName": "te@x.io"}).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(
            f"POST /scim/v2/Users HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {live_server.token}\r\nConnection: close\r\n"
            "Content-Type: application/scim+json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 501") and b"Transfer-Encoding" in reply, reply[:300]


def test_an_upgrade_request_that_also_closes_is_answered(live_server: LiveServer) -> None:
    """From a review: the head read again without its Upgrade went to a parser without
    uvicorn's leniency for data after a "Connection: close" request: such a POST, with a
    request behind it, was applied and answered 400 "Invalid HTTP request"."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    body = json.dumps({"schemas": [USER], "userName": "upclose@x.io"}).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(
            f"POST /scim/v2/Users HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {live_server.token}\r\nContent-Type: application/scim+json\r\n"
            "Connection: Upgrade, close\r\nUpgrade: h2c\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            + f"GET /healthz HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
        )
        reply = _read_all(s)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", reply) == [b"201"], reply[:300]


def test_a_client_sending_its_body_without_waiting_for_100_gets_the_refusal(
    live_server: LiveServer,
) -> None:
    """From a review: with ``Expect: 100-continue``, Python's http.client sends its body at
    once; refused (413 for 8 MiB), the connection was closed with the body arriving, the
    client was reset and never read the 413. The refusal is read whole now."""
    import http.client

    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {
        "Authorization": f"Bearer {live_server.token}",
        "Content-Type": "application/scim+json",
        "Expect": "100-continue",
    }
    try:
        conn.request("POST", "/scim/v2/Bulk", body=b" " * (8 * 1024 * 1024), headers=headers)
        reply = conn.getresponse()
        assert reply.status == 413, reply.status
        assert b"maxPayloadSize" in reply.read()
    finally:
        conn.close()


def test_replies_the_protocol_writes_itself_carry_a_date(live_server: LiveServer) -> None:
    """RFC 9110 §6.6.1: an origin server with a clock sends Date; the 431 (and 408) written by
    the protocol, not uvicorn, had none."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        reply = _read_all(s)
    head = reply.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 431") and b"\r\ndate: " in head, head


def test_a_half_close_after_a_whole_request_and_part_of_another_answers_the_first(
    any_database_url: str, tmp_path: Path
) -> None:
    """From an audit: the half-close was honoured only between requests; with the first
    bytes of a next request sent (or past the pipeline limit) the connection closed at once,
    and the whole POST before them was applied without a reply."""
    with provisioned_server(any_database_url, log_dir=tmp_path) as server:
        url = urlsplit(server.base_url)
        assert url.hostname is not None and url.port is not None
        auth = f"Host: {url.netloc}\r\nAuthorization: Bearer {server.token}\r\n"
        for n, tail in enumerate((b"GET /hea", b"POST /scim/v2/Users HTTP/1.1\r\n")):
            body = json.dumps({"schemas": [USER], "userName": f"part{n}@x.io"})
            whole = (
                f"POST /scim/v2/Users HTTP/1.1\r\n{auth}Content-Type: application/scim+json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
            with socket.create_connection((url.hostname, url.port), timeout=10) as s:
                s.sendall(whole + tail)
                s.shutdown(socket.SHUT_WR)
                reply = _read_all(s)
            assert re.findall(rb"HTTP/1\.1 (\d{3}) ", reply) == [b"201"], reply[:300]


def test_a_refusal_on_a_connection_asked_to_close_is_read_whole(live_server: LiveServer) -> None:
    """From an audit: a request asking to close (urllib always does, HTTP/1.0 by default)
    refused before its body was read (413 for 8 MiB) was closed with the body arriving: the
    client was reset and never read the 413. The close lingers now."""
    import http.client

    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    for extra in ({"Connection": "close"}, {"Connection": "close", "Expect": "100-continue"}):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        headers = {
            "Authorization": f"Bearer {live_server.token}",
            "Content-Type": "application/scim+json",
            **extra,
        }
        try:
            conn.request("POST", "/scim/v2/Bulk", body=b" " * (8 * 1024 * 1024), headers=headers)
            reply = conn.getresponse()
            assert reply.status == 413, (extra, reply.status)
            assert b"maxPayloadSize" in reply.read()
        finally:
            conn.close()


def test_a_refused_head_does_not_overtake_the_reply_to_a_request_before_it(
    live_server: LiveServer,
) -> None:
    """From an audit: a head refused (too large, malformed) behind a request still running
    was answered at once: the client read the 431 or 400 as the answer to its POST, which
    was applied. Replies keep the requests' order (RFC 9112 §9.3.2): the POST's comes, then
    the connection closes."""
    url = urlsplit(live_server.base_url)
    assert url.hostname is not None and url.port is not None
    for n, after in enumerate(
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            b"BAD\r\n\r\n",
        )
    ):
        # A password makes the POST take a while (its digest is computed off the loop).
        body = json.dumps({"schemas": [USER], "userName": f"order{n}@x.io", "password": "p4ss!"})
        post = (
            f"POST /scim/v2/Users HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {live_server.token}\r\nContent-Type: application/scim+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(post)
            s.sendall(after)
            reply = _read_all(s)
        assert reply.startswith(b"HTTP/1.1 201"), (n, reply[:200])
