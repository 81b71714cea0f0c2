"""PATCH (RFC 7644 §3.5.2) applied to a stored canonical document. Pure: no I/O.

``apply_patch`` validates the request body, applies the operations in order to a copy of the
document and returns the new document, the group-membership changes as set operations for the
storage layer, and whether anything changed. Any error raises a ``ScimError`` whose detail names
the operation (index, op, path); nothing is returned then, so a PATCH is all or nothing.

Semantics are the RFC's, plus what Microsoft Entra ID sends (``shared/entra/facts.md`` §4):

- ``op`` in any case (``Add``/``Replace``/``Remove``); ``Operations`` under any key case.
- A path-less ``add``/``replace`` value is an object whose keys are attribute paths: plain
  (``userName``), dotted (``name.givenName``), full-URN (``urn:...:enterprise:2.0:User:manager``)
  or an extension URN holding an object of that extension's attributes.
- ``add``/``replace`` through a value path that matches nothing creates the element the filter
  describes (``emails[type eq "work"].value`` creates ``{"type": "work", "value": ...}``), so
  there stays one element per type; a filter that describes no element is ``noTarget``.
- ``remove`` with a ``value`` on a multi-valued attribute removes only the listed values (Entra
  removes group members that way); on a single-valued target the value is ignored.
- A ``null`` value on ``add``/``replace`` unassigns the target (RFC 7643 §2.5).
- Values are canonicalised by the attribute definitions (``"False"`` -> ``false``, ``"42"`` ->
  ``42``, ``manager`` as a string, object or one-element array).

Group members never live in the document: every operation on ``members`` becomes a ``MemberOp``
that the storage layer applies with set-based SQL, so a PATCH on a large group costs what the
change costs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from scimd.scim import compat
from scimd.scim import schema as S
from scimd.scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
    TooMany,
    UnknownMembers,
    clipped,
)
from scimd.scim.filter import And, Compare, Filter, Not, Or, Present, parse_patch_path
from scimd.scim.passwords import Hashed, hash_password
from scimd.scim.query import bind_element, check_relation_filter, compare, matches_element
from scimd.scim.resource import (
    check_required,
    distinct_elements,
    element_key,
    given_once,
    normalise_complex,
    normalise_value,
)
from scimd.scim.values import shown_json

PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_OPERATIONS = 1000
# Values of multi-valued attributes one PATCH may go through (``_Patcher.examine``): ~1 s of
# the event loop at most. Ten filtered operations on a group of 100,000 members stay within.
MAX_VISITS = 1_000_000
"""Most operations accepted in one PATCH request (more is ``tooMany``)."""

_OPS = frozenset({"add", "replace", "remove"})
# Keys of a path-less value that name server-owned data, not attributes to change.
_IGNORED_KEYS = frozenset({"schemas", "id", "meta"})
_MEMBER_TYPES = {"user": "User", "group": "Group"}
_MISSING: Any = object()


@dataclass
class MemberOp:
    """One change to a group's membership, applied in order by the storage layer.

    ``add``/``replace`` members are ``{"value": id}`` plus ``"type"`` ("User"/"Group") when the
    client sent it (otherwise storage infers it); ``remove`` members are ``{"value": id}``;
    ``remove_all`` has no members.
    """

    kind: Literal["add", "remove", "remove_all", "replace"]
    members: list[dict[str, str]] = field(default_factory=list)


# The operation a member change comes from: its number, op and path.
_Origin = tuple[int, str, str | None]


@dataclass
class PatchResult:
    """The outcome of a PATCH: the new document, membership changes, and whether it changed."""

    doc: dict[str, Any]
    member_ops: list[MemberOp]
    changed: bool
    # The operations as read and applied, ``(op, path, value)`` (value None when absent): for
    # the audit record, which must describe the change made (it re-read the raw body).
    operations: list[tuple[str, str | None, Any]] = field(default_factory=list)
    # The member changes before folding, each with its operation ``(index, op, path)``.
    sent: list[tuple[MemberOp, _Origin]] = field(default_factory=list)

    @property
    def members_added(self) -> list[dict[str, str]]:
        """Every member the operations added or set, before ``member_ops`` was folded to its
        net effect: each must be a member a group may have (not the group itself), even one
        a later operation removes again."""
        return _added(self.sent)

    def locate(self, e: UnknownMembers) -> ScimError:
        """``e`` naming the operation(s) that sent its ids (a PATCH of many operations)."""
        return _located_members(self.sent, e)


def apply_patch(
    rt: S.ResourceType,
    doc: dict[str, Any],
    body: Any,
    *,
    load_members: Callable[[], list[dict[str, Any]]] | None = None,
    member_types: Callable[[list[str]], dict[str, str]] | None = None,
) -> PatchResult:
    """Apply the PatchOp request ``body`` to the stored document ``doc`` of type ``rt``.

    ``doc`` is never mutated. ``load_members`` returns the group's current members
    (``[{"value", "type"}]``); it is called only for a member filter that is not a list of ids.
    ``member_types`` names the type ("User", "Group") of ids added without one, for such a
    filter after the add (``members[type eq "User"]`` missed them).
    """
    ops = _operations(body)
    new = _copy(doc)
    patcher = _Patcher(rt, new, load_members, member_types)
    origins: list[_Origin] = []  # of each member change, its operation
    for index, op, path, value in ops:
        before = len(patcher.member_ops)
        try:
            patcher.apply(op, path, value)
        except ScimError as e:
            raise _located(e, index, op, path) from None
        origins += [(index, op, path)] * (len(patcher.member_ops) - before)
    patcher.cleanup(doc)
    check_required(rt, new, patched=True)
    member_ops = _net(patcher.member_ops)
    sent = list(zip(patcher.member_ops, origins, strict=True))
    if member_types is not None and member_ops is not patcher.member_ops:  # folded
        # Adds the folding dropped are still judged, as RFC 7644 §3.5.2 applies every
        # operation: a mistyped id added, then removed or replaced, went unnoticed.
        kept = {m["value"] for op in member_ops if op.kind != "remove" for m in op.members}
        dropped = list(dict.fromkeys(m["value"] for m in _added(sent) if m["value"] not in kept))
        found = member_types(dropped) if dropped else {}
        unknown = [i for i in dropped if i not in found]
        if unknown:
            raise _located_members(sent, UnknownMembers(unknown))
    changed = bool(member_ops) or new != doc
    applied = [(op, path, None if value is _MISSING else value) for _, op, path, value in ops]
    return PatchResult(new, member_ops, changed, applied, sent)


def _added(sent: list[tuple[MemberOp, _Origin]]) -> list[dict[str, str]]:
    return [m for op, _ in sent if op.kind in ("add", "replace") for m in op.members]


def _net(ops: list[MemberOp]) -> list[MemberOp]:
    """The member changes as their net effect: what comes before the last replace or
    remove-all is undone by it, and of an id added and removed after it only the last change
    counts. Added, then removed by one PATCH, a user who was no member was counted as two
    changes: the group got a new version (and clients holding its ETag a needless 412). A
    reset and the changes after it are one replace, by the members they leave: cleared and
    given back its members, a group changed too (its memberships deleted and written again)."""
    last = max((i for i, op in enumerate(ops) if op.kind in ("replace", "remove_all")), default=-1)
    if last >= 0:
        if last == len(ops) - 1:
            return ops[last:]
        kept = {m["value"]: m for m in ops[last].members}  # remove_all: none
        for op in ops[last + 1 :]:
            for m in op.members:
                if op.kind == "add":
                    kept.setdefault(m["value"], m)  # added twice, the first add stands
                else:
                    kept.pop(m["value"], None)
        return [MemberOp("replace", list(kept.values()))]
    if len(ops) <= 1:
        return ops  # one change (Entra's PATCHes): nothing to fold
    final: dict[str, tuple[str, dict[str, str]]] = {}
    for op in ops:
        for m in op.members:
            before = final.pop(m["value"], None)  # the latest change of an id comes last
            # Added twice, the first add stands (the second is a no-op, its type unused).
            again = op.kind == "add" and before is not None and before[0] == "add"
            final[m["value"]] = before if again and before is not None else (op.kind, m)
    removes = [{"value": i} for i, (kind, _) in final.items() if kind == "remove"]
    adds = [m for kind, m in final.values() if kind == "add"]
    out: list[MemberOp] = []
    if removes:
        out.append(MemberOp("remove", removes))
    if adds:
        out.append(MemberOp("add", adds))
    return out


# ---------------------------------------------------------------------------------------------
# The request body


def _operations(body: Any) -> list[tuple[int, str, str | None, Any]]:
    """Validate the PatchOp envelope: ``(index, op, path, value)`` per operation.

    ``value`` is ``_MISSING`` when the operation has none. A missing or unexpected ``schemas``
    is tolerated: the endpoint already says what the body is.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("a PATCH request body must be a JSON object with 'Operations'")
    raw_ops = _once(body, "operations", "the PATCH request")
    if raw_ops is _MISSING:
        raise InvalidSyntax("the PATCH request has no 'Operations'")
    if not isinstance(raw_ops, list):
        raise InvalidSyntax("'Operations' must be a JSON array of operations")
    if not raw_ops:
        raise InvalidValue("'Operations' must hold at least one operation")
    if len(raw_ops) > MAX_OPERATIONS:
        raise TooMany(
            f"the PATCH request has {len(raw_ops)} operations; at most {MAX_OPERATIONS} are"
            " accepted in one request"
        )
    out: list[tuple[int, str, str | None, Any]] = []
    for index, raw in enumerate(raw_ops, start=1):  # counted from 1, as Bulk counts
        if not isinstance(raw, dict):
            raise InvalidSyntax(f"operation {index} must be a JSON object with 'op'")
        where = f"operation {index}"
        op = _once(raw, "op", where)
        path = _once(raw, "path", where)
        path = None if path is _MISSING else path
        value = _once(raw, "value", where)
        if op is _MISSING:
            raise InvalidSyntax(f"operation {index} has no 'op' (add, replace or remove)")
        name = compat.normalise_op(op)
        if name not in _OPS:
            raise InvalidSyntax(
                f"operation {index} has op {shown_json(op)}; expected add, replace or remove"
            )
        if path is not None and not isinstance(path, str):
            raise InvalidPath(f"operation {index}: 'path' must be a string")
        if path is not None and not path.strip():
            path = None  # an empty path names the resource itself, like an absent one
        if name != "remove" and value is _MISSING:
            raise InvalidValue(f"operation {index} ({name}) has no 'value'")
        out.append((index, name, path, value))
    return out


def _once(obj: dict[str, Any], name: str, where: str) -> Any:
    """``obj``'s value for the key ``name`` in any case (Entra writes ``Operations``, ``Op``,
    ``Path``), or _MISSING. Two spellings with different values are refused: the PATCH used
    one and its audit record the other, so a user could be disabled while the log said
    enabled."""
    found: Any = _MISSING
    spelled = ""
    for key, v in obj.items():
        if key.lower() == name:
            if found is not _MISSING and v != found:
                raise InvalidSyntax(
                    f"{where} gives '{spelled}' and '{key}' different values: send it once"
                )
            found, spelled = v, key
    return found


def _located(e: ScimError, index: int, op: str, path: str | None) -> ScimError:
    """The same error, its detail prefixed with the operation it comes from."""
    where = f"operation {index} ({op} '{clipped(path)}')" if path else f"operation {index} ({op})"
    kind = InvalidValue if isinstance(e, UnknownMembers) else type(e)
    return kind(f"{where}: {e.detail}", status=e.status, scim_type=e.scim_type)


def _located_members(sent: list[tuple[MemberOp, _Origin]], e: UnknownMembers) -> ScimError:
    added_by: dict[str, _Origin] = {}
    for change, origin in sent:
        if change.kind in ("add", "replace"):
            for m in change.members:
                added_by.setdefault(m["value"], origin)
    sent_by = list(dict.fromkeys(added_by[i] for i in e.ids if i in added_by))
    if len(sent_by) == 1:
        return _located(e, *sent_by[0])
    if not sent_by:
        return e
    numbers = ", ".join(str(index) for index, _, _ in sent_by)
    return InvalidValue(f"operations {numbers}: {e.detail}", status=e.status)


def _copy(value: Any) -> Any:
    """Deep copy of a JSON document (4x faster than ``copy.deepcopy``)."""
    t = type(value)
    if t is dict:
        return {k: (_copy(v) if type(v) in (dict, list) else v) for k, v in value.items()}
    if t is list:
        return [(_copy(v) if type(v) in (dict, list) else v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True, slots=True)
class _Target:
    """A PATCH path resolved against a resource type.

    ``attr`` is None when the path names a whole extension (``schema``). ``sub`` is the
    sub-attribute after a dot, with or without a value filter. ``filter`` is bound to the
    sub-attributes of ``attr``.
    """

    text: str
    urn: str  # "" for core and common attributes, else the extension URN (container key)
    where: str  # canonical spelling for messages
    attr: S.Attribute | None
    sub: S.Attribute | None = None
    filter: Filter | None = None
    schema: S.Schema | None = None
    members: bool = False


@lru_cache(maxsize=4096)
def _compile(rt: S.ResourceType, text: str) -> _Target:
    """Parse and resolve a path once; Entra sends the same few paths over and over."""
    stripped = text.strip()
    whole = rt.by_urn.get(stripped.lower())
    if whole is not None:
        if whole is rt.core:
            raise InvalidPath(f"path '{clipped(text)}' names the core schema, not an attribute")
        return _Target(text, whole.id, whole.id, None, schema=whole)
    pp = parse_patch_path(stripped)
    schema: S.Schema | None = None
    if pp.path.schema:
        schema = rt.by_urn.get(pp.path.schema.lower())
        if schema is None:
            raise InvalidPath(f"unknown schema '{pp.path.schema}' in path '{clipped(text)}'")
        if schema is rt.core and pp.path.attr.lower() in S.COMMON:
            schema = None  # "urn:...:core:2.0:User:externalId" names the common attribute
    res = rt.resolve_parts(schema, pp.path.attr, pp.path.sub, text)
    attr, sub = res.attr, res.sub
    filt: Filter | None = None
    if pp.filter is not None:
        if not attr.is_complex:
            raise InvalidPath(
                f"'{attr.name}' has no sub-attributes to filter on (path '{clipped(text)}')"
            )
        try:
            filt = bind_element(pp.filter, attr)
        except InvalidFilter as e:
            raise InvalidPath(f"{e.detail} (path '{clipped(text)}')") from None
        if pp.sub is not None:
            sub = attr.sub.get(pp.sub.lower())
            if sub is None:
                raise InvalidPath(
                    f"attribute '{attr.name}' has no sub-attribute '{pp.sub}'"
                    f" (path '{clipped(text)}')"
                )
    urn = "" if res.schema in ("", rt.core.id) else res.schema
    members = urn == "" and attr.name == "members" and rt.core.id == S.GROUP_SCHEMA
    if members and filt is not None:
        for name in _names_in(filt):
            try:
                check_relation_filter("members", name)
            except InvalidFilter as e:
                raise InvalidFilter(f"{e.detail} (path '{clipped(text)}')") from None
    where = S.Resolved(res.schema, attr, sub).where
    return _Target(text, urn, where, attr, sub, filt, members=members)


def _names_in(f: Filter) -> list[str]:
    """The (sub-)attribute names a bound element filter compares."""
    if isinstance(f, (Compare, Present)):
        return [f.path.attr]
    if isinstance(f, (And, Or)):
        return _names_in(f.left) + _names_in(f.right)
    if isinstance(f, Not):
        return _names_in(f.expr)
    return []


def _described(f: Filter) -> dict[str, Any] | None:
    """The element a value filter describes: its ``eq`` comparisons joined by ``and``.

    ``type eq "work"`` describes ``{"type": "work"}``; any other shape describes nothing.
    """
    if isinstance(f, Compare):
        if f.op == "eq" and f.value is not None and f.path.sub is None:
            return {f.path.attr: f.value}
        return None
    if isinstance(f, And):
        left, right = _described(f.left), _described(f.right)
        if left is None or right is None:
            return None
        if any(left[k] != right[k] for k in left.keys() & right.keys()):
            return None
        return {**left, **right}
    return None


def member_list(attr: S.Attribute, value: Any, where: str) -> list[dict[str, str]]:
    """Validate member values: objects with a string ``value`` (``$ref`` may be null), for
    PATCH and for the ``members`` of a POST or PUT alike; duplicates are dropped."""
    value = compat.list_from_single(value)
    if not isinstance(value, list):
        raise InvalidValue(f"'{where}' takes a JSON array of member objects")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in value:
        if item is None:
            continue
        m: dict[str, Any] | None
        if type(item) is dict and len(item) == 1 and type(item.get("value")) is str:
            # Entra's form, ``{"value": id}``, is already normal unless the id holds a NUL
            # (which normalise_complex refuses): skipping it halves a 100-member add.
            m = item if "\x00" not in item["value"] else normalise_complex(attr, item, where)
        else:
            m = normalise_complex(attr, item, where) if isinstance(item, dict) else None
        if m is None or not isinstance(m.get("value"), str):  # names are case-insensitive
            raise InvalidValue(
                f"'{where}' values must be objects with a string 'value' (the member id),"
                f" got {_shown(item)}"
            )
        member_id = m["value"]
        if not member_id:
            raise InvalidValue(f"'{where}' has an empty member 'value'")
        if member_id in seen:
            continue
        seen.add(member_id)
        entry = {"value": member_id}
        if "type" in m:
            kind = _MEMBER_TYPES.get(m["type"].lower())
            if kind is None:
                raise InvalidValue(
                    f"'{where}.type' must be 'User' or 'Group', got {shown_json(m['type'])}"
                )
            entry["type"] = kind
        out.append(entry)
    return out


def _value_ids(f: Filter) -> list[str] | None:
    """The ids of a member filter made of ``value eq "id"`` joined by ``or``, else None."""
    if isinstance(f, Compare):
        if f.op == "eq" and f.path.attr == "value" and isinstance(f.value, str):
            return [f.value]
        return None
    if isinstance(f, Or):
        left, right = _value_ids(f.left), _value_ids(f.right)
        if left is None or right is None:
            return None
        return left + right
    return None


def _identity(attr: S.Attribute, value: Any) -> Any:
    """A hashable stand-in for an element of ``attr``, equal when the elements are the same
    value (``element_key``: strings without case unless ``caseExact``)."""
    if isinstance(value, dict):
        key = element_key(attr, value)
        if key is not None:
            return ("object", key)
        return ("json", json.dumps(value, sort_keys=True))  # a nested list or object: rare
    if isinstance(value, list):
        return ("json", json.dumps(value, sort_keys=True))
    return ("value", value)


def _mark_primary(
    attr: S.Attribute, elements: list[Any], marked: list[dict[str, Any]], where: str
) -> list[dict[str, Any]]:
    """RFC 7644 §3.5.2: a value set ``primary: true`` sets ``primary`` false on the others
    (returned). Several elements marked may be copies of one value (an earlier operation of
    the PATCH made them equal; the end of the PATCH keeps one): that is one value marked."""
    if len({_identity(attr, m) for m in marked}) > 1:
        raise InvalidValue(f"'{where}' would have more than one value marked primary")
    demoted = []
    for e in elements:
        if isinstance(e, dict) and e.get("primary") is True and not any(e is m for m in marked):
            e["primary"] = False
            demoted.append(e)
    return demoted


def _shown(value: Any) -> str:
    """A short description of an unusable member value for error details."""
    if isinstance(value, dict):
        return "an object without a string 'value'"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _other_reference(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` names another referenced resource than ``old`` (their ``value`` differs)."""
    return "value" in new and "value" in old and new["value"] != old["value"]


def _check_immutable(attr: S.Attribute, old: Any, new: Any, where: str) -> None:
    """RFC 7643 §2.2: an immutable value may be set once, never changed."""
    if attr.mutability == "immutable" and old is not None and old != new:
        raise Mutability(f"'{where}' is immutable: it cannot change once it has a value")


def _has(element: dict[str, Any], selector: dict[str, Any], attr: S.Attribute) -> bool:
    """Whether ``element`` holds every sub-attribute value of ``selector``."""
    for key, v in selector.items():
        if key not in element:
            return False
        if not compare("eq", element[key], v, attr.sub[key.lower()]):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Applying operations


class _Patcher:
    """Applies operations one by one to ``doc`` (a private copy) and collects member ops."""

    __slots__ = (
        "_kinds",
        "_loaded",
        "_seen",
        "_unfinished",
        "doc",
        "load_members",
        "member_ops",
        "member_types",
        "rt",
        "touched",
        "visits",
    )

    def __init__(
        self,
        rt: S.ResourceType,
        doc: dict[str, Any],
        load_members: Callable[[], list[dict[str, Any]]] | None,
        member_types: Callable[[list[str]], dict[str, str]] | None = None,
    ) -> None:
        self.rt = rt
        self.doc = doc
        self.load_members = load_members
        self.member_types = member_types
        self.member_ops: list[MemberOp] = []
        self.touched: set[str] = set()
        self._loaded: list[dict[str, Any]] | None = None
        # The identities of a list's elements, by the list's id (the list is kept so that
        # its id is not reused): each add to a multi-valued attribute rebuilt them, so 1,000
        # adds to a user of 5,000 emails took 12 s. Every other write of a list makes a new
        # one, and ``primary`` is not part of an identity.
        self._seen: dict[int, tuple[list[Any], dict[Any, Any]]] = {}
        self.visits = 0  # elements examined so far (``examine``)
        # Elements a value path created primary before they had a ``value``, with where they
        # are and the elements they took ``primary`` from (``undo_unfinished_marks``).
        self._unfinished: list[tuple[str, S.Attribute, dict[str, Any], list[Any]]] = []
        self._kinds: dict[str, str] = {}  # the types ``member_types`` gave

    def apply(self, op: str, path: str | None, value: Any) -> None:
        """Apply one validated operation."""
        if path is None:
            if op == "remove":
                raise NoTarget("remove needs a 'path' naming what to remove")
            if not isinstance(value, dict):
                raise InvalidValue(
                    f"{op} without a 'path' needs a JSON object of attributes as its 'value'"
                )
            self.set_object(op, value, None)
            return
        target = _compile(self.rt, path)
        if op == "remove":
            self.remove(target, None if value is _MISSING else value)
        else:
            self.set(op, target, value)

    def examine(self, n: int) -> None:
        """Count ``n`` elements gone through; past MAX_VISITS the request is refused. Each
        operation with a filter goes through all of an attribute's values (a group's members
        too), and the event loop waits meanwhile: 1,000 operations on a group of 50,000
        members stopped every other request for a minute."""
        self.visits += n
        if self.visits > MAX_VISITS:
            raise TooMany(
                f"the PATCH goes through more than {MAX_VISITS:,} values of multi-valued"
                " attributes (each operation with a filter, or marking a value primary, goes"
                " through all of them): send fewer operations per request"
            )

    def cleanup(self, before: dict[str, Any]) -> None:
        """Drop extension objects the operations left empty; and in the attributes they
        changed, elements without a ``value`` (``add emails[type eq "work"].display`` on a
        user with no work email made an email of no address, which a POST or PUT leaves out)
        and second copies of an element (a value-path write can make two elements equal).
        An attribute left as it was is left alone (copies stored before two emails differing
        only in case counted as one would otherwise make a PATCH of ``active`` a change of
        ``emails``)."""
        self.undo_unfinished_marks()
        for schema in self.rt.schemas:
            container = self.doc if schema is self.rt.core else self.doc.get(schema.id)
            if not isinstance(container, dict):
                continue
            old = before if schema is self.rt.core else before.get(schema.id)
            for attr in schema.attributes:
                items = container.get(attr.name) if attr.multi_valued and attr.is_complex else None
                if not isinstance(items, list) or not items:
                    continue
                if isinstance(old, dict) and old.get(attr.name) == items:
                    continue
                if "value" in attr.sub:
                    items = [e for e in items if not isinstance(e, dict) or "value" in e]
                    if not items:
                        del container[attr.name]
                        continue
                container[attr.name] = distinct_elements(attr, items)
        for urn in self.touched:
            if self.doc.get(urn) == {}:
                del self.doc[urn]

    def undo_unfinished_marks(self) -> None:
        """``add emails[type eq "home"].primary true`` on a user with no home email creates
        ``{"type": "home", "primary": true}``, which takes ``primary`` from the work email;
        given no address by the end of the PATCH, it is no email and ``cleanup`` drops it.
        The work email is then primary again, as it was: the user was left with no primary
        email by a PATCH that added nothing."""
        for urn, attr, created, demoted in self._unfinished:
            if "value" in created or created.get("primary") is not True:
                continue  # it got its address later, or gave up the mark itself
            items = self.container(urn, create=False).get(attr.name)
            if not isinstance(items, list) or not any(e is created for e in items):
                continue  # the attribute was written anew since
            others = [e for e in items if e is not created and isinstance(e, dict)]
            if any(e.get("primary") is True for e in others):
                continue  # another element was marked since
            for e in others:
                if any(e is d for d in demoted) and e.get("primary") is False:
                    e["primary"] = True

    def _written(self, elements: list[dict[str, Any]]) -> None:
        """Elements whose ``primary`` an operation wrote: it is the client's now, not a mark's."""
        for _, _, _, demoted in self._unfinished:
            demoted[:] = [d for d in demoted if not any(d is e for e in elements)]

    def container(self, urn: str, *, create: bool) -> dict[str, Any]:
        """The object holding ``urn``'s attributes: the document or an extension object."""
        if not urn:
            return self.doc
        ext = self.doc.get(urn)
        if not isinstance(ext, dict):
            ext = {}
            if not create:
                return ext
            self.doc[urn] = ext
        self.touched.add(urn)
        return ext

    # -- add / replace --------------------------------------------------------------------

    def set_object(
        self,
        op: str,
        value: dict[str, Any],
        schema: S.Schema | None,
        seen: dict[tuple[str, Filter | None], tuple[str, Any]] | None = None,
    ) -> None:
        """A path-less value (``schema`` None) or an extension's object: one write per key.

        ``seen``: the targets its keys have set. Two keys of one value can name one target
        (``title`` and ``Title``, an extension's attribute inside its object and with its
        URN); given alike, the second is skipped; given differently, the value is refused
        (the last one won, and the other was lost without a word)."""
        seen = {} if seen is None else seen
        for key, v in compat.split_pathless_value(value):
            low = key.lower()
            if low in _IGNORED_KEYS:
                # scim2-models and others repeat "schemas" inside extension objects.
                continue
            if schema is None:
                if low.startswith("urn:"):
                    named = self.rt.by_urn.get(low)
                    if named is self.rt.core:
                        if not isinstance(v, dict):
                            raise InvalidValue(f"'{key}' must be a JSON object of attributes")
                        self.set_object(op, v, None, seen)
                        continue
                text = key
            else:
                text = f"{schema.id}:{key}"
            try:
                target = _compile(self.rt, text)
            except InvalidPath as e:  # its words name the attribute and the schema
                raise InvalidValue(e.detail) from None
            if target.attr is None and isinstance(v, dict):  # an extension's object
                assert target.schema is not None
                self.set_object(op, v, target.schema, seen)
                continue
            shape = target.sub or target.attr
            if given_once(seen, (target.where, target.filter), text, v, shape, target.where):
                self.set(op, target, v)

    def set(self, op: str, t: _Target, value: Any) -> None:
        """add/replace ``value`` at ``t`` (RFC 7644 §3.5.2.1, §3.5.2.3); null unassigns."""
        attr = t.attr
        if attr is None:
            assert t.schema is not None
            if value is None:
                self.doc.pop(t.urn, None)
            elif isinstance(value, dict):
                self.set_object(op, value, t.schema)
            else:
                raise InvalidValue(f"'{t.where}' takes a JSON object of its attributes")
            return
        if attr.mutability == "readOnly" or (t.sub is not None and t.sub.mutability == "readOnly"):
            raise Mutability(f"'{t.where}' is read-only")
        if t.members:
            self.set_members(op, t, value)
            return
        if t.filter is not None or (t.sub is not None and attr.multi_valued):
            self.set_elements(op, t, value)
            return
        if t.sub is None:
            value = compat.empty_as_unassigned(attr, value)
        container = self.container(t.urn, create=value is not None)
        if t.sub is not None:
            self.set_sub(container, attr, t.sub, value, t.where)
            return
        if value is None:
            self.remove_whole(container, attr, t.where)
            return
        if attr.multi_valued:
            if op == "add":
                self.append(container, attr, value, t.where)
                return
            items = normalise_value(attr, value, t.where)
            if items is None:
                container.pop(attr.name, None)
            else:
                container[attr.name] = items
            return
        if attr.is_complex:
            self.merge(container, attr, value, t.where)
            return
        v = normalise_value(attr, value, t.where)
        if v is None:
            self.remove_whole(container, attr, t.where)
            return
        _check_immutable(attr, container.get(attr.name), v, t.where)
        if attr.mutability == "writeOnly" and isinstance(v, str) and type(v) is not Hashed:
            v = hash_password(v)
        container[attr.name] = v

    def merge(self, container: dict[str, Any], attr: S.Attribute, value: Any, where: str) -> None:
        """RFC 7644 §3.5.2.1/§3.5.2.3: sub-attributes given replace, others are kept.

        A ``null`` sub-attribute unassigns it. When the ``value`` sub-attribute (the identity of
        a reference such as ``manager``) changes, the object is replaced instead, so a stale
        ``$ref`` of the previous manager is not kept beside the new id.
        """
        new = normalise_value(attr, value, where) or {}
        raw = compat.single_from_list(value)
        nulls = [k for k, v in raw.items() if v is None] if isinstance(raw, dict) else []
        old = container.get(attr.name)
        if not isinstance(old, dict) or _other_reference(old, new):
            old = {}
        merged = {**old, **new}
        for key in nulls:
            sub = attr.sub.get(key.lower()) if key.isascii() else None
            if sub is not None:
                merged.pop(sub.name, None)
        if merged:
            container[attr.name] = merged
        else:
            container.pop(attr.name, None)

    def set_sub(
        self,
        container: dict[str, Any],
        attr: S.Attribute,
        sub: S.Attribute,
        value: Any,
        where: str,
    ) -> None:
        """``name.givenName``: one sub-attribute of a single-valued complex attribute."""
        v = normalise_value(sub, value, where)
        parent = container.get(attr.name)
        if v is None:
            if isinstance(parent, dict):
                parent.pop(sub.name, None)
                if not parent:
                    del container[attr.name]
            return
        if not isinstance(parent, dict):
            parent = {}
            container[attr.name] = parent
        _check_immutable(sub, parent.get(sub.name), v, where)
        parent[sub.name] = v

    def append(self, container: dict[str, Any], attr: S.Attribute, value: Any, where: str) -> None:
        """RFC 7644 §3.5.2.1: add to a multi-valued attribute appends the new values."""
        items = normalise_value(attr, value, where)
        if not items:
            return
        old = container.get(attr.name)
        elements: list[Any] = old if isinstance(old, list) else []
        # A set, not ``item in elements``: a PATCH adding 30,000 emails took 8 s, the loop's.
        cached = self._seen.get(id(elements))
        if cached is not None and cached[0] is elements:
            seen = cached[1]
        else:
            self.examine(len(elements))
            seen = {_identity(attr, e): e for e in elements}
            self._seen[id(elements)] = (elements, seen)
        marked: list[Any] = []
        for item in items:
            key = _identity(attr, item)
            there = seen.get(key)
            if there is None:
                seen[key] = item
                elements.append(item)
            elif not (isinstance(item, dict) and item.get("primary") is True):
                continue  # already there (Entra re-sends what it added): RFC 7644 §3.5.2.1
            elif isinstance(there, dict) and there.get("primary") is not True:
                there["primary"] = True  # the value there is made primary (one copy of it)
            chosen = there if there is not None else item
            primary = isinstance(item, dict) and item.get("primary") is True
            if primary and not any(m is chosen for m in marked):
                marked.append(chosen)
        if marked:
            self.examine(len(elements))
            _mark_primary(attr, elements, marked, where)
        if elements:
            container[attr.name] = elements

    def matching(
        self, container: dict[str, Any], attr: S.Attribute, f: Filter | None
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        """The attribute's elements (a single complex value as a list of one), and those
        ``f`` matches (all of them without a filter)."""
        old = container.get(attr.name)
        if attr.multi_valued:
            elements: list[Any] = old if isinstance(old, list) else []
        else:
            elements = [old] if isinstance(old, dict) else []
        self.examine(len(elements))
        matched = [
            e
            for e in elements
            if isinstance(e, dict) and (f is None or matches_element(f, e, attr))
        ]
        return elements, matched

    def set_elements(self, op: str, t: _Target, value: Any) -> None:
        """A value path (``emails[type eq "work"].value``) or ``emails.value`` (all elements).

        Matching elements are updated; when none matches, the element the filter describes is
        created (Entra, facts §4.4), or the operation fails with ``noTarget``.
        """
        attr = t.attr
        assert attr is not None
        if value is None and t.sub is None:
            self.remove(t, None)
            return
        container = self.container(t.urn, create=True)
        elements, matched = self.matching(container, attr, t.filter)
        if elements and not matched and not attr.multi_valued:
            raise NoTarget(f"'{t.where}' does not match the filter of '{t.text}'")
        marked: list[dict[str, Any]] = []
        created: dict[str, Any] | None = None
        if t.sub is not None:
            sub = t.sub
            v = normalise_value(sub, value, t.where)
            if v is None:
                self.unassign_sub(container, attr, sub, elements, matched)
                return
            if matched:
                if sub.name == "primary":
                    self._written(matched)
                for e in matched:
                    _check_immutable(sub, e.get(sub.name), v, t.where)
                    e[sub.name] = v
                if sub.name == "primary" and v is True:
                    marked = matched
            else:
                created = self.describe(t, {sub.name: v})
                elements.append(created)
                if created.get("primary") is True:
                    marked = [created]
        else:
            item = normalise_complex(attr, compat.single_from_list(value), t.where)
            if matched:
                if op == "replace" or "primary" in item:
                    self._written(matched)
                for e in matched:
                    if op == "replace":
                        e.clear()
                    e.update(item)
                if item.get("primary") is True:
                    marked = matched
            else:
                created = self.describe(t, item)
                elements.append(created)
                if created.get("primary") is True:
                    marked = [created]
        if marked and attr.multi_valued:
            self.examine(len(elements))
            demoted = _mark_primary(attr, elements, marked, t.where)
            if created is not None and "value" in attr.sub and "value" not in created:
                self._unfinished.append((t.urn, attr, created, demoted))
        self.store_elements(container, attr, [e for e in elements if e])

    def describe(self, t: _Target, written: dict[str, Any]) -> dict[str, Any]:
        """The element to create when a value path matches nothing."""
        described = {} if t.filter is None else _described(t.filter)
        if described is None:
            raise NoTarget(
                f"no value of '{t.where}' matches the filter of '{t.text}', and the filter"
                " does not describe one to create (use eq comparisons joined by and)"
            )
        return {**described, **written}

    def store_elements(
        self, container: dict[str, Any], attr: S.Attribute, elements: list[Any]
    ) -> None:
        """Store the remaining elements (a single-valued attribute keeps its one element)."""
        if not elements:
            container.pop(attr.name, None)
        elif attr.multi_valued:
            container[attr.name] = elements
        else:
            container[attr.name] = elements[0]

    # -- remove ---------------------------------------------------------------------------

    def remove_whole(self, container: dict[str, Any], attr: S.Attribute, where: str) -> None:
        """Unassign an attribute; a required one cannot be (RFC 7644 §3.5.2.2: mutability)."""
        if attr.required:
            raise Mutability(f"'{where}' is required and cannot be removed")
        container.pop(attr.name, None)

    def remove(self, t: _Target, value: Any) -> None:
        """RFC 7644 §3.5.2.2, plus Entra's ``value`` listing what to remove (facts §4.7, §4.9)."""
        attr = t.attr
        if attr is None:
            self.doc.pop(t.urn, None)
            return
        if attr.mutability == "readOnly" or (t.sub is not None and t.sub.mutability == "readOnly"):
            raise Mutability(f"'{t.where}' is read-only")
        if t.members:
            self.remove_members(t, value)
            return
        container = self.container(t.urn, create=False)
        if t.filter is None and t.sub is None:
            if value is not None and attr.multi_valued:
                self.remove_values(container, attr, value, t.where)
            else:
                self.remove_whole(container, attr, t.where)
            return
        if t.filter is None and not attr.multi_valued:
            assert t.sub is not None
            self.set_sub(container, attr, t.sub, None, t.where)
            return
        elements, matched = self.matching(container, attr, t.filter)
        if not matched:
            return
        if t.sub is None:
            ids = {id(e) for e in matched}
            self.store_elements(container, attr, [e for e in elements if id(e) not in ids])
            return
        self.unassign_sub(container, attr, t.sub, elements, matched)

    def unassign_sub(
        self,
        container: dict[str, Any],
        attr: S.Attribute,
        sub: S.Attribute,
        elements: list[Any],
        matched: list[Any],
    ) -> None:
        """Unassign ``sub`` in the matched elements. An element of a multi-valued attribute
        that loses its ``value`` goes: Entra clears a work email with ``remove
        emails[type eq "work"].value``, which left ``{"type": "work", "primary": true}``,
        an email of no address."""
        for e in matched:
            e.pop(sub.name, None)
        if attr.multi_valued and sub.name == "value":
            gone = {id(e) for e in matched}
            kept = [e for e in elements if id(e) not in gone]
        else:
            kept = [e for e in elements if e]
        self.store_elements(container, attr, kept)

    def remove_values(
        self, container: dict[str, Any], attr: S.Attribute, value: Any, where: str
    ) -> None:
        """``remove`` with a ``value`` on a multi-valued attribute removes only those values.

        An object selects the elements holding all its sub-attribute values; a bare value
        selects elements by their ``value`` sub-attribute.
        """
        old = container.get(attr.name)
        if not isinstance(old, list):
            return
        items = value if isinstance(value, list) else [value]
        self.examine(len(old) * max(len(items), 1))
        if not attr.is_complex:
            drop = [normalise_value(attr, [i], where) for i in items if i is not None]
            remaining = [e for e in old if not any(d and e == d[0] for d in drop)]
            self.store_elements(container, attr, remaining)
            return
        selectors: list[dict[str, Any]] = []
        for item in items:
            if item is None:
                continue
            if isinstance(item, dict):
                selector = normalise_complex(attr, item, where)
            elif "value" in attr.sub:
                # A bare value stands for the element's value: named so in its error ('emails'
                # must be a string, it said, of a list of objects).
                selector = {"value": normalise_value(attr.sub["value"], item, f"{where}.value")}
            else:
                raise InvalidValue(f"'{where}' values to remove must be JSON objects")
            if selector:
                selectors.append(selector)
        remaining = [
            e for e in old if not (isinstance(e, dict) and any(_has(e, s, attr) for s in selectors))
        ]
        self.store_elements(container, attr, remaining)

    # -- group members --------------------------------------------------------------------

    def member_list(self, value: Any, where: str) -> list[dict[str, str]]:
        return member_list(self.rt.core.attr["members"], value, where)

    def set_members(self, op: str, t: _Target, value: Any) -> None:
        """add/replace on ``members`` becomes an add/replace member op."""
        if t.filter is not None or t.sub is not None:
            raise Mutability(
                f"'{t.text}': members are immutable; add or remove whole members instead"
            )
        if value is None:
            self.member_ops.append(MemberOp("remove_all"))
            return
        members = self.member_list(value, t.where)
        if op == "add":
            if members:
                self.member_ops.append(MemberOp("add", members))
        else:
            self.member_ops.append(MemberOp("replace", members))

    def remove_members(self, t: _Target, value: Any) -> None:
        """remove on ``members``: all, the listed ids (Entra), or those a filter selects."""
        if t.sub is not None:
            raise Mutability(f"'{t.text}': members are immutable; remove whole members instead")
        if t.filter is None:
            if value is None:
                self.member_ops.append(MemberOp("remove_all"))
                return
            if value == []:
                return
            ids = compat.members_remove_selector(self.member_list(value, t.where))
        else:
            listed = _value_ids(t.filter)
            if listed is None:
                attr = t.attr
                assert attr is not None
                f = t.filter
                members = self.current_members()
                self.examine(len(members))
                listed = [m["value"] for m in members if matches_element(f, m, attr)]
            ids = listed
        if ids:
            unique = list(dict.fromkeys(ids))
            self.member_ops.append(MemberOp("remove", [{"value": i} for i in unique]))

    def current_members(self) -> list[dict[str, Any]]:
        """The members as the operations so far left them: stored ones, then member ops."""
        if self._loaded is None:
            if self.load_members is None:
                raise ScimError("this member filter needs the group's current members", status=500)
            self._loaded = [
                {k: v for k, v in m.items() if v is not None and k in ("value", "type")}
                for m in self.load_members()
            ]
        state = {m["value"]: m for m in self._loaded}
        for mop in self.member_ops:
            if mop.kind == "add":
                for m in mop.members:
                    state.setdefault(m["value"], dict(m))
            elif mop.kind == "remove":
                for m in mop.members:
                    state.pop(m["value"], None)
            elif mop.kind == "remove_all":
                state.clear()
            else:
                state = {m["value"]: dict(m) for m in mop.members}
        # Those this PATCH added are given their real type: one added without a type had
        # none, and one added with a wrong type was judged by it (a user sent as a "Group"
        # went with `members[type eq "Group"]`, and the group sent as a "User" stayed).
        stored: dict[str, Any] = {m["value"]: m.get("type") for m in self._loaded}
        added = []
        for i, m in state.items():
            kind = stored.get(i)
            if kind:
                m["type"] = kind
            else:
                added.append(i)
        if added and self.member_types is not None:
            # Asked once per id: each filtered operation builds the state again.
            unknown = [i for i in added if i not in self._kinds]
            if unknown:
                self._kinds.update(self.member_types(unknown))
            for i in added:
                if i in self._kinds:
                    state[i]["type"] = self._kinds[i]
        return list(state.values())
