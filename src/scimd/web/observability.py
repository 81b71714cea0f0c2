"""Request ids, Prometheus metrics and structured JSON access logs."""

from __future__ import annotations

import asyncio
import atexit
import bisect
import itertools
import logging
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, BinaryIO

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scimd.web.exchange import stopped_reply

# The id of the request being answered in this task, for the log lines it causes: an error
# line without it could be matched to its access line (and the id a 500 tells the client) only
# by time and path.
REQUEST_ID: ContextVar[str | None] = ContextVar("scimd_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields come from ``record.fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            # UTC to the millisecond, as the access lines (local time to the second was a
            # second format in one log).
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:  # logged while answering a request: the access line's id
            data["request_id"] = rid
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


# Up to 30 s: the waits scimd bounds (database_timeout, a SQLite write lock, a long Bulk) end
# there, and past 5 s they all fell in +Inf, where an operator could not see them.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Request counts and latencies, kept as plain numbers and exported at scrape time.

    Updating prometheus_client's labelled Counter and Histogram took three locked increments
    per request; the event loop thread is the only writer here, so plain lists do, and
    ``collect`` builds the metric families when ``/metrics`` is read.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counts: dict[tuple[str, str, str], int] = {}
        # (route, method) -> [count per bucket (not cumulative) + overflow, sum of seconds]
        self.latencies: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self.counters: list[tuple[str, str, Callable[[], float]]] = []
        self.registry.register(self)

    def add_counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A counter kept elsewhere (a plain number), read when ``/metrics`` is scraped."""
        self.counters.append((name, documentation, read))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        entry = self.latencies.get((route, method))
        if entry is None:
            entry = self.latencies[(route, method)] = ([0] * (len(BUCKETS) + 1), [0.0])
        entry[0][bisect.bisect_left(BUCKETS, seconds)] += 1
        entry[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "scimd_requests",
            "HTTP requests by route, method and status",
            labels=["route", "method", "status"],
        )
        for labels, n in list(self.counts.items()):
            requests.add_metric(list(labels), n)
        yield requests
        latency = HistogramMetricFamily(
            "scimd_request_duration_seconds",
            "HTTP request latency by route and method",
            labels=["route", "method"],
        )
        for (route, method), (counts, total) in list(self.latencies.items()):
            running = 0
            buckets = []
            for bound, n in zip((*map(floatToGoString, BUCKETS), "+Inf"), counts, strict=True):
                running += n
                buckets.append((bound, running))
            latency.add_metric([route, method], buckets, total[0])
        yield latency
        for name, documentation, read in self.counters:
            yield CounterMetricFamily(name, documentation, value=read())


_SCIM_KINDS = {
    k.lower(): k
    for k in ("Users", "Groups", "Schemas", "ResourceTypes", "ServiceProviderConfig", "Bulk")
}
_SCIM_KINDS[".search"] = ".search"
# (pattern, label) of the app's other routes; anything else is "other" (see ``route_of``).
Routes = list[tuple[re.Pattern[str], str]]


def route_of(path: str, routes: Routes | None = None) -> str:
    """A bounded route label: ids become {id}, and a path the app does not serve is "other",
    so a scanner's random paths cannot crowd real routes out of the series the metrics keep."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "scim" and parts[1].lower() == "v2":
        rest = parts[2:]
        if not rest:
            return "/scim/v2"
        kind = _SCIM_KINDS.get(rest[0].lower())
        if kind is None or len(rest) > 2 or (len(rest) == 2 and kind == ".search"):
            return "/scim/v2/other"
        label = f"/scim/v2/{kind}"
        if len(rest) > 1:
            label += "/.search" if rest[1] == ".search" else "/{id}"
        return label
    for pattern, label in routes or ():
        if pattern.match(path):
            return label
    return "other"


def app_routes(routes: Iterable[BaseRoute]) -> Routes:
    """The patterns and path templates of Starlette routes (a mount's as ``/mount/{path}``)."""
    out: Routes = []
    for r in routes:
        if isinstance(r, Route):
            out.append((r.path_regex, r.path))
        elif isinstance(r, Mount):
            out.append((r.path_regex, f"{r.path}/{{path}}"))
    return out


class AccessLog:
    """One JSON line per request, written in batches.

    Going through ``logging`` (a LogRecord, a formatter, a flush per line) cost about 55 µs per
    request, more than half of a GET by id. Lines are encoded with orjson, buffered, and written
    at most every 250 ms (and at shutdown), to ``stream`` (standard error by default).
    """

    def __init__(self, stream: BinaryIO | None = None, interval: float = 0.25) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.interval = interval
        self._lines: list[bytes] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""
        _LOGS.add(self)  # flushed at exit: a forced quit skips the app's shutdown

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(now % 1 * 1000):03d}Z"

    def write(self, fields: dict[str, Any]) -> None:
        # With a level and a logger, as the other lines have (a shipper routes by them).
        line = {"ts": self._now(), "level": "info", "logger": "scimd.access", "msg": "request"}
        self._lines.append(orjson.dumps({**line, **fields}))
        if len(self._lines) >= 1000:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(self.interval, self.flush)
                self._scheduled = True
            except RuntimeError:  # no event loop: write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = b"\n".join(self._lines) + b"\n"
        self._lines.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - stream closed at shutdown
            pass


_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_logs() -> None:
    """A second Ctrl+C (uvicorn's forced quit) skips the lifespan shutdown that flushes the
    access log: the lines of the last 250 ms, answered requests among them, were lost."""
    for access_log in list(_LOGS):
        access_log.flush()


# Methods labelled as they are in the metrics; the others (PROPFIND, M-SEARCH, ...: llhttp
# takes about 35) are "other": each was a latency histogram per route, so ~1,700 requests
# of a scanner made /metrics 14,600 series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Observer:
    """Request ids, metrics and the access log for one app.

    The SCIM handler reports its requests directly (``start``/``finish``); other routes go
    through ``ObservabilityMiddleware``.
    """

    MAX_SERIES = 2_000

    def __init__(self, metrics: Metrics, log: AccessLog | None = None) -> None:
        self.metrics = metrics
        self.log = log
        self.routes: Routes = []  # the app's other routes, set once it is built
        self._prefix = os.urandom(5).hex()
        self._seq = itertools.count(1)

    def start(self, scope: Scope) -> str:
        """The request's id, kept in its state; always the server's own. It is what the audit
        records name, and a client's ``X-Request-Id`` (taken as the id before) could give its
        writes the id of another request's. The client's is logged beside it."""
        rid = f"{self._prefix}{next(self._seq):011x}"
        REQUEST_ID.set(rid)  # the request's own task: its context ends with it
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                state["client_request_id"] = v.decode("latin-1")[:64]
                break
        return rid

    def finish(self, scope: Scope, rid: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        path = scope["path"]
        method = scope["method"]
        label = method if method in _METHODS else "other"  # ~35 methods the parser takes
        route = route_of(path, self.routes)
        if (route, label) not in self.metrics.latencies and len(
            self.metrics.latencies
        ) >= self.MAX_SERIES:
            route = "other"  # a scanner's random paths: one series
        self.metrics.observe(route, label, status, elapsed)
        if self.log is not None:
            line = {
                "request_id": rid,
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "app": scope["state"].get("client_id"),
                # Who failed to sign in, or guessed tokens (behind a proxy: --forwarded-allow-ips).
                "client": client[0] if (client := scope.get("client")) else None,
            }
            client_rid = scope["state"].get("client_request_id")
            if client_rid is not None:
                line["client_request_id"] = client_rid
            self.log.write(line)


class ObservabilityMiddleware:
    """Assigns a request id, times the request, counts it and logs one JSON line."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = self.observer.start(scope)
        status = 500
        start = time.perf_counter()
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            # Past the shutdown timeout, uvicorn cancels the requests still running, which
            # then got a plain-text 500. A client is told to retry elsewhere or later.
            if started:
                raise
            reply = stopped_reply()
            status = reply.status
            await reply.send(send_wrapper, False)
        finally:
            self.observer.finish(scope, rid, status, start)
