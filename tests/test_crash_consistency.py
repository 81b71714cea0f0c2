"""Nothing acknowledged is lost and nothing is half-written when the server process dies.

A real ``scimd serve`` on each database takes a bounded, concurrent Entra-style workload
(sixteen clients creating users, PATCHing them, adding and removing them as group members,
deleting them) and is killed with SIGKILL while requests are in flight. A new server is then
started on the same database, and what it serves, and what the tables hold, must be what the
answers the clients got imply:

- each client owns its users and sends its requests one after another, and stops at its first
  request that got no answer (the crash). So what each client's users look like is fully
  determined by its answered requests, except for that last request, which the server may or
  may not have applied: the client's users, their group memberships and their audit records
  must all match one of two worlds, "without it" or "with all of it", and the same one;
- every answered write has exactly its own audit record (by request id), and no audit record
  names a change the data does not show (or misses one it shows);
- a group's version counts the audited changes of its members, the ``counters`` table counts
  the rows, no membership names a resource that does not exist;
- the restarted server answers reads and writes as before.

The kill comes from a thread, a short seeded pause after a fixed number of answers, so it
lands anywhere in the server's work (now and then between a COMMIT and its reply: a request
applied but never answered). Where it lands varies from run to run; what is asserted does not,
as every assertion allows both outcomes for each request that got no answer. On SQLite the file
must also pass ``PRAGMA integrity_check``. ``SCIMD_FUZZ_SEEDS=N`` runs N workloads per database.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
import pytest
import sqlalchemy as sa

from scimd.store.tables import audit, counters, groups, members, users
from support.live_server import create_app, start_server

PATCH_OP: Final = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA: Final = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA: Final = "urn:ietf:params:scim:schemas:core:2.0:Group"
WORKERS: Final = 16
GROUP_COUNT: Final = 4
MAX_REQUESTS: Final = 1_500
WORKLOAD_TIMEOUT_SECONDS: Final = 60.0
SESSIONS_GONE_TIMEOUT_SECONDS: Final = 20.0

# One fixed seed in CI; SCIMD_FUZZ_SEEDS=N runs seeds 1..N locally. The seed picks the clients'
# requests and after how many answers the server is killed.
SEEDS = list(range(1, 1 + (int(os.environ.get("SCIMD_FUZZ_SEEDS", "0")) or 1)))


# --------------------------------------------------------------------------------------------
# The model: what each client's users look like after the requests it knows were applied
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserState:
    """One user as its owner last saw it acknowledged (``id`` None: created by a request that
    got no answer, so its id is unknown)."""

    id: str | None
    display: str
    active: bool
    version: int
    groups: frozenset[str]

    def observable(self) -> tuple[str, bool, int, frozenset[str]]:
        return (self.display, self.active, self.version, self.groups)


World = dict[str, UserState | None]  # userName -> state (None: deleted)
# An audit record in the model's terms: (operation, resource type, userName or group id, what).
AuditKey = tuple[str, str, str, Any]


@dataclass
class Call:
    """One request a client sent, and what came back."""

    worker: int
    seq: int
    kind: str  # create | patch | add | remove | delete
    name: str  # the userName it is about
    method: str
    path: str
    body: dict[str, Any] | None
    group: str | None = None
    display: str | None = None
    active: bool | None = None
    status: int | None = None
    request_id: str | None = None
    etag: str | None = None
    response: dict[str, Any] | None = None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        outcome = f"HTTP {self.status}" if self.status is not None else f"no answer ({self.error})"
        target = f" group {self.group}" if self.group else ""
        return (
            f"client {self.worker} #{self.seq} {self.kind} {self.name}{target} "
            f"({self.method} {self.path}, request id {self.request_id}): {outcome}"
        )


def apply(world: World, call: Call) -> World:
    """The world after ``call`` was applied (``call`` is valid in ``world``)."""
    after = dict(world)
    state = world.get(call.name)
    if call.kind == "create":
        assert call.display is not None and call.active is not None
        rid = str(call.response["id"]) if call.response is not None else None
        after[call.name] = UserState(rid, call.display, call.active, 1, frozenset())
        return after
    assert state is not None, call.describe()
    if call.kind == "patch":
        assert call.display is not None and call.active is not None
        after[call.name] = replace(
            state, display=call.display, active=call.active, version=state.version + 1
        )
    elif call.kind == "add":
        assert call.group is not None
        after[call.name] = replace(state, groups=state.groups | {call.group})
    elif call.kind == "remove":
        assert call.group is not None
        after[call.name] = replace(state, groups=state.groups - {call.group})
    elif call.kind == "delete":
        after[call.name] = None
    else:  # pragma: no cover
        raise AssertionError(call.kind)
    return after


def own_version(tag: str | None) -> str | None:
    """A user's ETag without the digest of its groups (``W/"3.1a2b"`` -> ``W/"3"``): the
    version counted here is the user's own."""
    if tag is None or "." not in tag:
        return tag
    return tag.split(".", 1)[0] + '"'


def audit_keys(world: World, call: Call) -> list[AuditKey]:
    """The audit records ``call`` writes when applied to ``world``: one, and for a delete one
    more for each group the user left (``member.delete``)."""
    if call.kind in ("create", "patch"):
        return [(call.kind, "User", call.name, None)]
    if call.kind in ("add", "remove"):
        assert call.group is not None
        return [("patch", "Group", call.group, ((call.kind, call.name),))]
    state = world[call.name]
    assert state is not None
    left: list[AuditKey] = [
        ("member.delete", "Group", g, (("remove", call.name),)) for g in sorted(state.groups)
    ]
    return [("delete", "User", call.name, state.groups), *left]


@dataclass
class Worker:
    """One client: its own users, its requests one after another."""

    index: int
    rng: random.Random
    world: World = field(default_factory=dict)  # acknowledged requests only
    calls: list[Call] = field(default_factory=list)
    audit: Counter[AuditKey] = field(default_factory=Counter)
    unanswered: Call | None = None
    mismatched_etags: list[str] = field(default_factory=list)
    _users: int = 0

    def names(self) -> set[str]:
        return {c.name for c in self.calls}

    def next_call(self, group_ids: list[str]) -> Call:
        live = [n for n, s in self.world.items() if s is not None]
        seq = len(self.calls)
        roll = self.rng.random()
        if len(live) < 3 or roll < 0.2:
            name = f"crash-w{self.index:02d}-u{self._users:03d}@example.com"
            self._users += 1
            display = f"W{self.index} #{seq} created"
            active = self.rng.random() < 0.8
            body = {
                "schemas": [USER_SCHEMA],
                "userName": name,
                "displayName": display,
                "active": active,
                "externalId": f"ext-{name}",
            }
            return Call(
                self.index, seq, "create", name, "POST", "/Users", body,
                display=display, active=active,
            )  # fmt: skip
        name = self.rng.choice(sorted(live))
        state = self.world[name]
        assert state is not None and state.id is not None
        if roll < 0.5:
            display = f"W{self.index} #{seq} patched"  # always a change: no audit-less no-op
            ops: list[dict[str, Any]] = [{"op": "Replace", "path": "displayName", "value": display}]
            active = state.active
            if self.rng.random() < 0.5:
                active = not active
                ops.append({"op": "Replace", "path": "active", "value": str(active)})
            body = {"schemas": [PATCH_OP], "Operations": ops}
            return Call(
                self.index, seq, "patch", name, "PATCH", f"/Users/{state.id}", body,
                display=display, active=active,
            )  # fmt: skip
        if roll < 0.88:
            group = self.rng.choice(group_ids)
            # Only real changes: a re-sent add or a remove of a non-member writes nothing.
            kind = "remove" if group in state.groups else "add"
            op = {"op": kind.capitalize(), "path": "members", "value": [{"value": state.id}]}
            body = {"schemas": [PATCH_OP], "Operations": [op]}
            return Call(self.index, seq, kind, name, "PATCH", f"/Groups/{group}", body, group=group)
        return Call(self.index, seq, "delete", name, "DELETE", f"/Users/{state.id}", None)

    def acknowledge(self, call: Call) -> None:
        self.audit.update(audit_keys(self.world, call))
        self.world = apply(self.world, call)
        state = self.world.get(call.name)
        tagged = call.kind in ("create", "patch")
        if tagged and state is not None and own_version(call.etag) != f'W/"{state.version}"':
            self.mismatched_etags.append(f"{call.describe()}: ETag {call.etag}")

    def worlds(self) -> list[tuple[str, World, Counter[AuditKey]]]:
        """Without the unanswered request, and with it (if there was one)."""
        out = [("without its unanswered request", self.world, self.audit)]
        if self.unanswered is not None:
            call = self.unanswered
            with_it = apply(self.world, call)
            out.append(
                (
                    f"with its unanswered request ({call.describe()})",
                    with_it,
                    self.audit + Counter(audit_keys(self.world, call)),
                )
            )
        return out


# --------------------------------------------------------------------------------------------
# The workload, and the kill
# --------------------------------------------------------------------------------------------


@dataclass
class Workload:
    workers: list[Worker]
    killed_after: int | None = None  # answers received when the server was killed
    in_flight_at_kill: int = 0


class Killer:
    """SIGKILLs the server from its own thread, ``delay`` seconds after it is armed.

    Killed from the clients' event loop, right after an answer came, the server was always
    between two requests of its own: none of the requests left without an answer had been
    applied. From a thread, after a short pause, the kill falls anywhere in the server's work
    (parsing, writing, committing, replying)."""

    def __init__(self, pid: int, delay: float, workload: Workload, progress: Any) -> None:
        self.pid = pid
        self.delay = delay
        self.workload = workload
        self.progress = progress  # () -> (answered, in flight)
        self.armed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="killer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.armed.wait()
        time.sleep(self.delay)
        os.kill(self.pid, signal.SIGKILL)
        answered, in_flight = self.progress()
        self.workload.killed_after = answered
        self.workload.in_flight_at_kill = in_flight

    def finish(self) -> None:
        self.armed.set()  # the workload may have failed before it was due
        self.thread.join()


async def _run_workload(
    base_url: str, token: str, group_ids: list[str], pid: int, seed: int, kill_after: int
) -> Workload:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    limits = httpx.Limits(max_connections=WORKERS + 4, max_keepalive_connections=WORKERS + 4)
    workload = Workload([Worker(i, random.Random(f"{seed}-{i}")) for i in range(WORKERS)])
    answered = 0
    budget = MAX_REQUESTS
    in_flight = 0
    delay = random.Random(f"{seed}-delay").uniform(0, 0.008)
    killer = Killer(pid, delay, workload, lambda: (answered, in_flight))

    async def client(c: httpx.AsyncClient, worker: Worker) -> None:
        nonlocal answered, budget, in_flight
        while budget > 0:
            budget -= 1
            call = worker.next_call(group_ids)
            worker.calls.append(call)
            in_flight += 1
            try:
                r = await c.request(call.method, call.path, json=call.body)
            except httpx.TransportError as e:  # sent or not, applied or not: unknown
                call.error = f"{type(e).__name__}: {e}"
                worker.unanswered = call
                return
            finally:
                in_flight -= 1
            call.status = r.status_code
            call.request_id = r.headers.get("x-request-id")
            call.etag = r.headers.get("etag")
            if r.content:
                try:
                    call.response = orjson.loads(r.content)
                except orjson.JSONDecodeError:
                    call.error = f"not JSON: {r.text[:200]!r}"
            if not call.acknowledged:
                worker.unanswered = call  # not expected at all; asserted on later
                return
            worker.acknowledge(call)
            answered += 1
            if answered == kill_after:
                killer.armed.set()

    try:
        async with (
            asyncio.timeout(WORKLOAD_TIMEOUT_SECONDS),
            httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=15) as c,
        ):
            await asyncio.gather(*(client(c, w) for w in workload.workers))
    finally:
        killer.finish()
    return workload


def _wait_for_sessions_to_end(database_url: str) -> None:
    """On PostgreSQL, wait until the killed server's sessions are gone: a statement it sent
    just before dying still runs (and may commit) until its backend notices the client left."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + SESSIONS_GONE_TIMEOUT_SECONDS
    try:
        with admin.connect() as conn:
            while True:
                left: int = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"
                        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    ),
                    {"db": url.database},
                ).scalar_one()
                if left == 0:
                    return
                assert time.monotonic() < deadline, (
                    f"{left} sessions of the killed server still open after "
                    f"{SESSIONS_GONE_TIMEOUT_SECONDS}s"
                )
                time.sleep(0.05)
    finally:
        admin.dispose()


# --------------------------------------------------------------------------------------------
# What the database holds after the restart
# --------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    users: dict[str, dict[str, Any]]  # userName -> {id, display, active, version}
    user_ids: set[str]
    groups: dict[str, dict[str, Any]]  # group id -> {pk, version, name}
    memberships: set[tuple[str, str]]  # (group id, member id), for groups that exist
    dangling_members: list[tuple[int, str]]  # (group pk, member id) naming nothing
    audit_rows: list[dict[str, Any]]
    counted: dict[str, int]  # counters: name -> sum
    counts: dict[str, int]  # count(*) per resource type
    integrity: list[str]  # SQLite's integrity_check ("ok"), or nothing on PostgreSQL


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _snapshot(database_url: str) -> Snapshot:
    engine = sa.create_engine(database_url)
    integrity: list[str] = []
    try:
        with engine.connect() as conn, conn.begin():
            if engine.dialect.name == "sqlite":  # every page, index entry and the free list
                integrity = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check")]
            user_rows = conn.execute(
                sa.select(
                    users.c.id, users.c.user_name, users.c.active, users.c.version, users.c.doc
                )
            ).all()
            group_rows = conn.execute(
                sa.select(groups.c.pk, groups.c.id, groups.c.version, groups.c.display_name)
            ).all()
            member_rows = [
                (int(r.group_pk), str(r.member_id))
                for r in conn.execute(sa.select(members.c.group_pk, members.c.member_id))
            ]
            audit_rows = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(audit).where(audit.c.resource_type.in_(["User", "Group"]))
                )
            ]
            total = sa.func.sum(counters.c.value).label("total")
            counted = {
                str(r.name): int(r.total)
                for r in conn.execute(sa.select(counters.c.name, total).group_by(counters.c.name))
            }
    finally:
        engine.dispose()
    by_pk = {r.pk: r.id for r in group_rows}
    user_ids = {r.id for r in user_rows}
    memberships: set[tuple[str, str]] = set()
    dangling: list[tuple[int, str]] = []
    for pk, mid in member_rows:
        if pk in by_pk and (mid in user_ids or mid in by_pk.values()):
            memberships.add((by_pk[pk], mid))
        else:
            dangling.append((pk, mid))
    for row in audit_rows:
        row["detail"] = _json(row["detail"])
    return Snapshot(
        users={
            r.user_name: {
                "id": r.id,
                "display": _json(r.doc).get("displayName"),
                "active": r.active,
                "version": r.version,
            }
            for r in user_rows
        },
        user_ids=user_ids,
        groups={
            r.id: {"pk": r.pk, "version": r.version, "name": r.display_name} for r in group_rows
        },
        memberships=memberships,
        dangling_members=dangling,
        audit_rows=audit_rows,
        counted=counted,
        counts={"User": len(user_rows), "Group": len(group_rows)},
        integrity=integrity,
    )


def _user_view(snap: Snapshot, names: Iterable[str]) -> dict[str, Any]:
    """The users ``names`` as the database holds them, in the model's terms."""
    out: dict[str, Any] = {}
    for name in sorted(names):
        row = snap.users.get(name)
        if row is None:
            out[name] = None
            continue
        in_groups = frozenset(g for g, m in snap.memberships if m == row["id"])
        out[name] = (row["display"], row["active"], row["version"], in_groups)
    return out


def _world_view(world: World, names: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(names):
        state = world.get(name)
        out[name] = None if state is None else state.observable()
    return out


def _audit_key_of(row: Mapping[str, Any], name_of: Mapping[str, str]) -> AuditKey | None:
    """An audit record in the model's terms (None: it names an id nobody knows)."""
    op, kind, rid = row["operation"], row["resource_type"], row["resource_id"]
    detail = row["detail"]
    if kind == "User":
        if rid not in name_of:
            return None
        if op == "delete":
            left = frozenset((detail or {}).get("groups", []))
            return (op, kind, name_of[rid], left)
        return (op, kind, name_of[rid], None)
    changes = []
    for change in (detail or {}).get("members", []):
        for mid in change["ids"]:
            if mid not in name_of:
                return None
            changes.append((change["op"], name_of[mid]))
    return (op, kind, rid, tuple(sorted(changes)))


def _diff(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(expected) | set(found), key=str)
    return [
        f"  {k}: expected {expected.get(k)!r}, found {found.get(k)!r}"
        for k in keys
        if expected.get(k) != found.get(k)
    ]


# --------------------------------------------------------------------------------------------
# The checks, each returning what it found wrong
# --------------------------------------------------------------------------------------------


def _ids_by_name(acked: list[Call], snap: Snapshot, problems: list[str]) -> dict[str, str]:
    """Every user id an answer, a row or an audit record gave, with its userName (they must
    agree: an id is never reused)."""
    name_of: dict[str, str] = {}
    for call in acked:
        if call.kind == "create":
            assert call.response is not None
            name_of[str(call.response["id"])] = call.name
    for name, row in snap.users.items():
        if name_of.setdefault(row["id"], name) != name:
            problems.append(f"user id {row['id']} is {name}, answered as {name_of[row['id']]}")
    for row in snap.audit_rows:
        if row["operation"] == "create" and row["resource_type"] == "User":
            named = str((row["detail"] or {}).get("userName"))
            if name_of.setdefault(row["resource_id"], named) != named:
                problems.append(f"the audit record of {row['resource_id']} names {named}")
    return name_of


def _audit_by_worker(
    workers: list[Worker],
    snap: Snapshot,
    name_of: Mapping[str, str],
    setup_requests: set[str],
    problems: list[str],
) -> dict[int, Counter[AuditKey]]:
    """The audit records of the workload, in the model's terms, by the client whose users
    they name; a record naming nobody's user (or several clients') is a problem."""
    owner = {call.name: w.index for w in workers for call in w.calls}
    found: dict[int, Counter[AuditKey]] = {w.index: Counter() for w in workers}
    unattributed = []
    for row in snap.audit_rows:
        if row["request_id"] in setup_requests:
            continue
        key = _audit_key_of(row, name_of)
        if key is None:
            unattributed.append(row)
            continue
        names = [key[2]] if key[1] == "User" else [name for _, name in key[3]]
        owners = {owner.get(name) for name in names}
        index = owners.pop() if len(owners) == 1 else None
        if index is None:
            unattributed.append(row)
            continue
        found[index][key] += 1
    if unattributed:
        problems.append(
            "audit records of changes nobody asked for, or of unknown resources: "
            + repr(unattributed[:5])
        )
    return found


def _check_worlds(
    workers: list[Worker],
    snap: Snapshot,
    audit_found: Mapping[int, Counter[AuditKey]],
    problems: list[str],
) -> Counter[str]:
    """Each client's users, their memberships and their audit records are all "without its
    unanswered request" or all "with it"; returns how many clients ended in each."""
    seen: Counter[str] = Counter()
    for w in workers:
        names = w.names()
        data = _user_view(snap, names)
        log = audit_found[w.index]
        candidates = w.worlds()
        views = [_world_view(world, names) for _, world, _ in candidates]
        data_fits = [i for i, view in enumerate(views) if view == data]
        audit_fits = [i for i, (_, _, expected) in enumerate(candidates) if expected == log]
        if data_fits and data_fits == audit_fits:
            seen["applied" if data_fits[0] else "not applied"] += 1
            continue
        report = [f"client {w.index}: the data fits {data_fits}, the audit log {audit_fits} of:"]
        for i, (label, _, expected) in enumerate(candidates):
            audit_diff = {
                str(k): f"expected {expected[k]}, found {log[k]}"
                for k in set(expected) | set(log)
                if expected[k] != log[k]
            }
            report += [f" [{i}] {label}", "  data:", *_diff(views[i], data)]
            report += [f"  audit: {audit_diff}"]
        problems.append("\n".join(report))
    return seen


def _check_acknowledged_audit(
    workers: list[Worker],
    by_request: Mapping[str | None, list[dict[str, Any]]],
    name_of: Mapping[str, str],
) -> list[str]:
    """Each answered write has exactly its audit records with its request id: those it
    writes in the world it was applied to."""
    problems = []
    for w in workers:
        world: World = {}
        for call in w.calls:
            if not call.acknowledged:
                break
            found = [_audit_key_of(r, name_of) for r in by_request.get(call.request_id, [])]
            expected = audit_keys(world, call)
            if sorted(found, key=str) != sorted(expected, key=str):
                problems.append(f"{call.describe()}: audit records {found}, expected {expected}")
            world = apply(world, call)
    return problems


def _check_creates_and_deletes(snap: Snapshot, name_of: Mapping[str, str]) -> list[str]:
    """An existing user has one create record and no delete; a user whose creation is
    recorded and which does not exist has exactly one delete record."""
    problems = []
    by_op: dict[str, Counter[str]] = {"create": Counter(), "delete": Counter()}
    for r in snap.audit_rows:
        if r["resource_type"] == "User" and r["operation"] in by_op:
            by_op[r["operation"]][r["resource_id"]] += 1
    creates, deletes = by_op["create"], by_op["delete"]
    for name, row in snap.users.items():
        if creates[row["id"]] != 1 or deletes[row["id"]]:
            problems.append(
                f"user {name} ({row['id']}) exists, with {creates[row['id']]} create and "
                f"{deletes[row['id']]} delete records"
            )
    for rid, n in creates.items():
        if rid not in snap.user_ids and deletes[rid] != 1:
            problems.append(
                f"the creation of user {rid} ({name_of.get(rid)}) is recorded {n} times and "
                f"its deletion {deletes[rid]} times, and it does not exist: a half-written write"
            )
    return problems


def _check_groups_and_counters(snap: Snapshot, group_ids: list[str]) -> list[str]:
    """No membership names a missing resource; a group's version is 1 + its audited changes
    (member PATCHes, and deletes of members, whose records name it); counters count rows."""
    problems = []
    missing = set(group_ids) - set(snap.groups)
    if missing:
        problems.append(f"groups created before the workload are gone: {sorted(missing)}")
    if snap.dangling_members:
        problems.append(f"memberships naming nothing: {snap.dangling_members[:10]}")
    for gid, g in snap.groups.items():
        changes = sum(
            1
            for r in snap.audit_rows
            if (r["operation"] == "patch" and r["resource_id"] == gid)
            or (
                r["operation"] == "delete"
                and r["resource_type"] == "User"
                and gid in ((r["detail"] or {}).get("groups") or [])
            )
        )
        if g["version"] != 1 + changes:
            problems.append(
                f"group {g['name']} is at version {g['version']} after {changes} audited changes"
            )
    for kind in ("User", "Group"):
        if snap.counted.get(kind) != snap.counts[kind]:
            problems.append(
                f"the counters say {snap.counted.get(kind)} {kind}s, the table holds "
                f"{snap.counts[kind]}"
            )
    return problems


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_a_killed_server_loses_nothing_acknowledged_and_half_writes_nothing(
    any_database_url: str, tmp_path: Path, seed: int
) -> None:
    url = any_database_url
    kill_after = random.Random(seed).randrange(300, 900)
    creds = create_app(url, "entra")
    headers = {"Authorization": f"Bearer {creds.client_secret}"}
    setup_requests: set[str] = set()

    with start_server(url, log_dir=tmp_path / "first") as first:
        group_ids = []
        with httpx.Client(base_url=first.scim_url, headers=headers, timeout=30) as c:
            for g in range(GROUP_COUNT):
                r = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": f"G{g}"})
                assert r.status_code == 201, r.text
                group_ids.append(r.json()["id"])
                setup_requests.add(r.headers["x-request-id"])
        workload = asyncio.run(
            _run_workload(
                first.scim_url, creds.client_secret, group_ids, first.process.pid, seed, kill_after
            )
        )
    assert first.process.returncode == -signal.SIGKILL, (
        first.process.returncode,
        first.stderr_text()[-3000:],
    )
    _wait_for_sessions_to_end(url)

    workers = workload.workers
    calls = [call for w in workers for call in w.calls]
    acked = [call for call in calls if call.acknowledged]
    summary = (
        f"{len(calls)} requests, {len(acked)} acknowledged, killed after "
        f"{workload.killed_after} answers with {workload.in_flight_at_kill} in flight"
    )
    # Every request was valid: anything but a 2xx before the kill is wrong in itself.
    problems = [
        f"refused before the kill: {call.describe()}: {call.response}"
        for call in calls
        if call.status is not None and not call.acknowledged
    ]
    problems += [m for w in workers for m in w.mismatched_etags]

    with start_server(url, log_dir=tmp_path / "second") as second:
        snap = _snapshot(url)
        if snap.integrity not in ([], ["ok"]):
            problems.append(f"SQLite integrity_check: {snap.integrity[:20]}")
        name_of = _ids_by_name(acked, snap, problems)
        audit_found = _audit_by_worker(workers, snap, name_of, setup_requests, problems)
        outcomes = _check_worlds(workers, snap, audit_found, problems)
        by_request: dict[str | None, list[dict[str, Any]]] = {}
        for row in snap.audit_rows:
            by_request.setdefault(row["request_id"], []).append(row)
        problems += _check_acknowledged_audit(workers, by_request, name_of)
        problems += _check_creates_and_deletes(snap, name_of)
        problems += _check_groups_and_counters(snap, group_ids)

        # The restarted server serves what the database holds, and works.
        with httpx.Client(base_url=second.scim_url, headers=headers, timeout=30) as c:
            for kind in ("User", "Group"):
                total = c.get(f"/{kind}s", params={"count": 0}).json()["totalResults"]
                if total != snap.counts[kind]:
                    problems.append(f"GET /{kind}s: totalResults {total}, {snap.counts[kind]} rows")
            problems += asyncio.run(_served(second.scim_url, headers, snap, name_of, group_ids))
            problems += _still_works(c, group_ids)

    unanswered = Counter(str(w.unanswered.error).split(":")[0] for w in workers if w.unanswered)
    summary += f"; unanswered requests {dict(outcomes)}, by error {dict(unanswered)}"
    print(summary)  # shown with -s
    assert not problems, summary + "\n" + "\n".join(problems)
    # The kill came while the workload ran: every client ended on a request with no answer.
    assert workload.killed_after is not None and workload.killed_after >= kill_after, summary
    assert all(w.unanswered is not None for w in workers), summary
    assert sum(outcomes.values()) == WORKERS, summary


async def _served(
    base_url: str,
    headers: dict[str, str],
    snap: Snapshot,
    name_of: Mapping[str, str],
    group_ids: list[str],
) -> list[str]:
    """GET every user that ever had an id, and every group: what the database holds."""
    problems: list[str] = []
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as c:
        sem = asyncio.Semaphore(16)

        async def user(rid: str, name: str) -> None:
            async with sem:
                r = await c.get(f"/Users/{rid}")
            row = snap.users.get(name)
            if row is None or row["id"] != rid:
                if r.status_code != 404:
                    problems.append(f"GET /Users/{rid} ({name}, not in the table): {r.text}")
                return
            if r.status_code != 200:
                problems.append(f"GET /Users/{rid} ({name}): HTTP {r.status_code} {r.text}")
                return
            doc = r.json()
            got = (
                doc.get("userName"),
                doc.get("displayName"),
                doc.get("active"),
                own_version(r.headers.get("etag")),
                {g["value"] for g in doc.get("groups", [])},
            )
            want = (
                name,
                row["display"],
                row["active"],
                f'W/"{row["version"]}"',
                {g for g, m in snap.memberships if m == rid},
            )
            if got != want:
                problems.append(f"GET /Users/{rid}: {got}, the database holds {want}")

        async def group(gid: str) -> None:
            async with sem:
                r = await c.get(f"/Groups/{gid}")
            if r.status_code != 200:
                problems.append(f"GET /Groups/{gid}: HTTP {r.status_code} {r.text}")
                return
            got = {m["value"] for m in r.json().get("members", [])}
            want = {m for g, m in snap.memberships if g == gid}
            if got != want or r.headers.get("etag") != f'W/"{snap.groups[gid]["version"]}"':
                problems.append(
                    f"GET /Groups/{gid}: members {sorted(got)} etag {r.headers.get('etag')}, "
                    f"the database holds {sorted(want)} at version {snap.groups[gid]['version']}"
                )

        await asyncio.gather(
            *(user(rid, name) for rid, name in name_of.items()), *(group(g) for g in group_ids)
        )
    return problems


def _still_works(c: httpx.Client, group_ids: list[str]) -> list[str]:
    """Writes and reads on the restarted server, as Entra sends them."""
    problems = []
    r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "after-restart@example.com"})
    if r.status_code != 201:
        return [f"POST after the restart: HTTP {r.status_code} {r.text}"]
    rid = r.json()["id"]
    op = {"op": "Add", "path": "members", "value": [{"value": rid}]}
    steps = [
        ("GET user", c.get(f"/Users/{rid}"), 200),
        (
            "PATCH user",
            c.patch(
                f"/Users/{rid}",
                json={
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                },
            ),
            200,
        ),
        (
            "PATCH group",
            c.patch(f"/Groups/{group_ids[0]}", json={"schemas": [PATCH_OP], "Operations": [op]}),
            204,
        ),
    ]
    for label, response, status in steps:
        if response.status_code != status:
            problems.append(f"{label} after the restart: HTTP {response.status_code}")
    members_now = {m["value"] for m in c.get(f"/Groups/{group_ids[0]}").json().get("members", [])}
    if rid not in members_now:
        problems.append("the member added after the restart is not in the group")
    filtered = c.get("/Users", params={"filter": 'userName eq "after-restart@example.com"'})
    if filtered.json().get("totalResults") != 1:
        problems.append(f"filter after the restart: {filtered.text}")
    if c.delete(f"/Users/{rid}").status_code != 204:
        problems.append("DELETE after the restart failed")
    return problems
