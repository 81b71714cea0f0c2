"""Bulk operations (RFC 7644 §3.7): sequential, each in its own transaction, with ``bulkId``
references resolved as the resources they name are created."""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scimd.scim.errors import (
    InternalError,
    InvalidSyntax,
    InvalidValue,
    PayloadTooLarge,
    ScimError,
)
from scimd.scim.resource import resource_id
from scimd.scim.values import shown_json
from scimd.store.audit import Actor
from scimd.store.directory import Gate
from scimd.store.engine import connection_ended, is_unavailable
from scimd.web.outage import database_unavailable, unavailable_detail

if TYPE_CHECKING:
    from scimd.web.scim import Scim

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
_PREFIX = "bulkId:"
log = logging.getLogger("scimd.web")
_RESOURCES = {"users": "User", "groups": "Group"}
_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Unresolved(Exception):
    """A ``bulkId:`` reference to an operation that has not (yet) created its resource."""


class _Refs:
    """The bulkIds the request declares, and the ids of the resources their POSTs created.

    A reference is a whole string ``bulkId:<id>`` (a member's or manager's ``value``, a path
    segment) naming an operation of this request; text that merely contains ``bulkId:``, or
    names no operation here, is data and stays as it is.
    """

    def __init__(self, declared: dict[str, int], creating: set[str]) -> None:
        self.declared = declared
        self.creating = creating
        self.created: dict[str, str] = {}
        self.failed: set[str] = set()

    def resolve_op(self, op: dict[str, Any]) -> tuple[Any, Any]:
        """An operation's path and data with their references replaced."""
        return self._walk_op(op, self._resolve)

    def references(self, op: dict[str, Any]) -> list[str]:
        """The declared bulkIds an operation references, in its path and data (in order):
        found by the same walk that replaces them, so the two cannot disagree."""
        found: dict[str, None] = {}

        def note(value: str, within: str) -> str:
            if value.startswith(_PREFIX) and value[len(_PREFIX) :] in self.declared:
                found[value[len(_PREFIX) :]] = None
            return value

        self._walk_op(op, note)
        return list(found)

    def _walk_op(self, op: dict[str, Any], on_str: _OnStr) -> tuple[Any, Any]:
        """``on_str`` applied to every path segment and every string of the data, except in
        the read-only ``id`` and ``meta`` (a POST's ``"id": "bulkId:me"`` was taken for a
        reference to itself)."""
        path = op.get("path")
        if isinstance(path, str):
            parts = path.split("/")
            for j, part in enumerate(parts[:-1]):
                if part.startswith(_PREFIX):
                    # A bulkId holding "/" ("hr/alice", which a body's reference resolves)
                    # is the rest of the path; it was cut at its "/": "names no operation".
                    whole = "/".join(parts[j:])
                    if whole[len(_PREFIX) :] in self.declared:
                        parts = [*parts[:j], whole]
                    break
            path = "/".join(on_str(part, "/") for part in parts)
        data = op.get("data")
        if isinstance(data, dict):
            data = {
                k: v if k.lower() in _NOT_REFERENCES else self._walk(v, _within(k, ""), on_str)
                for k, v in data.items()
            }
        else:
            data = self._walk(data, "", on_str)
        return path, data

    def _walk(self, value: Any, within: str, on_str: _OnStr) -> Any:
        """``value`` rebuilt with ``on_str`` applied to its strings; ``within`` is the
        attribute holding it ("/" for a path segment, "manager" for the manager)."""
        if isinstance(value, str):
            return on_str(value, within)
        if isinstance(value, list):
            return [self._walk(v, within, on_str) for v in value]
        if isinstance(value, dict):
            target = _patch_target(value)
            operation = _is_patch_operation(value)
            return {
                k: _in_filters(v, on_str)
                if operation and k.lower() == "path" and isinstance(v, str)
                else self._walk(
                    v, target if target and k.lower() == "value" else _within(k, within), on_str
                )
                for k, v in value.items()
            }
        return value

    def _resolve(self, value: str, within: str) -> str:
        """A string with its reference replaced. A ``bulkId:`` that names no operation is a
        409 in a path and as the manager (stored as sent it was a manager of
        ``bulkId:nope``), and data anywhere else (a title or an address may read so); a
        member naming no resource is refused as an unknown id."""
        if not value.startswith(_PREFIX):
            return value
        key = value[len(_PREFIX) :]
        if key not in self.declared:
            # A member's id and a filter's literal (``members[value eq "bulkId:u"]``) too: a
            # remove naming a mistyped reference answered 200 and removed no one.
            if within in ("/", "manager", "members", "filter"):
                raise InvalidValue(
                    f"'{value}' names no operation of this request (no operation has bulkId"
                    f" '{key}')",
                    status=409,
                )
            return value  # text that looks like one
        if key in self.created:
            return self.created[key]
        if key not in self.creating:
            raise InvalidValue(
                f"bulkId '{key}' names an operation that creates nothing (only a POST"
                " creates a resource a reference can name)",
                status=409,
            )
        if key in self.failed:
            raise InvalidValue(
                f"bulkId '{key}' names an operation that failed, so it has no resource",
                status=409,
            )
        raise Unresolved(key)


_OnStr = Callable[[str, str], str]
_NOT_REFERENCES = frozenset({"id", "meta"})


def _is_patch_operation(obj: dict[str, Any]) -> bool:
    return any(k.lower() == "op" for k in obj) and any(k.lower() == "path" for k in obj)


# A quoted literal of a value filter in a PATCH path: ``members[value eq "bulkId:u"]``.
_QUOTED_REFERENCE = re.compile(r'"(bulkId:[^"\\]*)"')


def _in_filters(path: str, on_str: _OnStr) -> str:
    """A PATCH path with the references in its filters' literals replaced: removing
    ``members[value eq "bulkId:u"]`` was answered 200 and removed nothing."""
    return _QUOTED_REFERENCE.sub(lambda m: f'"{on_str(m.group(1), "filter")}"', path)


def _patch_target(obj: dict[str, Any]) -> str:
    """ "manager" for a PATCH operation whose path is the manager or its ``value`` (its
    ``value`` names it), "members" for one whose path is the members."""
    path = next((v for k, v in obj.items() if k.lower() == "path"), None)
    if not isinstance(path, str) or not any(k.lower() == "op" for k in obj):
        return ""
    name = path.strip().lower().removesuffix(".value")
    if name == "manager" or name.endswith(":manager"):
        return "manager"
    return "members" if name == "members" or name.endswith(":group:members") else ""


def _within(key: str, parent: str) -> str:
    """What a value under ``key`` is part of: the manager (``manager``, its URN-qualified
    name, or the ``value`` of a manager object), a member (the ``value`` of a member), or
    ``key`` itself."""
    name = key.lower()
    if name == "manager" or name.endswith(":manager") or (name == "value" and parent == "manager"):
        return "manager"
    if name == "value" and parent == "members":
        return "members"  # a member's id
    if name.endswith(":group:members"):
        return "members"  # urn:ietf:params:scim:schemas:core:2.0:Group:members
    return name


def _declared(ops: list[Any]) -> dict[str, int]:
    """Each operation's ``bulkId``; one used twice makes the request ambiguous (§3.7)."""
    seen: dict[str, int] = {}
    for i, op in enumerate(ops):
        key = _bulk_id(op)
        if key is None:
            continue
        if key in seen:
            raise InvalidValue(
                f"bulkId '{key}' is used by operations {seen[key] + 1} and {i + 1};"
                " each bulkId must be unique within the request"
            )
        seen[key] = i
    return seen


_REQUEST_KEYS = ("schemas", "failOnErrors", "Operations")
_OPERATION_KEYS = ("method", "path", "bulkId", "data", "version")


def _canonical(obj: dict[str, Any], names: tuple[str, ...], where: str) -> dict[str, Any]:
    """``obj`` with the names of ``names`` in their RFC spelling, whatever case was sent
    (RFC 7643 §2.1: attribute names are case-insensitive); ``{"failonerrors": 1}`` was
    silently ignored, and every operation ran. Other keys are kept as they are."""
    by_lower = {n.lower(): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = by_lower.get(key.lower(), key)
        if name in out:
            raise InvalidValue(f"{where} gives '{name}' twice (names are case-insensitive)")
        out[name] = value
    return out


async def run(scim: Scim, base: str, body: Any, actor: Actor | Gate) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSyntax("a BulkRequest must be a JSON object")
    body = _canonical(body, _REQUEST_KEYS, "the BulkRequest")
    ops = body.get("Operations")
    if isinstance(ops, list):
        ops = [
            _canonical(op, _OPERATION_KEYS, f"operation {i + 1}") if isinstance(op, dict) else op
            for i, op in enumerate(ops)
        ]
    if not isinstance(ops, list) or not ops:
        raise InvalidSyntax("a BulkRequest needs a non-empty 'Operations' array")
    limit = scim.settings.max_bulk_operations
    if len(ops) > limit:
        raise PayloadTooLarge(f"a BulkRequest may hold at most {limit} operations")
    fail_on = body.get("failOnErrors")
    if fail_on is not None and (
        isinstance(fail_on, bool) or not isinstance(fail_on, int) or fail_on < 1
    ):
        raise InvalidValue("'failOnErrors' must be a positive integer")
    declared = _declared(ops)
    creating = {k for k, i in declared.items() if str(ops[i].get("method", "")).upper() == "POST"}
    refs = _Refs(declared, creating)
    return {
        "schemas": [BULK_RESPONSE],
        "Operations": await _Run(scim, base, actor, ops, refs, fail_on).all(),
    }


class _Run:
    """The operations in request order, except that one referencing a POST that has not run
    yet waits for it and runs right after it (RFC 7644 §3.7.2: references resolve "in any
    order"; §3.7: a reordering must keep the client's intent). Waiting for a second pass put
    such an operation after every operation that followed it (a PATCH adding a new user to a
    group ran after the group's DELETE); running the POST early instead broke a request that
    deletes a user and creates one of the same name. Operations still waiting at the end wait
    for each other (§3.7.1, a cycle) or for such operations: each gets a 409 that says which.
    """

    def __init__(
        self,
        scim: Scim,
        base: str,
        actor: Actor | Gate,
        ops: list[Any],
        refs: _Refs,
        fail_on: int | None,
    ) -> None:
        self.scim, self.base, self.actor, self.ops, self.refs = scim, base, actor, ops, refs
        self.fail_on = fail_on
        self.results: list[dict[str, Any] | None] = [None] * len(ops)
        self.errors = 0
        # What an operation waits for: a bulkId (its POST) or an operation's index (the one
        # before it on the same resource); and who waits for each.
        self.waiting: dict[str | int, list[int]] = {}
        self.missing: list[set[str | int]] = [set() for _ in ops]
        self.ran: set[str] = set()  # bulkIds whose POST has run (created or failed)
        self.held: dict[str, int] = {}  # a resource -> the last operation on it still waiting
        self.outage = False  # the database failed under an operation: the rest are not run
        self.lost = 0  # operations in a row whose database connection ended under them

    def stopped(self) -> bool:
        return self.outage or (self.fail_on is not None and self.errors >= self.fail_on)  # §3.7.3

    async def all(self) -> list[dict[str, Any]]:
        for i, op in enumerate(self.ops):
            if self.stopped():
                break  # operations not processed get no result
            wanted = self.refs.references(op) if isinstance(op, dict) else []
            missing: set[str | int] = {
                k for k in wanted if k in self.refs.creating and k not in self.ran
            }
            target = _target(op)
            before = self.held.get(target) if target is not None else None
            if before is not None and self.results[before] is None:
                # The resource's operations keep the client's order (§3.7: an optimised
                # order must give the same result): this one waits for the one before it.
                missing.add(before)
            self.missing[i] = missing
            if missing:
                for key in missing:
                    self.waiting.setdefault(key, []).append(i)
                if target is not None:
                    self.held[target] = i
                if self.fail_on is not None and self.closes_cycle(i):
                    # Its errors count now: the operations after it must not run past the
                    # limit (found only at the end, they did).
                    await self.unresolvable(only_cycles=True)
                continue
            await self.execute(i)
        if not self.stopped():
            await self.unresolvable()
        if self.outage:
            # Said of each operation not run (the reply listed only those that were, and a
            # client had to count to find the others).
            err = ScimError(
                "not run: the database failed under an earlier operation of this request;"
                " retry this operation",
                status=503,
            )
            for i, result in enumerate(self.results):
                if result is None:
                    op = self.ops[i]
                    self.results[i] = _error_result(op, err, _location(self.base, op))
        return [r for r in self.results if r is not None]

    async def execute(self, first: int) -> None:
        """Run an operation, then those it lets run, each right after what it waited for."""
        queue = deque([first])
        while queue and not self.stopped():
            i = queue.popleft()
            self.record(i, await self._one(i))
            queue.extendleft(sorted(self.done(i), reverse=True))

    async def _one(self, i: int) -> dict[str, Any]:
        """Operation ``i``'s result. A database that fails under it (a lock held past the
        timeout, a full disk, an outage) ends the request with the results so far: the whole
        Bulk was a 503 "retry", though the operations before were saved (§3.7.3: the response
        holds each processed operation's result), and a retry met 409s for its POSTs."""
        op = self.ops[i]
        try:
            result = await _one(self.scim, op, self.refs, self.base, self.actor)
            self.lost = 0
            return result
        except Exception as e:
            if is_unavailable(e):
                database_unavailable(e, f"bulk operation {i + 1}")
                if connection_ended(e) and not self.lost:
                    # One connection ended (PostgreSQL restarted, a session terminated): the
                    # next operation gets another, as the next request would. Only a second
                    # in a row ends the request (one ended 724 of 1,000 operations unrun).
                    self.lost += 1
                else:
                    self.outage = True
                err = ScimError(unavailable_detail(e), status=503)
            else:
                log.exception("bulk operation %d failed", i + 1)
                err = InternalError()
            return _error_result(op, err, _location(self.base, op))

    def done(self, i: int) -> list[int]:
        """Operation ``i`` has its result: the operations that waited only for it, or for its
        POST, and may run now."""
        finished: list[str | int] = [i]
        key = _bulk_id(self.ops[i])
        if key is not None and key in self.refs.creating:
            self.ran.add(key)
            finished.append(key)
        released = []
        for k in finished:
            for w in self.waiting.pop(k, []):
                self.missing[w].discard(k)
                if not self.missing[w] and self.results[w] is None:
                    released.append(w)
        return released

    def _op(self, key: str | int) -> int:
        return key if isinstance(key, int) else self.refs.declared[key]

    def record(self, i: int, result: dict[str, Any]) -> None:
        self.results[i] = result
        if int(result["status"]) >= 400:
            self.errors += 1
            key = _bulk_id(self.ops[i])
            if key is not None:
                self.refs.failed.add(key)

    def closes_cycle(self, start: int) -> bool:
        """Whether the operation just deferred waits, through other waiting operations, for
        itself (checked with ``failOnErrors`` only: a walk of the waiting operations)."""
        seen: set[int] = set()
        todo = [self._op(k) for k in self.missing[start]]
        while todo:
            j = todo.pop()
            if j == start:
                return True
            if j in seen or self.results[j] is not None or not self.missing[j]:
                continue
            seen.add(j)
            todo.extend(self._op(k) for k in self.missing[j])
        return False

    async def unresolvable(self, only_cycles: bool = False) -> None:
        """409s for the operations that cannot run: on a cycle of references, or referencing
        an operation on one. An operation that only waited for the one before it on its
        resource runs once that one has its result, as in the client's order."""
        stuck = [i for i, r in enumerate(self.results) if r is None and self.missing[i]]
        edges = {i: sorted(self._op(k) for k in self.missing[i]) for i in stuck}
        cycles = _cycles(edges)
        # What references a member of a cycle, directly or not, fails with it, now: with
        # failOnErrors, the operations after it ran past the limit (its error counted only
        # at the end).
        named = {i: sorted(k for k in self.missing[i] if isinstance(k, str)) for i in stuck}
        refs = {i: [self._op(k) for k in named[i]] for i in stuck}
        doomed = set(cycles)
        grew = True
        while grew:
            grew = False
            for i in stuck:
                if i not in doomed and any(j in doomed for j in refs[i]):
                    doomed.add(i)
                    grew = True
        for i in stuck:
            if self.stopped():
                return
            if self.results[i] is not None or (only_cycles and i not in doomed):
                continue
            if i not in doomed:
                continue  # waits for a doomed operation on its resource: run once it fails
            if i in cycles:
                names = _names(self.ops, cycles[i])
                what = (
                    f"operations {names} reference each other by bulkId, so none can be"
                    " created first"
                    if len(cycles[i]) > 1
                    else f"operation {names} references itself by bulkId"
                )
                detail = (
                    f"{what}; create them without the references, then add those with a PATCH"
                    if len(cycles[i]) > 1
                    else f"{what}; create it without the reference, then add it with a PATCH"
                )
            else:
                names = ", ".join(f"'{k}'" for k in named[i] if self._op(k) in doomed)
                detail = (
                    f"bulkId {names} names an operation that could not run (its references"
                    " form a cycle), so it has no resource"
                )
            err = InvalidValue(detail, status=409)
            self.record(i, _error_result(self.ops[i], err, _location(self.base, self.ops[i])))
            # Later references fail at once, as to a failed POST; what waited only for this
            # operation on its resource runs now.
            for w in sorted(self.done(i)):
                if self.results[w] is None and w not in doomed:
                    await self.execute(w)


def _bulk_id(op: Any) -> str | None:
    """An operation's ``bulkId``, when it is text: a number or an object is that operation's
    400 (``_one``), never declared (``1`` and ``"1"`` were the same operation, echoed as
    given)."""
    key = op.get("bulkId") if isinstance(op, dict) else None
    return key if isinstance(key, str) else None


def _cycles(edges: dict[int, list[int]]) -> dict[int, list[int]]:
    """The nodes on a cycle of ``edges``, each with the members of its strongly connected
    component (Tarjan's algorithm, without recursion: linear in the references, where
    merging the cycles found by back edges grew with the cube of the operations)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: dict[int, list[int]] = {}
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    members = sorted(component)
                    for member in members:
                        out[member] = members
    return out


def _names(ops: list[Any], indices: list[int], most: int = 5) -> str:
    """Quoted bulkIds of ``indices``, at most ``most`` (a 1,000-long cycle listed all of them
    in each of its 1,000 results: an 8 MB reply)."""
    shown = ", ".join(f"'{ops[j].get('bulkId', j + 1)}'" for j in indices[:most])
    return shown if len(indices) <= most else f"{shown} and {len(indices) - most} more"


def _target(op: Any) -> str | None:
    """The resource an operation writes, as ``groups/<id>`` (None for a POST, which makes a
    new one, and for what names no resource)."""
    if not isinstance(op, dict) or str(op.get("method", "")).upper() == "POST":
        return None
    path = op.get("path")
    if not isinstance(path, str):
        return None
    parts = [p for p in path.split("/") if p]
    if len(parts) != 2 or parts[0].lower() not in _RESOURCES:
        return None
    return f"{parts[0].lower()}/{parts[1]}"


def _unread(name: str) -> list[str] | None:
    """What a bulk write leaves out of the resource it renders: nothing of it is returned."""
    return ["members"] if name == "Group" else None


def _location(base: str, op: Any) -> str | None:
    """The resource a PUT, PATCH or DELETE names (§3.7.3: ``location`` is required in every
    result but a failed POST's): its canonical URL when the path names a resource, else the
    path as sent under the base (a ``bulkId:`` that never resolved, a path naming nothing;
    a result without one made scim2-client refuse the whole response); the base itself
    without a path (an operation that names nothing: one such result made a strict client
    refuse the whole response, the other operations' results with it)."""
    path = op.get("path") if isinstance(op, dict) else None
    if not isinstance(path, str):
        return f"{base}/"
    parts = [p for p in path.split("/") if p]
    if len(parts) != 2 or parts[0].lower() not in _RESOURCES or parts[1].startswith(_PREFIX):
        return f"{base}/{path.lstrip('/')}"
    return f"{base}/{_RESOURCES[parts[0].lower()]}s/{parts[1]}"


def _error_result(op: Any, err: ScimError, location: str | None = None) -> dict[str, Any]:
    op = op if isinstance(op, dict) else {}
    out: dict[str, Any] = {"status": str(err.status)}
    method = op.get("method")
    if isinstance(method, str) and method.upper() in _METHODS:
        # As a success's is: "post" was echoed as sent, and "GET" at all, which a strict
        # client refuses (with the whole reply). Never "method": null either; the detail
        # names a method that is not one.
        out = {"method": method.upper(), **out}
    if _bulk_id(op):
        out["bulkId"] = op["bulkId"]
    if location is not None and str(op.get("method", "")).upper() != "POST":
        out["location"] = location
    out["response"] = err.to_dict()
    return out


async def _one(scim: Scim, op: Any, refs: _Refs, base: str, actor: Actor | Gate) -> dict[str, Any]:
    if not isinstance(op, dict):
        return _error_result(
            {}, InvalidSyntax("each bulk operation must be a JSON object"), f"{base}/"
        )
    method = str(op.get("method") or "").upper()
    location: str | None = None
    try:
        if op.get("bulkId") is not None and _bulk_id(op) is None:
            raise InvalidValue(
                f"'bulkId' is a string (RFC 7644 §3.7), not {shown_json(op['bulkId'])}"
            )
        if method not in _METHODS:
            given = op.get("method")
            raise InvalidValue(
                "a bulk operation needs a 'method': POST, PUT, PATCH or DELETE"
                if given is None
                else f"unsupported bulk method {shown_json(given)}: use POST, PUT, PATCH or DELETE"
            )
        path, data = refs.resolve_op(op)
        if path is None:
            raise InvalidValue("a bulk operation needs a 'path' such as /Users or /Users/{id}")
        if not isinstance(path, str) or not path.startswith("/"):
            # A path given, but not one relative to the SCIM base ("Users", a full URL): said
            # as such, not as missing.
            raise InvalidValue(
                f"bulk path {shown_json(path)} must start with / and be relative to the SCIM"
                " base: /Users, /Groups or one of their ids"
            )
        if "?" in path or "#" in path:
            # Read as part of the id, a query made a resource that exists "not found".
            raise InvalidValue(
                f"bulk path '{path}' takes no query or fragment: a bulk result carries no"
                " resource to project (RFC 7644 §3.7); send /Users, /Groups or one of their ids"
            )
        parts = [p for p in path.split("/") if p]
        name = _RESOURCES.get(parts[0].lower()) if parts else None
        if name is None or len(parts) > 2:
            raise InvalidValue(f"bulk path '{path}' must be /Users, /Groups or one of their ids")
        location = _location(base, {"path": path})
        version = op.get("version")
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise InvalidValue(
                "a bulk operation's 'version' is an ETag such as W/\"3\","
                f" not {shown_json(version)}"
            )
        d = scim.directory
        target = resource_id(name, parts[1]) if len(parts) == 2 else None
        job = scim.passwords_of(name, data, target, method)
        if job is not None:  # hashed off the event loop, as outside a Bulk
            if not isinstance(actor, Actor):
                await scim.db(d.authorise, actor)  # a revoked caller costs no digest
            await scim.digest(job)
            data = job.body
        out: dict[str, Any] = {"method": method}
        bulk_id = _bulk_id(op)
        if bulk_id:
            out["bulkId"] = bulk_id
        if method == "POST" and len(parts) != 1:
            raise InvalidValue(f"POST takes /{parts[0]}, without an id (it creates one)")
        if method == "POST":
            if not bulk_id:
                raise InvalidValue(
                    "a bulk POST's 'bulkId' must not be empty"
                    if bulk_id == ""
                    else "a bulk POST needs a 'bulkId'"
                )
            if data is None:
                raise InvalidValue("a bulk POST needs 'data': the resource to create")
            # The result holds the location and version only: a group's members are not read.
            w = await scim.write(d.create, name, data, actor, base, excluded=_unread(name))
            assert w.resource is not None
            refs.created[bulk_id] = w.resource["id"]
            out.update(location=w.resource["meta"]["location"], version=w.etag, status="201")
            return out
        if len(parts) != 2:
            raise InvalidValue(f"{method} needs a resource path like /{parts[0]}/{{id}}")
        rid = resource_id(name, parts[1])
        if method == "PUT":
            w = await scim.write(
                d.replace, name, rid, data, actor, base, version, excluded=_unread(name)
            )
            out.update(location=location, version=w.etag, status="200")
        elif method == "PATCH":
            w = await scim.write(d.patch, name, rid, data, actor, base, version, render=False)
            out.update(location=location, version=w.etag, status="200")
        else:
            await scim.write(d.delete, name, rid, actor, version)
            out.update(location=location, status="204")
        return out
    except Unresolved as e:  # scheduled after what it names: that never created anything
        err = InvalidValue(f"bulkId '{e}' could not be resolved", status=409)
        return _error_result(op, err, location or _location(base, op))
    except ScimError as e:
        return _error_result(op, e, location or _location(base, op))
