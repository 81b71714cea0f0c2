"""Load benchmark for any SCIM 2.0 server, over HTTP/1.1 keep-alive on loopback.

It measures the operations an identity provider such as Microsoft Entra ID sends during a
provisioning cycle, each at several concurrency levels, and reports per operation and level:
requests sent, errors (transport failures and non-2xx answers), requests per second, and the
p50 and p99 latencies in milliseconds.

Operations (``--ops``, comma separated, all by default):

``post_user``
    POST /Users with a unique, realistic (~1 KB) Entra-style user.
``filter_username``
    GET /Users?filter=userName eq "<name>" for random seeded users (Entra's existence check).
``get_user``
    GET /Users/{id} for random seeded users.
``patch_user``
    PATCH /Users/{id} in Entra's legacy style: capitalised ``Replace`` ops on
    ``name.familyName`` and ``emails[type eq "work"].value``.
``list_page``
    GET /Users?startIndex=K&count=100 at random offsets within the seeded set.
``list_cursor`` (not in the default set: only servers with RFC 9865 cursors answer it)
    GET /Users?cursor=C&count=100 for random cursors C, collected untimed first by following
    ``nextCursor`` through every user: a page at a random depth, as ``list_page`` asks for by
    startIndex.
``group_add_members``
    PATCH /Groups/{id} adding 100 not-yet-member seeded users per request. Groups are created
    before the timed phase, one per pass over the seeded users: once a group holds every seeded
    user the next requests go to a fresh group, so each request really adds 100 members.
    With fewer than 100 seeded users the batches hold them all.
``group_add_large``
    Whether adding members costs more as the group grows. Two groups are prepared untimed: a
    small one holding 100 seeded users and a large one holding ``--large-group-size`` of them
    (default 100,000, capped at the seeded count less the spare users), filled by PATCH adds of
    ``--group-fill-batch`` members per request (halved on HTTP 413) within
    ``--group-fill-max-seconds``. The spare users, 100 per worker at the highest concurrency
    level, are in neither group; they are a random sample of the users the large group is
    drawn from, so their ids interleave with the members' ids as in a directory that grows
    over time (created after the members, they would get the largest ids of a server with
    time-ordered ids, and each add would only append to the end of an index). With too few
    seeded users, the missing ones are created first (untimed; the other operations do not use
    them).

    Then, per group and concurrency level, each worker alternates an Entra-style add of its 100
    spare users (``Add`` on ``members``) with their removal (``Remove`` on ``members`` with the
    same value list; a server that refuses that form, as scim2-server does, gets
    ``members[value eq "a" or value eq "b" ...]`` instead, which the rows' note says), so the
    group stays within 100 x concurrency members of its prepared size. Both requests are timed
    and reported as four rows: ``group_add_100_small``, ``group_remove_100_small``,
    ``group_add_100_large`` and ``group_remove_100_large``. ``--requests`` caps adds and removes
    together, and each row's req/s counts its own requests over the whole alternating run
    (half the rate of requests sent). The same memberships come and go again and again: a
    server that defers its index writes sees them cancel out, which a sync adding new members
    would not (docs/performance-history.md, the section of b938499).

Before the measurements, ``--seed-users N`` users are created with 32 concurrent POSTs; their ids
and userNames are kept in memory for the read and update operations. Every user name carries a
random run prefix, so runs can be repeated against the same server.

Each (operation, concurrency) measurement opens ``concurrency`` keep-alive connections (one per
worker, connected before the clock starts), and stops after ``--requests`` requests or
``--max-seconds`` seconds, whichever comes first (requests in flight then are still awaited, up
to ``--timeout``, and counted). Group creation and seeding are capped in time as well.

Each measurement also records ``other_cpu``: the CPU cores that processes other than the load
generator and the server (``--server-pid``, plus those whose command line contains
``--server-cmdline-match``) kept busy meanwhile, read from /proc on Linux. Figures taken while
it was well above zero shared the machine with something else and deserve a re-run.

The HTTP client (``--client``) is, by default, a minimal asyncio + httptools client: httpx
spends about 0.5 ms of client CPU per request, which capped a 2-core machine near 2,000 req/s
(and a single httpx pool shared by 32 workers collapsed to ~450 req/s), far below what the bare
reference server answers. ``--client httpx`` is kept for cross-checking. The load generator
still shares the machine with the server, so compare targets measured the same way rather than
reading the figures as absolute capacities.

Run::

    python bench/load.py --base-url http://127.0.0.1:8000/scim/v2 --token TOKEN \\
        --seed-users 1000 --concurrency 8,32 --requests 2000 --max-seconds 20 \\
        --json-out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import quote, urlsplit

import httptools
import httpx

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = "application/scim+json"

ALL_OPS = (
    "post_user",
    "filter_username",
    "get_user",
    "patch_user",
    "list_page",
    "group_add_members",
    "group_add_large",
)
EXTRA_OPS = ("list_cursor",)
OPS_NEEDING_USERS = frozenset(ALL_OPS + EXTRA_OPS) - {"post_user"}
GROUP_BATCH = 100
SMALL_GROUP_SIZE = 100
PAGE_SIZE = 100
MAX_ERROR_SAMPLES = 3

GIVEN_NAMES = (
    "Adele", "Alex", "Diego", "Grady", "Henrietta", "Isaiah", "Johanna", "Joni", "Lee", "Lidia",
    "Lynne", "Megan", "Miriam", "Nestor", "Patti", "Pradeep",
)  # fmt: skip
FAMILY_NAMES = (
    "Vance", "Wilber", "Siciliani", "Archie", "Mueller", "Langer", "Lankford", "Sherman", "Gu",
    "Holloway", "Robbins", "Bowen", "Graham", "Wilke", "Fernandez", "Gupta",
)  # fmt: skip
TITLES = (
    "Software Engineer", "Senior Product Manager", "Marketing Assistant", "Sales Representative",
    "Director of Operations", "Accountant", "Retail Manager", "HR Business Partner",
)  # fmt: skip
DEPARTMENTS = ("Engineering", "Marketing", "Sales", "Operations", "Finance", "Retail", "HR")
CITIES = (
    ("Redmond", "WA", "98052"), ("Seattle", "WA", "98101"), ("Bellevue", "WA", "98004"),
    ("Austin", "TX", "73301"), ("Boston", "MA", "02108"), ("Chicago", "IL", "60601"),
)  # fmt: skip


@dataclass(frozen=True)
class SeededUser:
    """A user created by the seeding phase."""

    id: str
    user_name: str


@dataclass
class OpResult:
    """The outcome of one (operation, concurrency) measurement."""

    op: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    note: str = ""
    # CPU the rest of the machine used meanwhile, in cores (see CpuMeter); -1 when unknown.
    other_cpu: float = -1.0
    error_samples: list[str] = field(default_factory=list)


@dataclass
class GroupPair:
    """The two groups of ``group_add_large`` and the users that churn through them."""

    small_id: str
    small_size: int
    large_id: str
    large_size: int
    large_target: int  # the size asked for; larger than large_size when filling was cut short
    fill_seconds: float
    fill_note: str
    spare: list[SeededUser]  # in neither group: 100 per worker


class CpuMeter:
    """How busy the machine was with processes other than the benchmark's own (Linux /proc).

    The benchmark's own processes are this load generator, ``--server-pid`` and the processes
    whose command line contains ``--server-cmdline-match`` (e.g. the PostgreSQL backends of the
    bench database). The rest (other users' test runs, background services, the database
    server's own background processes) is reported per measurement as ``other_cpu``: the cores
    it kept busy on average. A measurement with ``other_cpu`` well above zero was disturbed.
    """

    def __init__(self, server_pid: int, cmdline_match: str) -> None:
        self.server_pid = server_pid
        self.cmdline_match = cmdline_match
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self.available = os.path.exists("/proc/stat")

    def _busy(self) -> float:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        return (sum(fields[:3]) + sum(fields[5:8])) / self.tick

    def _process_cpu(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def _own_pids(self) -> list[int]:
        pids = [self.server_pid] if self.server_pid > 0 else []
        if self.cmdline_match:
            needle = self.cmdline_match.encode()
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/cmdline", "rb") as f:
                            if needle in f.read():
                                pids.append(int(entry))
                    except OSError:
                        continue
        return pids

    def sample(self) -> tuple[float, dict[int, float], float] | None:
        """(machine busy seconds, own processes' CPU seconds, this process's CPU seconds)."""
        if not self.available:
            return None
        try:
            own = {pid: self._process_cpu(pid) for pid in self._own_pids()}
            times = os.times()
            return self._busy(), own, times.user + times.system
        except (OSError, ValueError, IndexError):
            return None

    def other_cores(
        self, before: tuple[float, dict[int, float], float] | None, seconds: float
    ) -> float:
        """Cores kept busy by other processes since ``before`` (-1 when unknown)."""
        after = self.sample()
        if before is None or after is None or seconds <= 0:
            return -1.0
        busy = after[0] - before[0]
        own = after[2] - before[2]
        own += sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after[1].items())
        return max(0.0, busy - own) / seconds

    async def wait_quiet(self, max_seconds: float, threshold: float = 0.25) -> float:
        """Wait (up to ``max_seconds``) until other processes use under ``threshold`` cores.

        Returns the seconds waited. Samples over one second at a time; a no-op without /proc.
        """
        waited = 0.0
        while self.available and waited < max_seconds:
            before = self.sample()
            await asyncio.sleep(1.0)
            waited += 1.0
            if self.other_cores(before, 1.0) < threshold:
                break
        return waited


RequestSpec = tuple[str, str, Any]  # method, URL relative to the base URL, JSON body or None
Planner = Callable[[int, random.Random], RequestSpec]


def make_user(prefix: str, n: int) -> dict[str, Any]:
    """Return a realistic Entra-style user (about 1 KB of JSON), unique for (prefix, n)."""
    given = GIVEN_NAMES[n % len(GIVEN_NAMES)]
    family = FAMILY_NAMES[(n // len(GIVEN_NAMES)) % len(FAMILY_NAMES)]
    user_name = f"{prefix}-{n:07d}@contoso.example"
    city, region, postal = CITIES[n % len(CITIES)]
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": str(uuid.uuid5(uuid.NAMESPACE_URL, user_name)),
        "userName": user_name,
        "active": True,
        "displayName": f"{given} {family}",
        "title": TITLES[n % len(TITLES)],
        "preferredLanguage": "en-US",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "name": {
            "formatted": f"{given} {family}",
            "familyName": family,
            "givenName": given,
        },
        "phoneNumbers": [{"type": "mobile", "value": f"+1 425 555 {n % 10000:04d}"}],
        "addresses": [
            {
                "type": "work",
                "primary": True,
                "formatted": f"{1 + n % 999} Microsoft Way, {city}, {region} {postal}, US",
                "streetAddress": f"{1 + n % 999} Microsoft Way",
                "locality": city,
                "region": region,
                "postalCode": postal,
                "country": "US",
            }
        ],
        ENTERPRISE_SCHEMA: {
            "department": DEPARTMENTS[n % len(DEPARTMENTS)],
            "employeeNumber": f"E{n:08d}",
            "costCenter": f"CC-{n % 97:03d}",
            "organization": "Contoso",
        },
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class TransportError(Exception):
    """A request that got no HTTP response: connection refused or reset, timeout, bad HTTP."""


class Connection(ABC):
    """One keep-alive HTTP/1.1 connection to the server, used by one worker at a time."""

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection ahead of the first request, when the client allows it."""

    @abstractmethod
    async def request(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        """Send a request (``url`` relative to the base URL); return the status and body."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection."""


class _ResponseReader(asyncio.Protocol):
    """Feeds the bytes of a socket to httptools and resolves one future per response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.headers_done = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"bad HTTP response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done:  # a body delimited by the end of the connection
            self.on_message_complete()
        self._fail(TransportError(f"connection closed: {exc!r}"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.chunks = []
        self.headers_done = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.headers_done = False
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.chunks)))


class FastConnection(Connection):
    """A minimal HTTP/1.1 client on asyncio and httptools (the C parser uvicorn uses).

    It costs the load generator about a tenth of the CPU httpx does per request, so the
    figures measure the server rather than the client. It reconnects when the server closes.
    """

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the fast client speaks plain http only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/") + "/"
        self.timeout = timeout
        head = f"Host: {parts.netloc}\r\nAccept: {SCIM_JSON}\r\nUser-Agent: scimd-bench\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.head = head.encode()
        self.reader: _ResponseReader | None = None

    async def connect(self) -> None:
        if self.reader is None or self.reader.closed:
            loop = asyncio.get_running_loop()
            _, self.reader = await loop.create_connection(_ResponseReader, self.host, self.port)

    async def request(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                await self.connect()
                reader = self.reader
                assert reader is not None
                assert reader.transport is not None
                waiter: asyncio.Future[tuple[int, bytes]] = (
                    asyncio.get_running_loop().create_future()
                )
                reader.waiter = waiter
                line = f"{method} {self.prefix}{url} HTTP/1.1\r\n".encode()
                if body is None:
                    reader.transport.write(line + self.head + b"\r\n")
                else:
                    length = f"Content-Type: {SCIM_JSON}\r\nContent-Length: {len(body)}\r\n\r\n"
                    reader.transport.write(line + self.head + length.encode() + body)
                return await waiter
        except (OSError, TimeoutError) as exc:
            await self.aclose()
            raise TransportError(repr(exc)) from exc
        except TransportError:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self.reader is not None and self.reader.transport is not None:
            self.reader.transport.close()
        self.reader = None


class HttpxConnection(Connection):
    """The same, through httpx: one AsyncClient holding a single keep-alive connection.

    One client per worker, because one httpx pool shared by 32 workers collapses (about
    a third of the throughput of 8 workers). httpx costs ~0.5 ms of client CPU per request,
    which caps a run at roughly 2,000 requests/s on one core.
    """

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        headers = {"Accept": SCIM_JSON, "Content-Type": SCIM_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            http1=True,
            http2=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=timeout,
            trust_env=False,
        )

    async def connect(self) -> None:
        """httpx opens its connection on the first request, so that one is slower."""

    async def request(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        try:
            response = await self.client.request(method, url, content=body)
        except httpx.HTTPError as exc:
            raise TransportError(repr(exc)) from exc
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


CLIENTS: dict[str, Callable[[str, str, float], Connection]] = {
    "fast": FastConnection,
    "httpx": HttpxConnection,
}


def encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def describe_error(method: str, url: str, status: int | None, body: bytes | str) -> str:
    """One line describing a failed request, with the start of the response body."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    what = f"HTTP {status}" if status is not None else "transport error"
    return f"{method} {url} -> {what}: {text[:300]}"


class Benchmark:
    """Seeds users, then measures each operation at each concurrency level."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.base_url: str = args.base_url
        self.token: str = args.token
        self.timeout: float = args.timeout
        self.requests: int = args.requests
        self.max_seconds: float = args.max_seconds
        self.seed: int = args.seed
        self.connection_class = CLIENTS[args.client]
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.users: list[SeededUser] = []
        self.created = 0  # users created so far, seeding and post_user alike
        self.patches = 0
        self.group_sets = 0  # plan_group_add_members calls: their groups' names differ
        self.large_group_size: int = args.large_group_size
        self.fill_batch: int = args.group_fill_batch
        self.fill_max_seconds: float = args.group_fill_max_seconds
        self.max_level: int = max(args.levels)
        self.group_pair: GroupPair | None = None
        self.remove_style = "value"  # "filter" when the server refuses Entra's value-list remove
        self.cpu = CpuMeter(args.server_pid, args.server_cmdline_match)
        self.quiet_wait: float = args.wait_quiet

    @contextlib.asynccontextmanager
    async def connections(self, count: int) -> AsyncIterator[list[Connection]]:
        """``count`` keep-alive connections, one per worker, closed at the end."""
        opened = [
            self.connection_class(self.base_url, self.token, self.timeout) for _ in range(count)
        ]
        try:
            yield opened
        finally:
            for connection in opened:
                await connection.aclose()

    # -- seeding ---------------------------------------------------------------------------

    async def seed_users(self, count: int, max_seconds: float, concurrency: int = 32) -> None:
        """Create ``count`` users concurrently, keeping their ids and names.

        Seeding stops early after ``max_seconds``; the operations then use the users created.
        """
        if count <= 0:
            return
        self.users = await self.create_users(count, max_seconds, concurrency, "seeding")

    async def create_users(
        self, count: int, max_seconds: float, concurrency: int = 32, what: str = "seeding"
    ) -> list[SeededUser]:
        """Create up to ``count`` users within ``max_seconds``; return the ones created."""
        print(f"{what}: creating {count} users (concurrency {concurrency}) ...", flush=True)
        found: list[SeededUser | None] = [None] * count
        errors: list[str] = []
        done = 0
        next_index = 0
        step = max(1, count // 10)
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker(connection: Connection) -> None:
            nonlocal done, next_index
            while next_index < count and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                body = encode(make_user(self.prefix, self.created + i))
                try:
                    status, content = await connection.request("POST", "Users", body)
                except TransportError as exc:
                    errors.append(describe_error("POST", "Users", None, str(exc)))
                else:
                    if 200 <= status < 300:
                        doc = json.loads(content)
                        found[i] = SeededUser(str(doc["id"]), str(doc["userName"]))
                    else:
                        errors.append(describe_error("POST", "Users", status, content))
                done += 1
                if done % step == 0 or done == count:
                    print(f"  created {done}/{count} ({done * 100 // count}%)", flush=True)

        async with self.connections(concurrency) as opened:
            await asyncio.gather(*(worker(connection) for connection in opened))
        self.created += count
        users = [user for user in found if user is not None]
        elapsed = time.perf_counter() - started
        print(
            f"{what}: created {len(users)} users in {elapsed:.1f}s "
            f"({len(users) / elapsed:.0f}/s), {len(errors)} errors",
            flush=True,
        )
        if next_index < count:
            print(f"  {what} stopped after {max_seconds:.0f}s", flush=True)
        for sample in errors[:MAX_ERROR_SAMPLES]:
            print(f"  error: {sample}", flush=True)
        return users

    # -- request planners ------------------------------------------------------------------

    def plan_post_user(self) -> Planner:
        base = self.created
        self.created += self.requests

        def plan(i: int, rng: random.Random) -> RequestSpec:
            return "POST", "Users", make_user(self.prefix, base + i)

        return plan

    def plan_filter_username(self) -> Planner:
        def plan(i: int, rng: random.Random) -> RequestSpec:
            user = rng.choice(self.users)
            scim_filter = quote(f'userName eq "{user.user_name}"', safe="")
            return "GET", f"Users?filter={scim_filter}", None

        return plan

    def plan_get_user(self) -> Planner:
        def plan(i: int, rng: random.Random) -> RequestSpec:
            return "GET", f"Users/{rng.choice(self.users).id}", None

        return plan

    def plan_patch_user(self) -> Planner:
        def plan(i: int, rng: random.Random) -> RequestSpec:
            self.patches += 1
            n = self.patches
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [
                    {"op": "Replace", "path": "name.familyName", "value": f"X{n}"},
                    {
                        "op": "Replace",
                        "path": 'emails[type eq "work"].value',
                        "value": f"patched-{self.prefix}-{n}@contoso.example",
                    },
                ],
            }
            return "PATCH", f"Users/{rng.choice(self.users).id}", body

        return plan

    def plan_list_page(self) -> Planner:
        last_start = max(1, len(self.users) - PAGE_SIZE + 1)

        def plan(i: int, rng: random.Random) -> RequestSpec:
            start = rng.randint(1, last_start)
            return "GET", f"Users?startIndex={start}&count={PAGE_SIZE}", None

        return plan

    async def plan_list_cursor(self) -> Planner:
        """Collect a cursor per page of 100 (untimed), then ask for pages at random cursors."""
        cursors: list[str] = []
        cursor = ""
        deadline = time.perf_counter() + self.max_seconds
        async with self.connections(1) as (connection,):
            while time.perf_counter() < deadline:
                url = f"Users?count={PAGE_SIZE}&cursor={quote(cursor, safe='')}"
                status, content = await connection.request("GET", url, None)
                if not 200 <= status < 300:
                    raise RuntimeError(describe_error("GET", url, status, content))
                cursor = json.loads(content).get("nextCursor", "")
                if not cursor:
                    break
                cursors.append(cursor)
        if not cursors:
            raise RuntimeError("the first page had no nextCursor")

        def plan(i: int, rng: random.Random) -> RequestSpec:
            return "GET", f"Users?count={PAGE_SIZE}&cursor={rng.choice(cursors)}", None

        return plan

    async def plan_group_add_members(self, concurrency: int) -> tuple[Planner, int]:
        """Create the groups the requests need, then plan 100-member adds into them.

        Group creation is not timed, but it stops after ``max_seconds``; the measurement is
        then limited to the requests the created groups can take (returned with the planner).
        """
        batch = min(GROUP_BATCH, len(self.users))
        batches_per_group = len(self.users) // batch
        groups_needed = math.ceil(self.requests / batches_per_group)
        group_ids: list[str] = []
        self.group_sets += 1
        deadline = time.perf_counter() + self.max_seconds
        async with self.connections(1) as (connection,):
            for g in range(groups_needed):
                if group_ids and time.perf_counter() > deadline:
                    break
                body = {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": f"{self.prefix}-s{self.group_sets}-c{concurrency}-g{g}",
                    "externalId": str(uuid.uuid4()),
                }
                status, content = await connection.request("POST", "Groups", encode(body))
                if not 200 <= status < 300:
                    raise RuntimeError(describe_error("POST", "Groups", status, content))
                group_ids.append(str(json.loads(content)["id"]))

        def plan(i: int, rng: random.Random) -> RequestSpec:
            group_id = group_ids[i // batches_per_group]
            start = (i % batches_per_group) * batch
            members = [{"value": user.id} for user in self.users[start : start + batch]]
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "Add", "path": "members", "value": members}],
            }
            return "PATCH", f"Groups/{group_id}", body

        return plan, len(group_ids) * batches_per_group

    # -- group size: adding to a small versus a large group -------------------------------

    async def create_group(self, connection: Connection, name: str) -> str:
        body = {"schemas": [GROUP_SCHEMA], "displayName": name, "externalId": str(uuid.uuid4())}
        status, content = await connection.request("POST", "Groups", encode(body))
        if not 200 <= status < 300:
            raise RuntimeError(describe_error("POST", "Groups", status, content))
        return str(json.loads(content)["id"])

    async def fill_group(
        self, connection: Connection, group_id: str, users: list[SeededUser], deadline: float
    ) -> tuple[int, str]:
        """Add ``users`` to a group in large PATCH batches; return how many went in, and a note.

        The batch starts at ``--group-fill-batch`` and is halved (down to 100) when the server
        answers 413. The loop ends when every user is in, or at ``deadline``, or at the first
        other error, so it is bounded in requests and time.
        """
        batch = max(1, self.fill_batch)
        added = 0
        max_requests = 2 * math.ceil(len(users) / min(batch, GROUP_BATCH)) + 20
        for _ in range(max_requests):
            if added >= len(users):
                return added, ""
            if time.perf_counter() > deadline:
                return added, f"filling stopped at {added:,} members after the time cap"
            chunk = users[added : added + batch]
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": u.id} for u in chunk]}
                ],
            }
            url = f"Groups/{group_id}"
            try:
                status, content = await connection.request("PATCH", url, encode(body))
            except TransportError as exc:
                return added, f"filling failed at {added:,} members: {str(exc)[:200]}"
            if status == 413 and batch > GROUP_BATCH:
                batch = max(GROUP_BATCH, batch // 2)
                print(f"  HTTP 413: fill batch lowered to {batch}", flush=True)
                continue
            if not 200 <= status < 300:
                return added, "filling failed at " + describe_error("PATCH", url, status, content)
            added += len(chunk)
            if added % max(batch, 10_000) < batch or added == len(users):
                print(f"  group filled to {added:,}/{len(users):,}", flush=True)
        return added, f"filling stopped at {added:,} members (request cap)"

    def remove_members_patch(self, ids: list[str]) -> dict[str, Any]:
        """A PATCH removing ``ids``: Entra's value list, or a filter path if that was refused."""
        if self.remove_style == "filter":
            selector = " or ".join(f'value eq "{i}"' for i in ids)
            operation: dict[str, Any] = {"op": "Remove", "path": f"members[{selector}]"}
        else:
            operation = {"op": "Remove", "path": "members", "value": [{"value": i} for i in ids]}
        return {"schemas": [PATCH_SCHEMA], "Operations": [operation]}

    async def probe_remove_style(self, connection: Connection, group_id: str, user_id: str) -> None:
        """Remove one member Entra's way (value list), else by filter path; then re-add it."""
        url = f"Groups/{group_id}"
        for style in ("value", "filter"):
            self.remove_style = style
            body = encode(self.remove_members_patch([user_id]))
            status, content = await connection.request("PATCH", url, body)
            if 200 <= status < 300:
                break
            print(f"  remove by {style} refused: HTTP {status}", flush=True)
        else:
            raise RuntimeError(describe_error("PATCH", url, status, content))
        add = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": user_id}]}],
        }
        status, content = await connection.request("PATCH", url, encode(add))
        if not 200 <= status < 300:
            raise RuntimeError(describe_error("PATCH", url, status, content))

    async def prepare_group_pair(self) -> GroupPair:
        """Create and fill the small and the large group (untimed), and the spare users."""
        need = GROUP_BATCH * self.max_level
        users = list(self.users)
        if len(users) < need + SMALL_GROUP_SIZE:
            users += await self.create_users(
                need + SMALL_GROUP_SIZE - len(users),
                self.fill_max_seconds,
                what="spare users for group_add_large",
            )
        if len(users) < need + SMALL_GROUP_SIZE:
            raise RuntimeError(f"only {len(users)} users for {need} spare ones and a group")
        # The spare users are a random sample of the range the group members come from, so
        # their ids fall between the members' ids, as in a directory whose groups grow over
        # time. (Spare users created after the members would get the largest ids of a server
        # with time-ordered ids, and each add would only append to the end of an index.)
        large_target = min(self.large_group_size, len(users) - need)
        pool = users[: large_target + need]
        rng = random.Random(f"{self.seed}-group-pair")
        spare_index = set(rng.sample(range(len(pool)), need))
        spare = [u for i, u in enumerate(pool) if i in spare_index]
        group_users = [u for i, u in enumerate(pool) if i not in spare_index]
        small_size = min(SMALL_GROUP_SIZE, large_target)
        started = time.perf_counter()
        deadline = started + self.fill_max_seconds
        async with self.connections(1) as (connection,):
            small_id = await self.create_group(connection, f"{self.prefix}-small")
            small, note = await self.fill_group(
                connection, small_id, group_users[:small_size], deadline
            )
            if note:
                raise RuntimeError(f"small group: {note}")
            await self.probe_remove_style(connection, small_id, group_users[0].id)
            large_id = await self.create_group(connection, f"{self.prefix}-large")
            print(f"filling a group with {large_target:,} members ...", flush=True)
            large, note = await self.fill_group(connection, large_id, group_users, deadline)
        fill_seconds = time.perf_counter() - started
        print(f"groups of {small:,} and {large:,} members ready in {fill_seconds:.1f}s", flush=True)
        if note:
            print(f"  {note}", flush=True)
        return GroupPair(small_id, small, large_id, large, large_target, fill_seconds, note, spare)

    async def measure_group_churn(
        self, size_label: str, group_id: str, group_size: int, concurrency: int, note: str
    ) -> list[OpResult]:
        """Each worker alternately adds and removes its own 100 spare users; both timed."""
        pair = self.group_pair
        assert pair is not None
        add = OpResult(op=f"group_add_100_{size_label}", concurrency=concurrency)
        remove = OpResult(op=f"group_remove_100_{size_label}", concurrency=concurrency)
        add_latencies: list[float] = []
        remove_latencies: list[float] = []
        sent = 0
        url = f"Groups/{group_id}"

        async def timed(
            connection: Connection, body: bytes, result: OpResult, latencies: list[float]
        ) -> None:
            t0 = time.perf_counter()
            status: int | None = None
            try:
                status, content = await connection.request("PATCH", url, body)
            except TransportError as exc:
                content = str(exc).encode()
            latencies.append(time.perf_counter() - t0)
            if status is None or not 200 <= status < 300:
                result.errors += 1
                if len(result.error_samples) < MAX_ERROR_SAMPLES:
                    result.error_samples.append(describe_error("PATCH", url, status, content))

        async with self.connections(concurrency) as opened:
            await asyncio.gather(*(c.connect() for c in opened), return_exceptions=True)
            cpu_before = self.cpu.sample()
            started = time.perf_counter()
            deadline = started + self.max_seconds

            async def worker(w: int, connection: Connection) -> None:
                nonlocal sent
                mine = [
                    {"value": u.id} for u in pair.spare[w * GROUP_BATCH : (w + 1) * GROUP_BATCH]
                ]
                add_body = encode(
                    {
                        "schemas": [PATCH_SCHEMA],
                        "Operations": [{"op": "Add", "path": "members", "value": mine}],
                    }
                )
                remove_body = encode(self.remove_members_patch([m["value"] for m in mine]))
                # Every add is followed by its remove, even past the caps, so the group is back
                # at its prepared size for the next measurement.
                while sent + 2 <= self.requests and time.perf_counter() < deadline:
                    sent += 2
                    await timed(connection, add_body, add, add_latencies)
                    await timed(connection, remove_body, remove, remove_latencies)

            await asyncio.gather(*(worker(w, c) for w, c in enumerate(opened)))
            seconds = time.perf_counter() - started
            other_cpu = self.cpu.other_cores(cpu_before, seconds)

        for result, latencies in ((add, add_latencies), (remove, remove_latencies)):
            latencies.sort()
            result.requests = len(latencies)
            result.seconds = seconds
            # Answered requests: a failed one is no throughput (every request a fast 401 measured
            # above bare). Errors are counted and shown beside the figures.
            ok = result.requests - result.errors
            result.rps = ok / seconds if seconds > 0 else 0.0
            result.p50_ms = percentile(latencies, 50) * 1000
            result.p99_ms = percentile(latencies, 99) * 1000
            result.note = note
            result.other_cpu = other_cpu
        if self.remove_style == "filter":
            remove.note += "; removes by members[value eq ...] path (value-list remove refused)"
        return [add, remove]

    async def run_group_add_large(self, concurrency: int) -> list[OpResult]:
        if self.group_pair is None:
            self.group_pair = await self.prepare_group_pair()
        pair = self.group_pair
        large_note = f"group of {pair.large_size:,} members"
        if pair.large_size < pair.large_target:
            large_note += f" (asked {pair.large_target:,}; {pair.fill_note})"
        small = await self.measure_group_churn(
            "small",
            pair.small_id,
            pair.small_size,
            concurrency,
            f"group of {pair.small_size:,} members",
        )
        large = await self.measure_group_churn(
            "large", pair.large_id, pair.large_size, concurrency, large_note
        )
        return small + large

    # -- measurement -----------------------------------------------------------------------

    async def measure(
        self, op: str, concurrency: int, plan: Planner, limit: int | None = None
    ) -> OpResult:
        """Send up to ``self.requests`` (or ``limit``) requests from ``concurrency`` workers."""
        result = OpResult(op=op, concurrency=concurrency)
        count = self.requests if limit is None else min(limit, self.requests)
        latencies: list[float] = []
        rng = random.Random(f"{self.seed}-{op}-{concurrency}")
        next_index = 0

        async with self.connections(concurrency) as opened:
            # Connections are opened before the clock starts: the figures are steady-state
            # keep-alive requests. A failed connect shows up as errors of the first requests.
            await asyncio.gather(*(c.connect() for c in opened), return_exceptions=True)
            cpu_before = self.cpu.sample()
            started = time.perf_counter()
            deadline = started + self.max_seconds

            async def worker(connection: Connection) -> None:
                nonlocal next_index
                while next_index < count and time.perf_counter() < deadline:
                    i = next_index
                    next_index += 1
                    method, url, doc = plan(i, rng)
                    body = None if doc is None else encode(doc)
                    t0 = time.perf_counter()
                    status: int | None = None
                    try:
                        status, content = await connection.request(method, url, body)
                    except TransportError as exc:
                        content = str(exc).encode()
                    latencies.append(time.perf_counter() - t0)
                    if status is None or not 200 <= status < 300:
                        result.errors += 1
                        if len(result.error_samples) < MAX_ERROR_SAMPLES:
                            sample = describe_error(method, url, status, content)
                            result.error_samples.append(sample)

            await asyncio.gather(*(worker(connection) for connection in opened))
            result.seconds = time.perf_counter() - started
            result.other_cpu = self.cpu.other_cores(cpu_before, result.seconds)

        latencies.sort()
        result.requests = len(latencies)
        ok = result.requests - result.errors  # a failed request is no throughput
        result.rps = ok / result.seconds if result.seconds > 0 else 0.0
        result.p50_ms = percentile(latencies, 50) * 1000
        result.p99_ms = percentile(latencies, 99) * 1000
        return result

    async def run_op(self, op: str, concurrency: int) -> list[OpResult]:
        """The results of one operation at one level (group_add_large gives four rows)."""
        if self.quiet_wait > 0:
            waited = await self.cpu.wait_quiet(self.quiet_wait)
            if waited > 1:
                print(f"  waited {waited:.0f}s for other processes to go quiet", flush=True)
        if op in OPS_NEEDING_USERS and not self.users:
            return [OpResult(op, concurrency, note="skipped: no seeded users")]
        if op == "group_add_large":
            try:
                return await self.run_group_add_large(concurrency)
            except (RuntimeError, TransportError, KeyError, ValueError) as exc:
                failed = OpResult(op, concurrency, errors=1, note="group preparation failed")
                failed.error_samples.append(str(exc)[:400])
                return [failed]
        return [await self.run_single_op(op, concurrency)]

    async def run_single_op(self, op: str, concurrency: int) -> OpResult:
        planners: dict[str, Callable[[], Planner]] = {
            "post_user": self.plan_post_user,
            "filter_username": self.plan_filter_username,
            "get_user": self.plan_get_user,
            "patch_user": self.plan_patch_user,
            "list_page": self.plan_list_page,
        }
        plan: Planner
        limit: int | None = None
        if op == "group_add_members":
            try:
                plan, limit = await self.plan_group_add_members(concurrency)
            except (RuntimeError, TransportError, KeyError, ValueError) as exc:
                failed = OpResult(op, concurrency, errors=1, note="group creation failed")
                failed.error_samples.append(str(exc)[:400])
                return failed
        elif op == "list_cursor":
            try:
                plan = await self.plan_list_cursor()
            except (RuntimeError, TransportError, KeyError, ValueError) as exc:
                failed = OpResult(op, concurrency, errors=1, note="collecting cursors failed")
                failed.error_samples.append(str(exc)[:400])
                return failed
        else:
            plan = planners[op]()
        return await self.measure(op, concurrency, plan, limit)


def format_table(results: list[OpResult]) -> str:
    """A fixed-width table of the results."""
    header = ("op", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms", "other", "note")
    rows = [header] + [
        (
            r.op,
            str(r.concurrency),
            str(r.requests),
            str(r.errors),
            f"{r.rps:.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.other_cpu:.2f}" if r.other_cpu >= 0 else "?",
            r.note,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i in (0, 8) else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/scim/v2")
    parser.add_argument("--token", default="", help="bearer token (none sent when empty)")
    parser.add_argument("--concurrency", default="8,32", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap per measurement")
    parser.add_argument("--seed-users", type=int, default=1000, help="users created first")
    parser.add_argument(
        "--seed-max-seconds", type=float, default=600.0, help="cap on the seeding phase"
    )
    parser.add_argument("--ops", default=",".join(ALL_OPS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the request mix")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="fast",
        help="HTTP client of the load generator: 'fast' (asyncio + httptools, default) or "
        "'httpx' (about 10x more client CPU per request; caps near 2,000 req/s)",
    )
    parser.add_argument(
        "--large-group-size",
        type=int,
        default=100_000,
        help="members of the large group of group_add_large (capped at the seeded users)",
    )
    parser.add_argument(
        "--group-fill-batch",
        type=int,
        default=1000,
        help="members per PATCH while filling the groups of group_add_large (untimed)",
    )
    parser.add_argument(
        "--group-fill-max-seconds",
        type=float,
        default=600.0,
        help="cap on preparing the groups (and spare users) of group_add_large",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="process id of the server, whose CPU is not counted as other load (other_cpu)",
    )
    parser.add_argument(
        "--server-cmdline-match",
        default="",
        help="processes whose command line contains this also count as the server's",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each measurement, wait up to this many seconds for other processes to "
        "use under a quarter of a core (0: do not wait)",
    )
    parser.add_argument("--label", default="", help="target name recorded in the JSON output")
    parser.add_argument("--json-out", default="", help="write the results as JSON to this file")
    args = parser.parse_args(argv)

    args.op_list = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = sorted(set(args.op_list) - set(ALL_OPS + EXTRA_OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; choose from {', '.join(ALL_OPS + EXTRA_OPS)}")
    try:
        args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 8,32")
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency levels must be positive")
    if args.requests < 1 or args.max_seconds <= 0:
        parser.error("--requests and --max-seconds must be positive")
    if args.large_group_size < 1 or args.group_fill_batch < 1 or args.group_fill_max_seconds <= 0:
        parser.error("--large-group-size, --group-fill-batch and the fill cap must be positive")
    return args


async def amain(args: argparse.Namespace) -> tuple[int, list[OpResult]]:
    """Seed, then measure; return the number of seeded users and the results."""
    bench = Benchmark(args)
    await bench.seed_users(args.seed_users, args.seed_max_seconds)
    results: list[OpResult] = []
    for op in args.op_list:
        for concurrency in args.levels:
            for result in await bench.run_op(op, concurrency):
                results.append(result)
                print(
                    f"{result.op:<22} c={concurrency:<3} {result.requests:>6} req  "
                    f"{result.errors:>5} err  {result.rps:>8.0f} req/s  "
                    f"p50 {result.p50_ms:>8.1f} ms  p99 {result.p99_ms:>8.1f} ms  "
                    f"other {result.other_cpu:>5.2f}  {result.note}",
                    flush=True,
                )
                for sample in result.error_samples:
                    print(f"    error: {sample}", flush=True)
    return len(bench.users), results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop  # the same event loop as the servers, when installed
    except ImportError:
        seeded, results = asyncio.run(amain(args))
    else:
        seeded, results = uvloop.run(amain(args))
    print()
    print(format_table(results))
    if args.json_out:
        document = {
            "label": args.label,
            "base_url": args.base_url,
            "seed_users": args.seed_users,
            "seeded_users": seeded,
            "requests": args.requests,
            "max_seconds": args.max_seconds,
            "client": args.client,
            "concurrency": args.levels,
            "results": [asdict(r) for r in results],
        }
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
