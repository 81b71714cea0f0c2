"""Responses leave in one write per event-loop step (``web/coalesce.py``), in order, whole.

The transport under test wraps a real socket transport on loopback; a counting wrapper on
that transport's ``write``/``writelines`` observes how many writes reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

from scimd.web.coalesce import CoalescingTransport
from support.live_server import LiveServer


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
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        statuses: list[bytes] = []
        while len(statuses) < 3:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {statuses}"
            data += chunk
            while b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    int(v)
                    for k, _, v in (x.partition(b": ") for x in lines[1:])
                    if k.lower() == b"content-length"
                )
                if len(rest) < length:
                    break
                statuses.append(lines[0].split(b" ")[1])
                body, data = rest[:length], rest[length:]
                assert body.startswith(b"{") and body.endswith(b"}")
    assert statuses == [b"200", b"404", b"200"]


def test_serve_coalesces_on_sqlite_only() -> None:
    """On PostgreSQL a request waits for its statement across loop steps, and holding its reply
    until the end of a step cost POSTs 10-15%: the plain protocol there."""
    from scimd.cli.main import _http_protocol
    from scimd.web.coalesce import CoalescingHttpToolsProtocol

    assert _http_protocol("sqlite:///scimd.db") is CoalescingHttpToolsProtocol
    assert _http_protocol("postgresql+psycopg://u@127.0.0.1/db") == "httptools"
