"""Binding filters to a resource type, and the in-memory evaluator that defines their meaning.

``bind`` turns a parsed tree into one with canonical attribute spellings and literals of the
attribute's type, or raises ``invalidFilter`` (unknown attribute, type mismatch, operator that
makes no sense for the type): a filter is never silently "match all". ``matches`` is the reference
semantics the SQL compiler in ``scimd.store`` is tested against:

- a comparison matches if any value of a multi-valued attribute matches;
- ``ne x`` is ``not (eq x)``: an absent attribute is ``ne`` anything;
- ``eq null`` is ``not pr``, ``ne null`` is ``pr``;
- strings compare lower-cased unless the attribute is ``caseExact``;
- ``pr`` needs a non-empty value (not "", not [], not {}).
"""

from __future__ import annotations

import math
from typing import Any

from scimd.scim import schema as S
from scimd.scim.errors import InvalidFilter, InvalidPath, InvalidValue
from scimd.scim.filter import (
    And,
    AttrPath,
    Compare,
    Filter,
    Literal,
    Not,
    Or,
    Present,
    ValuePath,
)
from scimd.scim.resource import schemas_of
from scimd.scim.values import (
    canonical_datetime,
    coerce_scalar,
    finer_than_stored,
    fold,
    instant,
)

STRINGISH = frozenset({S.STRING, S.REFERENCE, S.BINARY})
ORDERED = frozenset({S.STRING, S.REFERENCE, S.INTEGER, S.DECIMAL, S.DATETIME})


def bind(f: Filter, rt: S.ResourceType) -> Filter:
    """Resolve every attribute of ``f`` against ``rt``; raise ``InvalidFilter``."""
    if isinstance(f, And):
        return And(bind(f.left, rt), bind(f.right, rt))
    if isinstance(f, Or):
        return Or(bind(f.left, rt), bind(f.right, rt))
    if isinstance(f, Not):
        return Not(bind(f.expr, rt))
    if isinstance(f, ValuePath):
        path, res = resolve_path(f.path, rt)
        if not res.attr.is_complex or not res.attr.multi_valued or res.sub is not None:
            raise InvalidFilter(
                f"'{f.path}[...]' needs a multi-valued complex attribute; "
                f"'{res.attr.name}' is not one"
            )
        return ValuePath(path, bind_element(f.filter, res.attr))
    path, res = resolve_path(f.path, rt)
    return _bind_leaf(f, path, res.attr, res.sub)


# Matches nothing in any resource type (every resource has an id).
EVERYTHING: Filter = Present(AttrPath(None, "id"))
NOTHING: Filter = Not(EVERYTHING)


def bind_each(f: Filter, rts: list[S.ResourceType]) -> list[Filter]:
    """``f`` bound to each of ``rts`` (a search across resource types, RFC 7644 §3.4.3).

    RFC 7644 §3.4.2.2: an attribute a resource type does not have is taken as having no value
    there, so a comparison on it matches nothing (and ``not`` of it, everything). An attribute
    no type has is still an ``invalidFilter``.
    """
    if isinstance(f, (And, Or)):
        lefts, rights = bind_each(f.left, rts), bind_each(f.right, rts)
        return [type(f)(a, b) for a, b in zip(lefts, rights, strict=True)]
    if isinstance(f, Not):
        return [Not(e) for e in bind_each(f.expr, rts)]
    out: list[Filter | None] = []
    first: InvalidFilter | None = None
    for rt in rts:
        try:
            resolve_path(f.path, rt)
        except InvalidFilter as e:
            first = first or e
            out.append(None)
            continue
        out.append(bind(f, rt))
    if all(e is None for e in out):
        assert first is not None
        raise first
    # An attribute the type lacks has no value there: `ne "x"` and `eq null` (`not pr`) match
    # it, as they match a resource of a type that has the attribute but not its value; every
    # other comparison (and `pr`) does not.
    absent = (
        EVERYTHING
        if isinstance(f, Compare) and (f.op == "ne") != (f.value is None) and f.op in ("eq", "ne")
        else NOTHING
    )
    return [absent if e is None else e for e in out]


def bind_element(f: Filter, parent: S.Attribute) -> Filter:
    """Bind a filter whose paths name sub-attributes of the multi-valued ``parent``."""
    if isinstance(f, And):
        return And(bind_element(f.left, parent), bind_element(f.right, parent))
    if isinstance(f, Or):
        return Or(bind_element(f.left, parent), bind_element(f.right, parent))
    if isinstance(f, Not):
        return Not(bind_element(f.expr, parent))
    if isinstance(f, ValuePath):
        raise InvalidFilter("value filters cannot be nested")
    p = f.path
    if p.schema or p.sub:
        raise InvalidFilter(
            f"inside '{parent.name}[...]' name a sub-attribute of '{parent.name}', not '{p}'"
        )
    sub = parent.sub.get(p.attr.lower())
    if sub is None:
        raise InvalidFilter(f"attribute '{parent.name}' has no sub-attribute '{p.attr}'")
    return _bind_leaf(f, AttrPath(None, sub.name), sub, None, f"{parent.name}.{sub.name}")


def resolve_path(p: AttrPath, rt: S.ResourceType) -> tuple[AttrPath, S.Resolved]:
    """The canonical path and definitions of a filter attribute; raise ``InvalidFilter``."""
    schema: S.Schema | None = None
    if p.schema:
        schema = rt.by_urn.get(p.schema.lower())
        if schema is None:
            whole = f"{p.schema}:{p.attr}"
            if whole.lower() in rt.by_urn:  # the parser took the schema's last word for a name
                raise InvalidFilter(
                    f"'{whole}' names a schema, not an attribute: filter on one of its"
                    f" attributes, as in '{whole}:<attribute> pr'"
                )
            raise InvalidFilter(f"unknown schema '{p.schema}' in filter attribute '{p}'")
    try:
        res = rt.resolve_parts(schema, p.attr, p.sub, str(p))
    except InvalidPath as e:
        raise InvalidFilter(e.detail) from None
    urn = res.schema if res.schema not in ("", rt.core.id) else None
    return AttrPath(urn, res.attr.name, res.sub.name if res.sub else None), res


def sort_path(rt: S.ResourceType, sort_by: str) -> AttrPath:
    """``sortBy`` resolved to its canonical path (the portal and the SCIM API sort alike)."""
    res = rt.resolve(sort_by)
    urn = res.schema if res.schema not in ("", rt.core.id) else None
    path = AttrPath(urn, res.attr.name, res.sub.name if res.sub else None)
    if res.attr.returned == "never" or (res.sub is not None and res.sub.returned == "never"):
        # The order would tell which resources have a password, which filters refuse to.
        raise InvalidValue(f"cannot sort by '{path}': it is never returned")
    if urn is None and res.attr.name == "schemas":
        raise InvalidValue("cannot sort by 'schemas', a list of schema URIs")
    return path


def _bind_leaf(
    f: Compare | Present,
    path: AttrPath,
    attr: S.Attribute,
    sub: S.Attribute | None,
    named: str | None = None,
) -> Filter:
    """``named``: what its errors call the attribute, when ``path`` is a sub-attribute's
    inside a value filter ('emails.value' for the ``value`` of ``emails[value eq 5]``)."""
    target = sub or attr
    shown = named or str(path)
    if attr.returned == "never" or target.returned == "never":
        # A filter on a never-returned attribute (password) would let a client probe it.
        raise InvalidFilter(f"'{shown}' is never returned and cannot be used in a filter")
    if isinstance(f, Present):
        return Present(path)
    if target.is_complex:
        value_sub = target.sub.get("value")
        if value_sub is None:
            raise InvalidFilter(
                f"'{shown}' is complex: compare one of its sub-attributes"
                f" ({', '.join(s.name for s in target.sub_attributes)})"
            )
        # Compat: Entra's reference check compares ``manager eq "<id>"`` (facts §1.4 ex. 4);
        # a complex attribute compared as a whole means its ``value``.
        path = AttrPath(path.schema, path.attr, value_sub.name)
        target = value_sub
        shown = named or str(path)
    if f.value is None:
        if f.op not in ("eq", "ne"):
            raise InvalidFilter(f"'{f.op} null' is not meaningful; use 'pr' or 'eq null'")
        return Compare(path, f.op, None)
    if f.op in ("co", "sw", "ew") and target.type not in STRINGISH:
        raise InvalidFilter(f"'{f.op}' needs a string attribute; '{shown}' is {target.type}")
    if f.op in ("gt", "ge", "lt", "le") and target.type not in ORDERED:
        raise InvalidFilter(f"'{f.op}' cannot order '{shown}', a {target.type} attribute")
    if target.type in STRINGISH and not isinstance(f.value, str):
        raise InvalidFilter(f"'{shown}' is a string attribute: quote the value")
    date_text = target.value_format == "date" and isinstance(f.value, str)
    if f.op in ("co", "sw", "ew") and date_text and "\x00" not in str(f.value):
        # A Date property is a string in /Schemas: its text takes the string operators
        # (``sw "2020-"``), not only whole dates (they were a 400 asking for YYYY-MM-DD).
        return Compare(path, f.op, f.value)
    if target.type == S.INTEGER and isinstance(f.value, float) and not f.value.is_integer():
        return _integer_against_fraction(path, f.op, f.value)
    if target.type == S.DATETIME and isinstance(f.value, str) and attr is S.COMMON["meta"]:
        # meta.created and meta.lastModified are stored in UTC to the millisecond: a literal
        # of any precision is compared exactly (a property's value has at most 9 digits).
        value = canonical_datetime(f.value)
        if value is not None:
            if finer_than_stored(f.value):
                return _finer_datetime(path, f.op, value)
            return Compare(path, f.op, value)
    try:
        value = coerce_scalar(target, f.value, str(path))
    except InvalidValue as e:
        raise InvalidFilter(e.detail + _plus_hint(target, f.value)) from None
    if target.type == S.DATETIME and isinstance(f.value, str):
        # Properties, stored as sent (at most 9 digits of a second): compared as instants.
        return Compare(path, f.op, instant(f.value))
    return Compare(path, f.op, value)


def _plus_hint(target: S.Attribute, value: Any) -> str:
    """For a dateTime whose offset's "+" a query string turned into a space (form decoding,
    which Entra's own filters rely on): say so, as the text shown has only a space."""
    if target.type != S.DATETIME or not isinstance(value, str) or " " not in value.strip():
        return ""
    head, _, offset = value.strip().rpartition(" ")
    if canonical_datetime(f"{head}+{offset}") is None:
        return ""
    return f"; a '+' in a query string is read as a space: write the offset as %2B{offset}"


def _integer_against_fraction(path: AttrPath, op: str, number: float) -> Filter:
    """An Integer compared with a number that has a fraction (``Age gt 41.5``): a 400 ("must
    be an integer"), though RFC 7644 §3.4.2.2 compares numbers. As the integers it means: no
    integer equals it, every one differs from it, and ``gt``/``ge`` 41.5 is ``ge`` 42."""
    if op == "eq":
        return NOTHING
    if op == "ne":
        return EVERYTHING
    if op in ("gt", "ge"):
        return Compare(path, "ge", math.ceil(number))
    return Compare(path, "le", math.floor(number))


def _finer_datetime(path: AttrPath, op: str, floor: str) -> Filter:
    """A comparison with a dateTime literal finer than the millisecond stored values keep,
    as its exact meaning (RFC 7644 §3.4.2.2), on ``floor``, the literal cut to milliseconds:
    a stored value is never equal to it, is later than it when later than ``floor``, and
    earlier than it when not later than ``floor``. (Cut alone, ``lt "...27.5371Z"`` missed
    a value at .537, and ``eq "...27.5379Z"`` matched it.)"""
    if op in ("gt", "ge"):
        return Compare(path, "gt", floor)
    if op in ("lt", "le"):
        return Compare(path, "le", floor)
    never = And(Compare(path, "gt", floor), Compare(path, "le", floor))
    return never if op == "eq" else Not(never)


# What a relation (a group's ``members``, a user's ``groups``) can be filtered on: a
# membership is stored as a member's id and type (and a group's name), nothing else.
RELATION_FILTERABLE = {"members": ("value", "type"), "groups": ("value", "type", "display")}


def check_relation_filter(attr: str, sub: str) -> None:
    """Refuse filtering ``attr``'s sub-attribute ``sub`` where storage cannot: a search
    could not answer it, and a PATCH removing ``members[display eq "x"]`` removed no one."""
    allowed = RELATION_FILTERABLE.get(attr)
    if allowed is not None and sub not in allowed:
        raise InvalidFilter(
            f"filtering on '{attr}.{sub}' is not supported;"
            f" filter on {' or '.join(f'{attr}.{a}' for a in allowed)}"
        )


# ---------------------------------------------------------------------------------------------
# Evaluation


def matches(f: Filter, resource: dict[str, Any], rt: S.ResourceType) -> bool:
    """Whether ``resource`` (canonical spelling) satisfies the bound filter ``f``."""
    if isinstance(f, And):
        return matches(f.left, resource, rt) and matches(f.right, resource, rt)
    if isinstance(f, Or):
        return matches(f.left, resource, rt) or matches(f.right, resource, rt)
    if isinstance(f, Not):
        return not matches(f.expr, resource, rt)
    if isinstance(f, ValuePath):
        parent = _definition(f.path, rt)
        elements = _container(resource, f.path).get(f.path.attr)
        if not isinstance(elements, list):
            return False
        return any(isinstance(e, dict) and matches_element(f.filter, e, parent) for e in elements)
    target = _definition(f.path, rt)
    return _leaf(f, values_at(resource, f.path, rt), target)


def matches_element(f: Filter, element: dict[str, Any], parent: S.Attribute) -> bool:
    """Evaluate a value filter on one element of the multi-valued ``parent``."""
    if isinstance(f, And):
        return matches_element(f.left, element, parent) and matches_element(
            f.right, element, parent
        )
    if isinstance(f, Or):
        return matches_element(f.left, element, parent) or matches_element(f.right, element, parent)
    if isinstance(f, Not):
        return not matches_element(f.expr, element, parent)
    if isinstance(f, ValuePath):  # pragma: no cover - rejected by bind_element
        raise InvalidFilter("value filters cannot be nested")
    sub = parent.sub[f.path.attr.lower()]
    v = element.get(sub.name)
    return _leaf(f, [] if v is None else [v], sub)


def _definition(p: AttrPath, rt: S.ResourceType) -> S.Attribute:
    schema = rt.by_urn[p.schema.lower()] if p.schema else None
    return rt.resolve_parts(schema, p.attr, p.sub).target


def _container(resource: dict[str, Any], p: AttrPath) -> dict[str, Any]:
    if p.schema:
        ext = resource.get(p.schema)
        return ext if isinstance(ext, dict) else {}
    return resource


def values_at(resource: dict[str, Any], p: AttrPath, rt: S.ResourceType) -> list[Any]:
    """All non-null values at a bound path (one list whatever the multiplicity)."""
    if p.attr == "schemas" and p.schema is None:
        return schemas_of(rt, resource)
    v = _container(resource, p).get(p.attr)
    if v is None:
        return []
    items = v if isinstance(v, list) else [v]
    if p.sub is None:
        return items
    out = []
    for item in items:
        if isinstance(item, dict):
            x = item.get(p.sub)
            if x is not None:
                out.append(x)
    return out


def is_present(v: Any) -> bool:
    if v is None or v == "":
        return False
    if isinstance(v, list):
        return any(is_present(x) for x in v)
    if isinstance(v, dict):
        return any(is_present(x) for x in v.values())
    return True


def _leaf(f: Filter, values: list[Any], attr: S.Attribute) -> bool:
    if isinstance(f, Present):
        return any(is_present(v) for v in values)
    assert isinstance(f, Compare)
    if f.value is None:
        present = any(is_present(v) for v in values)
        return not present if f.op == "eq" else present
    if f.op == "ne":
        return not any(compare("eq", v, f.value, attr) for v in values)
    return any(compare(f.op, v, f.value, attr) for v in values)


def compare(op: str, x: Any, v: Literal, attr: S.Attribute) -> bool:
    """One stored value ``x`` against a bound literal ``v``."""
    t = attr.type
    if t == S.DATETIME:
        # Stored as sent: compared as instants (meta's values and literals are canonical).
        xi, vi = instant(x), instant(v)
        if xi is None or vi is None:
            return False
        x, v = xi, vi
    elif t in STRINGISH:
        if not isinstance(x, str) or not isinstance(v, str):
            return False
        if not attr.case_exact:
            x, v = fold(x), fold(v)
    elif t == S.BOOLEAN:
        return op == "eq" and isinstance(x, bool) and x is v
    else:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
    if op == "eq":
        return bool(x == v)
    if op == "co":
        return isinstance(x, str) and isinstance(v, str) and v in x
    if op == "sw":
        return isinstance(x, str) and isinstance(v, str) and x.startswith(v)
    if op == "ew":
        return isinstance(x, str) and isinstance(v, str) and x.endswith(v)
    if op == "gt":
        return bool(x > v)
    if op == "ge":
        return bool(x >= v)
    if op == "lt":
        return bool(x < v)
    if op == "le":
        return bool(x <= v)
    raise InvalidFilter(f"unknown operator '{op}'")  # pragma: no cover
