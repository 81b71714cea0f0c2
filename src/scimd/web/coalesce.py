"""Replies sent at the end of the event-loop step: uvicorn's protocol with coalesced writes.

uvicorn writes a response's status line and headers as soon as the application starts the
response, and its body in a second write, each a ``send()`` on the socket that wakes the
client. ``CoalescingHttpToolsProtocol`` gives the protocol a transport that keeps what is
written during one step of the event loop and hands it to the socket in one write at the end
of that step. On SQLite, where the event loop runs each request to its end within a step, the
replies to the requests of one step then leave together after all of them were handled.

Measured over HTTP on SQLite (3,000 users, c=8, alternating runs, server CPU per request and
req/s): GET by id 84-85 -> 74 µs, 12,415-12,429 -> 14,314-14,320; filter by userName 105-109
-> 92-97 µs, 9,596-9,932 -> 10,816-11,348; PATCH 176-179 -> 170-171 µs. Sending the head and
the body together as soon as the body is written, without waiting for the end of the step,
gained nothing (82-89 against 84-85 µs per GET): the gain is the replies leaving together.
On PostgreSQL a request waits for its statement across steps. There the replies to GETs are
held while the server is busy (``GetCoalescingHttpToolsProtocol``): the lookups of concurrent
GETs share one statement (``store.onloop.ReadBatch``), so their replies become ready in one
step and leave together. Measured over HTTP (3,000 users, alternating runs, req/s): at c=32,
GET by id 7,371-8,276 -> 8,512-10,248 and filter by userName 6,251-7,387 -> 7,438-8,553. At
c=8 holding every GET reply cost GETs ~8% (6,937-8,078 -> 6,288-7,432), so a reply is held
only while more requests are in progress than there are connection slots (then lookups queue
and batches are full), and at c=8 the replies go at once. Holding the replies to writes cost
POSTs at c=32 10-15% (4,081-4,300 -> 3,470-3,641): those are always written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport(asyncio.Transport):
    """Delegates to ``transport``; writes wait for the end of the current loop step.

    Order is kept (everything goes through the one buffer), ``close`` sends what is pending
    first, and ``abort`` drops it, as the socket's own buffer would be. With ``hold`` False,
    or for a write of ``hold_below`` bytes or more, what is pending and the write go to the
    socket at once, in one write.
    """

    __slots__ = (
        "_eof",
        "_loop",
        "_pending",
        "_scheduled",
        "_transport",
        "hold",
        "hold_below",
        "lingers",
    )

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] = []
        self._scheduled = False
        self.hold = True
        self.hold_below = sys.maxsize
        # Asked on ``close``: True when the protocol takes over the close (it lingers:
        # ``write_eof`` now, ``close_now`` later).
        self.lingers: Callable[[], bool] | None = None
        self._eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(data)
        if not self.hold or len(data) >= self.hold_below:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is pending to the socket: one write for all of it."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing() or self._eof:
            # The peer is gone (the socket's transport would drop it too), or the sending
            # side was ended (a write then raised in the loop's callback).
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        lingers, self.lingers = self.lingers, None
        if lingers is not None and not self._eof and self._transport.can_write_eof() and lingers():
            self.write_eof()
            return
        self._transport.close()

    def close_now(self) -> None:
        """Close without lingering (the end of a lingering close, or a body too slow)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._eof = True
        self._transport.write_eof()


# Where a connection is in reading its current request (_DISCARD: dropping a refused one).
_IDLE, _HEAD, _BODY, _DISCARD = 0, 1, 2, 3


class _StopParsing(Exception):
    """Raised from the parser's callback to stop it (see ``on_headers_complete``)."""


_HEAD_TOO_LARGE = orjson.dumps(
    {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "431",
        "detail": "the request line and headers exceed 64 KiB",
    }
)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a ``CoalescingTransport``, with the
    limits uvicorn's lacks: it buffered a request head of any size (100 MB measured), and
    kept a connection open for as long as a client dribbled its head or paused its body.

    Flow control keeps watching the socket's own transport (set up before the swap). The
    limits cost nothing for a request that arrives whole: the timer is set only while a
    request is incomplete after the bytes that came (and once per connection, until its first
    request is complete).
    """

    MAX_HEAD = 64 * 1024  # the request line and headers: 431 past it
    HEAD_TIMEOUT = 30.0  # seconds from a request's first byte (or the connection) to its head
    BODY_IDLE_TIMEOUT = 30.0  # seconds a body may pause before the connection is closed
    # Seconds a body may take in all: one byte every 29 s held a connection for months (1 MiB
    # at 10 KB/s takes 100 s).
    BODY_TIMEOUT = 300.0
    MAX_PIPELINE = 128  # requests queued behind the one in progress; those past it: dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)
        self.transport.lingers = self._lingers
        self._running: Any = None  # the request whose application runs
        now = self.loop.time()
        self._stage = _HEAD  # a connection that sends nothing is waiting for a head
        self._began = False  # whether the current request has sent its first byte
        self._head_started = self._last_data = self._body_started = now
        self._idle_since = now  # when the last reply ended (the keep-alive timer's start)
        self._head_size = 0
        self._too_large = False
        self._too_deep = False
        self._upgrade_head: bytes | None = None  # a head read again without its Upgrade
        self._guard: asyncio.TimerHandle | None = self.loop.call_later(
            self.HEAD_TIMEOUT, self._check_progress
        )

    def data_received(self, data: bytes) -> None:
        if self._stage == _DISCARD:
            return  # the rest of a refused head (see ``_refuse_head``)
        self._last_data = self.loop.time()
        if self._stage != _BODY:
            self._head_size += len(data)
        self._feed(data)
        stage = self._stage
        if stage == _IDLE:
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None
            # Bytes that began no request (an empty line, which RFC 9112 §2.2 says to
            # ignore) cancelled uvicorn's keep-alive timer, which only a reply sets again:
            # such a connection was never closed. The timer runs on from the last reply (set
            # anew, two bytes a minute held a connection for good).
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.pipeline and self.timeout_keep_alive_task is None:
                left = self._idle_since + self.timeout_keep_alive - self.loop.time()
                self.timeout_keep_alive_task = self.loop.call_later(
                    max(left, 0.0), self.timeout_keep_alive_handler
                )
        elif stage == _HEAD and self._head_size > self.MAX_HEAD:
            self._refuse_head()
        elif self._guard is None and not self.transport.is_closing():
            wait = self.HEAD_TIMEOUT if stage == _HEAD else self.BODY_IDLE_TIMEOUT
            self._guard = self.loop.call_later(wait, self._check_progress)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, but for what follows a request asking to upgrade.

        The parser stops at the end of a head that asks to change protocols (``Upgrade:
        h2c``, which curl --http2 and Java's HttpClient send on http:// URLs), taking
        what follows for another protocol: the request's body was lost (a POST got "the
        request needs a JSON body") and, sent later, was read as a request of its own (a
        proxy that forwards Upgrade saw one request answered twice). RFC 9110 §7.8 lets a
        server ignore the upgrade: the head is read again without it, by a new parser, and
        the body with it."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade as e:
            head, self._upgrade_head = self._upgrade_head, None
            rest = data[e.args[0] :] if e.args and isinstance(e.args[0], int) else b""
            if head is None:  # CONNECT: answered (405); nothing after it can be read
                self._stage = _DISCARD
                if self.cycle is not None:
                    self.cycle.keep_alive = False
                return
            self.parser = httptools.HttpRequestParser(self)
            with contextlib.suppress(AttributeError):  # as uvicorn's own (httptools >= 0.6.3)
                # Data after a "Connection: close" request is not an error: without this,
                # a POST asking to upgrade and to close was answered 400, though applied.
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            self._feed(head + rest)

    def _without_upgrade(self) -> bytes:
        """The current request's head without the headers that ask for another protocol."""
        version = self.parser.get_http_version().encode()
        lines = [self.parser.get_method() + b" " + self.url + b" HTTP/" + version]
        for name, value in self.headers:
            if name in (b"upgrade", b"http2-settings"):
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                kept = [t for t in tokens if t.lower() not in (b"upgrade", b"http2-settings")]
                if not kept:
                    continue
                value = b", ".join(kept)
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._stage = _HEAD
        self._began = True
        self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        # A head that came in one read (up to 256 KiB) is complete before ``data_received``
        # can count it: measure it here, before the application is started for it.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.MAX_HEAD:
            self._too_large = True
            raise _StopParsing  # the parser stops; ``send_400_response`` answers 431
        if len(self.pipeline) >= self.MAX_PIPELINE:
            self._too_deep = True
            raise _StopParsing  # the parser stops; see ``send_400_response``
        if self.parser.should_upgrade() and self.parser.get_method() != b"CONNECT":
            self._upgrade_head = self._without_upgrade()  # read again (``_feed``)
            return
        if self.expect_100_continue and self.parser.get_http_version() == "1.0":
            # RFC 9110 §10.1.1: ignored in HTTP/1.0 (no 1xx is sent to such a client).
            self.expect_100_continue = False
        super().on_headers_complete()
        if self.expect_100_continue:
            _close_if_refused_unread(self.cycle)
        self._stage = _BODY
        self._head_size = 0
        self._body_started = self.loop.time()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_head()
        elif self._too_deep:
            # A client sending requests without reading the replies: the requests queued are
            # answered (a write among them may be applied: it must get its reply), the last
            # reply closes the connection, and what came after them is dropped unread.
            self._stage = _DISCARD
            self.pipeline[0][0].keep_alive = False
        elif not self._after_those_before():
            super().send_400_response(msg)

    def _after_those_before(self) -> bool:
        """For a head refused (431, 400, 408) while requests before it are still unanswered:
        those are answered first, then the connection closes, and the refused one gets no
        reply. Written at once, its refusal overtook them (RFC 9112 §9.3.2 wants replies in
        order): a client read the 431 as the answer to its POST, which was applied. Not for
        a body gone wrong: that is the running request's own."""
        if self._stage == _BODY:
            return False
        last = self.pipeline[0][0] if self.pipeline else self._running
        if last is None or last.response_complete:
            return False
        last.keep_alive = False
        self._stage = _DISCARD
        return True

    def eof_received(self) -> bool | None:  # type: ignore[override]  # (asyncio allows True)
        """A client that half-closes after its requests (``nc -N``, forwarders passing its
        FIN on) has said it sends nothing more, not that it wants no reply: uvicorn closed
        the connection, and a POST was applied that nobody was told of. The requests read
        whole are answered, then the connection closes; what follows them (a head or a body
        cut short) is dropped. Only a running request cut short mid-body closes at once."""
        whole = [c for c, _ in self.pipeline] + [self._running]  # newest first
        if self._stage == _BODY and self.cycle is not None:  # the newest, cut short
            whole = [c for c in whole if c is not self.cycle]
            for entry in list(self.pipeline):
                if entry[0] is self.cycle:
                    self.pipeline.remove(entry)  # never started: its body will not come
        last = next((c for c in whole if c is not None and not c.response_complete), None)
        if last is not None:
            last.keep_alive = False
            self._stage = _DISCARD
            return True
        # The transport closes now: a reply written in this step, still held, goes first.
        assert isinstance(self.transport, CoalescingTransport)
        self.transport.flush()
        return None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._idle_since = self.loop.time()
        # uvicorn reads again after every reply, even with requests still queued behind
        # it: a client pipelining requests it never read the replies of made the server
        # read and queue all it sent (4 MB of requests: 230 MB of memory, never given back,
        # and other clients waited seconds).
        if self.pipeline and not self.transport.is_closing():
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        if self._upgrade_head is not None:
            return  # a head to read again: no request was made of it
        super().on_message_complete()
        self._stage = _IDLE

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)

    def _check_progress(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # uvicorn stopped reading (a pipelined request waits for the one before it, or the
            # application has not taken the body read so far): what has not arrived is not the
            # client's delay. Counted, it closed the connection under a request still running
            # (a write waiting for a lock), whose applied change then got no reply.
            self._last_data = self._head_started = self._body_started = now
            self._guard = self.loop.call_later(self.BODY_IDLE_TIMEOUT, self._check_progress)
            return
        if self._stage == _HEAD:
            left = self._head_started + self.HEAD_TIMEOUT - now
            if left <= 0:
                if self._began:
                    self._close_with(b"HTTP/1.1 408 Request Timeout\r\n", b"")
                else:  # nothing asked: a reply would be read as the answer to a later request
                    self.transport.close()
                return
        elif self._stage == _BODY:
            left = (
                min(
                    self._last_data + self.BODY_IDLE_TIMEOUT, self._body_started + self.BODY_TIMEOUT
                )
                - now
            )
            if left <= 0:
                # The application may be waiting for this body: closing ends its wait (at
                # once: a client this slow gets no lingering).
                assert isinstance(self.transport, CoalescingTransport)
                self.transport.close_now()
                return
        else:
            return
        self._guard = self.loop.call_later(left, self._check_progress)

    def _lingers(self) -> bool:
        """Asked when the connection is closed (after a reply to a request that asked to
        close, or to one refused before its expected body): with a body still unread, end
        the sending side, drop what the client still sends for a second, then close (as
        ``_refuse_head`` does). Closed at once with the body arriving, the connection was
        reset, and the client lost the reply (a 413 for 8 MiB with ``Connection: close``)."""
        if self._stage != _BODY:
            return False
        self._stage = _DISCARD
        if self._guard is not None:
            self._guard.cancel()
        transport = self.transport
        assert isinstance(transport, CoalescingTransport)
        self._guard = self.loop.call_later(1.0, transport.close_now)
        return True

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle  # (uvicorn keeps only the newest request, in ``cycle``)
        super()._start_asgi_task(cycle, app)

    def _refuse_head(self) -> None:
        """Answer 431, then read and drop what the client still sends for a second before
        closing: closing with unread input resets the connection, and the client often lost
        the answer with it."""
        if self._after_those_before():
            return
        self._stage = _DISCARD
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            + self._default_headers()
            + b"content-type: application/scim+json\r\ncontent-length: "
        )
        self.transport.write(
            head
            + str(len(_HEAD_TOO_LARGE)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + _HEAD_TOO_LARGE
        )
        self.transport.write_eof()
        if self._guard is not None:
            self._guard.cancel()
        self._guard = self.loop.call_later(1.0, self.transport.close)

    def _default_headers(self) -> bytes:
        """uvicorn's Date (and Server) lines, as its own replies carry (RFC 9110 §6.6.1)."""
        return b"".join(n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers)

    def _close_with(self, head: bytes, body: bytes) -> None:
        """Answer a request the application never saw, and close the connection."""
        if self._after_those_before():
            return
        self._stage = _IDLE
        self.transport.write(
            head
            + self._default_headers()
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()


def _close_if_refused_unread(cycle: Any) -> None:
    """A request that expects "100 Continue" and gets a final status first (a 401 for its
    token, a 413 for its declared size) may never send its body (RFC 9110 §10.1.1): the
    connection closes after the reply, which says so. Kept open, the server read the next
    request as the body it waited for, and that request got no answer for 30 s. A client
    sending its body anyway (without waiting) is read on as any other. The close lingers,
    as a refused head's does: closed with the body arriving, the connection was reset and
    the client lost the reply (``_lingers``)."""
    send = cycle.send

    async def send_closing(message: Any) -> None:
        if (
            message["type"] == "http.response.start"
            and cycle.waiting_for_100_continue
            and cycle.more_body
            and not cycle.body
        ):
            cycle.keep_alive = False  # uvicorn then adds "connection: close" and closes
        await send(message)

    cycle.send = send_closing


class Load:
    """The requests in progress in one server, counted by its connections' protocols."""

    __slots__ = ("active", "busy_above")

    def __init__(self, busy_above: int) -> None:
        self.active = 0
        self.busy_above = busy_above


class GetCoalescingHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """Holds the replies to GET and HEAD requests until the end of the loop step while more
    than ``load.busy_above`` requests are in progress in the server; writes the others at once.

    The choice is made when a request's headers are complete. With pipelined requests it may
    apply to the reply still being written for an earlier one: only when a reply leaves
    changes, never the order. (uvicorn's set of request tasks is no such count: a task
    outlives its response; GETs at c=8 measured 11 tasks on average for 5 requests in
    progress, often more than the 8 slots.) Every counted request ends in a response or a
    closed connection: ``scimd serve`` turns WebSocket upgrades off, the one way uvicorn
    takes a request off this protocol.
    """

    # A page of 100 users (~100 KB) gains nothing from waiting for the step's end, and
    # holding it cost list pages 7-10% at c=32.
    HOLD_BELOW = 16 * 1024

    def __init__(self, *args: Any, load: Load, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.load = load
        self._active = 0  # this connection's requests in progress

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        assert isinstance(self.transport, CoalescingTransport)
        self.transport.hold_below = self.HOLD_BELOW

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._upgrade_head is not None:
            return  # no request yet: its head is read again without the upgrade
        self._active += 1
        load = self.load
        load.active += 1
        assert isinstance(self.transport, CoalescingTransport)
        self.transport.hold = (
            self.scope["method"] in ("GET", "HEAD") and load.active > load.busy_above
        )

    def on_response_complete(self) -> None:
        if self._active:
            self._active -= 1
            self.load.active -= 1
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.active -= self._active
        self._active = 0
        super().connection_lost(exc)
