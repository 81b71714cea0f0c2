"""Compiling bound SCIM filters and ``sortBy`` paths to SQL (SQLite and PostgreSQL).

``compile_filter`` turns a filter bound by ``scimd.scim.query.bind`` into a boolean SQL expression
over the ``users`` or ``groups`` table; ``scimd.scim.query.matches`` is its specification, and the
property tests hold the two equal. Where the values live:

- ``id``, ``externalId``, ``meta.created``, ``meta.lastModified`` are columns; ``userName`` and
  group ``displayName`` compare through ``user_name_lower`` / ``display_name_lower`` (Python's
  ``str.lower()``) so the unique indexes serve ``eq`` and ``sw``; ``active`` is a column;
  ``meta.resourceType`` is a constant and ``meta.version`` is ``W/"<version>"`` (for a user in
  groups, whose tag adds a digest of them, its own version: the digest is not stored);
- everything else is in the JSON ``doc`` (extension attributes under their URN key): SQLite reads
  it with ``json_type``/``json_extract``/``json_each``, PostgreSQL with ``->``/``->>``/
  ``jsonb_array_elements``; a value of the wrong JSON type never matches and never errors;
- group ``members`` (value, type) and user ``groups`` (value, display, type) come from the
  ``members`` table; their ``$ref`` and ``display`` are not stored and cannot be filtered on.

SQL three-valued logic: a leaf may be NULL where the evaluator says false. ``and``/``or`` are
monotone, so NULL behaves as false through them; ``not`` (and ``ne``, which is ``not eq``) is
rendered ``IS NOT TRUE``, which maps NULL to true exactly as ``not false`` does.

Strings compare in code-point order like Python: SQLite's BINARY collation is that order, and on
PostgreSQL ordering comparisons use ``COLLATE "C"``. Case folding is ``values.fold``,
Python's ``str.lower()`` with one small sigma: on SQLite the ``py_lower`` function, on
PostgreSQL ``lower()`` in ICU's root locale (``PG_FOLD``), which maps every code point as Python
does (final sigma, ``İ``), then ``replace`` of the final sigma. The database's
own ``lower()`` follows its LC_CTYPE: ASCII only under ``C``, and under ``C.UTF-8`` "ΣΑΣ" and
"İ" differently from Python, so a value did not even equal itself in a filter. Numbers compare
numerically (PostgreSQL ``numeric`` against the literal's shortest decimal form: exact against
Python for integers up to 2**53 and for floats, which is what canonical values hold). Literal
values are always bound parameters.

``sort_key`` and ``sort_value`` give ``sortBy`` (RFC 7644 §3.4.2.3) one meaning in SQL and in
Python: a multi-valued attribute sorts by its primary element if any, else its first; strings by
their lower-cased form unless ``caseExact``; a missing value or one of the wrong type is absent,
and absent values sort last ascending and first descending (``sort_clauses``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH

from scimd.scim import schema as S
from scimd.scim.errors import InvalidFilter, InvalidValue
from scimd.scim.filter import And, AttrPath, Compare, Filter, Literal, Not, Or, Present, ValuePath
from scimd.scim.query import (
    STRINGISH,
    bind,
    check_relation_filter,
    compare,
    is_present,
    resolve_path,
)
from scimd.scim.values import FINAL_SIGMA, RFC3339, SIGMA, fold, instant
from scimd.store import tables

__all__ = [
    "PG_FOLD",
    "compile_filter",
    "sort_clauses",
    "sort_key",
    "sort_key_nullable",
    "sort_value",
]

# The PostgreSQL collation whose lower() is Python's str.lower(): ICU's root locale, present in
# every ICU-enabled build (``migrate.ensure_current`` checks for it).
PG_FOLD = "und-x-icu"

Bool = sa.ColumnElement[bool]
Expr = sa.ColumnElement[Any]
Pred = Callable[["_Value"], Bool]

_ORDER: dict[str, Callable[[Any, Any], Bool]] = {
    "eq": operator.eq,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_LIKE_ESCAPE = "\\"
_SQLITE_NUMBER = ("integer", "real")


def compile_filter(f: Filter, rt: S.ResourceType, table: sa.Table, dialect_name: str) -> Bool:
    """The SQL condition selecting the rows of ``table`` whose resource matches ``f``.

    ``f`` is a bound filter (``query.bind``) for ``rt`` (User or Group); ``table`` is
    ``tables.users`` or ``tables.groups``; ``dialect_name`` is ``sqlite`` or ``postgresql``.
    Raises ``InvalidFilter`` for an attribute that cannot be filtered on (``meta.location``,
    ``members.$ref``, ``members.display``, ``groups.$ref``).
    """
    c = _Compiler(rt, table, dialect_name)
    return c.filter(bind(f, rt))


def sort_key(path: AttrPath, rt: S.ResourceType, table: sa.Table, dialect_name: str) -> Expr:
    """The value ``sortBy=path`` orders by: NULL when absent (see ``sort_value``)."""
    return _Compiler(rt, table, dialect_name).sort_key(path)[0]


def sort_key_nullable(
    path: AttrPath, rt: S.ResourceType, table: sa.Table, dialect_name: str
) -> tuple[Expr, bool]:
    """``sort_key`` and whether it can be NULL (a cursor's condition needs to know)."""
    return _Compiler(rt, table, dialect_name).sort_key(path)


def sort_clauses(
    path: AttrPath,
    rt: S.ResourceType,
    table: sa.Table,
    dialect_name: str,
    descending: bool = False,
) -> list[sa.ColumnElement[Any]]:
    """ORDER BY clauses for ``sortBy``: absent values last ascending, first descending; ties by
    ``pk``."""
    key, nullable = _Compiler(rt, table, dialect_name).sort_key(path)
    clause: sa.ColumnElement[Any]
    if descending:
        clause = key.desc().nulls_first() if nullable else key.desc()
    else:
        clause = key.asc().nulls_last() if nullable else key.asc()
    return [clause, table.c.pk.asc()]


def sort_value(resource: dict[str, Any], path: AttrPath, rt: S.ResourceType) -> Any:
    """The Python twin of ``sort_key``: the comparable value of ``resource``, or None if absent.

    ``resource`` is the rendered resource (``id``, ``meta``, ``groups`` included).
    """
    urn, attr, sub = _resolve_sort(path, rt)
    container: Any = resource.get(urn) if urn else resource
    v = container.get(attr.name) if isinstance(container, dict) else None
    if attr.multi_valued:
        if not isinstance(v, list) or not v:
            return None
        chosen = v[0]
        if attr.is_complex and "primary" in attr.sub:
            chosen = next(
                (e for e in v if isinstance(e, dict) and e.get("primary") is True), chosen
            )
        v = chosen
    if sub is not None:
        v = v.get(sub.name) if isinstance(v, dict) else None
    target = sub or attr
    t = target.type
    if t == S.DATETIME:
        return instant(v)  # meta's canonical values sort the same way as their instants
    if t in STRINGISH:
        if not isinstance(v, str):
            return None
        if sub is not None and sub.name == "version" and attr is S.COMMON["meta"] and "." in v:
            v = v.split(".", 1)[0] + '"'  # a user's own version, as the SQL sorts it
        return fold(v) if _folds(target) else v
    if t == S.BOOLEAN:
        return v if isinstance(v, bool) else None
    if t in (S.INTEGER, S.DECIMAL):
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return None  # pragma: no cover - complex targets are rejected by _resolve_sort


# ---------------------------------------------------------------------------------------------
# Helpers


def _folds(attr: S.Attribute) -> bool:
    """Whether comparisons on ``attr`` are case-insensitive (as in ``query.compare``)."""
    return attr.type in STRINGISH and not attr.case_exact


def _text(v: str) -> Expr:
    return sa.literal(v, sa.Text())


def _const(b: bool) -> Bool:
    return sa.true() if b else sa.false()


def _is_const(x: Bool, value: bool) -> bool:
    return isinstance(x, sa.sql.elements.True_ if value else sa.sql.elements.False_)


def _not(x: Bool) -> Bool:
    """Two-valued negation: NULL (unknown) counts as false, so its negation is true."""
    if _is_const(x, True):
        return sa.false()
    if _is_const(x, False):
        return sa.true()
    return x.is_not(sa.true())


def _and(*xs: Bool | None) -> Bool:
    return sa.and_(*(x for x in xs if x is not None))


def _like_pattern(prefix: str, v: str, suffix: str) -> str:
    e = _LIKE_ESCAPE
    escaped = v.replace(e, e + e).replace("%", e + "%").replace("_", e + "_")
    return prefix + escaped + suffix


def _successor(v: str) -> str | None:
    """The least string greater than every string starting with ``v`` (code-point order).

    ``x.startswith(v)`` is exactly ``v <= x < _successor(v)``; None means no upper bound.
    """
    chars = list(v)
    while chars:
        last = ord(chars.pop())
        if last == 0x10FFFF:
            continue
        nxt = 0xE000 if last == 0xD7FF else last + 1  # no string holds a surrogate
        return "".join(chars) + chr(nxt)
    return None


def _resolve(p: AttrPath, rt: S.ResourceType) -> tuple[str | None, S.Attribute, S.Attribute | None]:
    """(extension URN or None, attribute, sub-attribute) of a path; raise ``InvalidFilter``."""
    path, res = resolve_path(p, rt)
    return path.schema, res.attr, res.sub


def _resolve_sort(
    p: AttrPath, rt: S.ResourceType
) -> tuple[str | None, S.Attribute, S.Attribute | None]:
    urn, attr, sub = _resolve(p, rt)
    if urn is None and (
        attr.name in ("groups", "members")
        or (attr.name == "meta" and sub and sub.name == "location")
    ):
        # Membership lists have no defined order to take "the first" from; location is not stored.
        raise InvalidValue(
            f"sorting by '{p}' is not supported"
            + (
                ": a membership list has no order to sort by; sort by displayName, id or"
                " meta.lastModified"
                if attr.name in ("groups", "members")
                else ": a location is the id's URL; sort by id"
            )
        )
    target = sub or attr
    if target.is_complex:
        value = target.sub.get("value")
        if value is None or sub is not None:
            raise InvalidValue(f"cannot sort by '{p}': name one of its sub-attributes")
        sub = value
    return urn, attr, sub


# ---------------------------------------------------------------------------------------------
# Values: one SCIM scalar as SQL, wherever it is stored


class _Value:
    """A scalar attribute value in SQL; each accessor yields NULL or false when it is absent or
    of another type."""

    def string(self) -> tuple[Bool | None, Expr, bool]:
        """(guard, text, already lower-cased)."""
        raise InvalidFilter("this attribute does not hold strings")

    def number(self) -> tuple[Bool | None, Expr]:
        raise InvalidFilter("this attribute does not hold numbers")

    def is_bool(self, v: bool) -> Bool:
        raise InvalidFilter("this attribute does not hold booleans")

    def bool_value(self) -> Expr:
        raise InvalidFilter("this attribute does not hold booleans")

    def present(self) -> Bool:
        raise NotImplementedError


class _Column(_Value):
    """A column (or an expression over columns) holding the value itself."""

    def __init__(self, col: Expr, kind: str, nullable: bool, lowered: bool = False) -> None:
        self.col, self.kind, self.nullable, self.lowered = col, kind, nullable, lowered

    def _guard(self) -> Bool | None:
        return self.col.is_not(None) if self.nullable else None

    def string(self) -> tuple[Bool | None, Expr, bool]:
        if self.kind != "string":
            return super().string()
        return self._guard(), self.col, self.lowered

    def number(self) -> tuple[Bool | None, Expr]:
        if self.kind != "number":
            return super().number()
        return self._guard(), self.col

    def is_bool(self, v: bool) -> Bool:
        if self.kind != "boolean":
            return super().is_bool(v)
        return self.col == sa.literal(v, sa.Boolean())

    def bool_value(self) -> Expr:
        if self.kind != "boolean":
            return super().bool_value()
        return self.col

    def present(self) -> Bool:
        if self.kind == "string":
            return _and(self._guard(), self.col != _text(""))
        return self.col.is_not(None)


class _ConstValue(_Value):
    """A value known without looking at the row (``meta.resourceType``, ``groups.type``)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def string(self) -> tuple[Bool | None, Expr, bool]:
        return None, _text(self.value), False

    def present(self) -> Bool:
        return _const(is_present(self.value))


class _SqliteJson(_Value):
    """``json_type(container, path)`` / ``json_extract(container, path)`` on SQLite."""

    def __init__(self, container: Expr, path: str) -> None:
        self.container, self.path = container, path
        self.type: Expr = sa.func.json_type(container, _text(path))
        self.value: Expr = sa.func.json_extract(container, _text(path))

    def string(self) -> tuple[Bool | None, Expr, bool]:
        return self.type == _text("text"), self.value, False

    def number(self) -> tuple[Bool | None, Expr]:
        return self.type.in_(_SQLITE_NUMBER), self.value

    def is_bool(self, v: bool) -> Bool:
        return self.type == _text("true" if v else "false")

    def bool_value(self) -> Expr:
        return sa.case((self.type.in_(("true", "false")), self.type == _text("true")))

    def present(self) -> Bool:
        tree = sa.func.json_tree(self.container, _text(self.path))
        return _sqlite_present(self.type, self.value, tree)

    def holds_object(self) -> Bool:
        """An object with at least one key (``""`` values included), as ``schemas`` lists."""
        return sa.and_(self.type == _text("object"), self.value != _text("{}"))


class _SqliteAtom(_SqliteJson):
    """An element of a ``json_each``: its ``type``, ``atom`` and ``value`` columns."""

    def __init__(self, type_: Expr, atom: Expr, json: Expr) -> None:
        self.type, self.value, self.json = type_, atom, json

    def present(self) -> Bool:
        return _sqlite_present(self.type, self.value, sa.func.json_tree(self.json))


def _sqlite_present_atom(type_: Expr, atom: Expr) -> Bool:
    return sa.or_(
        type_.in_((*_SQLITE_NUMBER, "true", "false")),
        sa.and_(type_ == _text("text"), atom != _text("")),
    )


def _sqlite_present(type_: Expr, atom: Expr, json_tree: Any) -> Bool:
    """``query.is_present``: a scalar other than "", or a container holding one at any depth."""
    tree = json_tree.table_valued("type", "atom")
    deep = (
        sa.select(sa.literal(1))
        .select_from(tree)
        .where(_sqlite_present_atom(tree.c.type, tree.c.atom))
        .correlate_except(tree)
        .exists()
    )
    # CASE: walk the tree only for containers.
    return sa.case((type_.in_(("array", "object")), deep), else_=_sqlite_present_atom(type_, atom))


_PG_PRESENT_PATH = (
    'strict $.** ? (@.type() == "number" || @.type() == "boolean"'
    ' || (@.type() == "string" && @ != ""))'
)


# The dateTime texts PostgreSQL casts as Python reads them: values.py's stored forms.
_PG_INSTANT = f"^{RFC3339}$"


class _PgJson(_Value):
    """A ``jsonb`` value on PostgreSQL: ``json`` is the jsonb, ``text`` its ``->>`` text."""

    def __init__(self, json: Expr, text: Expr) -> None:
        self.json, self.text = json, text
        self.type = sa.func.jsonb_typeof(json)

    def string(self) -> tuple[Bool | None, Expr, bool]:
        return self.type == _text("string"), self.text, False

    def number(self) -> tuple[Bool | None, Expr]:
        # The cast only runs on numbers: CASE evaluates lazily.
        return None, sa.case((self.type == _text("number"), sa.cast(self.text, sa.Numeric())))

    def is_bool(self, v: bool) -> Bool:
        return sa.and_(self.type == _text("boolean"), self.text == _text("true" if v else "false"))

    def bool_value(self) -> Expr:
        return sa.case((self.type == _text("boolean"), self.text == _text("true")))

    def holds_object(self) -> Bool:
        """An object with at least one key (``""`` values included), as ``schemas`` lists."""
        return sa.and_(self.type == _text("object"), self.json != sa.cast(_text("{}"), JSONB))

    def present(self) -> Bool:
        """``query.is_present``: a scalar other than "", or a container holding one."""
        scalar = sa.or_(
            self.type.in_(("number", "boolean")),
            sa.and_(self.type == _text("string"), self.text != _text("")),
        )
        deep = sa.func.jsonb_path_exists(self.json, sa.cast(_text(_PG_PRESENT_PATH), JSONPATH()))
        return sa.case((self.type.in_(("array", "object")), deep), else_=scalar)


# ---------------------------------------------------------------------------------------------
# Targets: where the values of one attribute path live


class _Target:
    def any(self, pred: Pred) -> Bool:
        """Some value satisfies ``pred``."""
        raise NotImplementedError

    def present(self) -> Bool:
        raise NotImplementedError


class _Single(_Target):
    def __init__(self, value: _Value) -> None:
        self.value = value

    def any(self, pred: Pred) -> Bool:
        return pred(self.value)

    def present(self) -> Bool:
        return self.value.present()


class _Schemas(_Target):
    """``schemas``: the core URN always, each extension URN when the row holds data for it.

    The candidates are known, so a comparison is decided per candidate in Python and becomes
    an OR of "this extension is present" conditions.
    """

    def __init__(self, c: _Compiler) -> None:
        self.c = c

    def _holds(self, urn: str) -> Bool:
        # As ``resource.schemas_of`` decides what a reply lists: an extension object holding
        # anything, ``""`` values included (``present`` would skip those).
        if urn == self.c.rt.core.id:
            return _const(True)
        value = self.c.json([urn])
        assert isinstance(value, (_SqliteJson, _PgJson))
        return value.holds_object()

    def any(self, pred: Pred) -> Bool:
        urns = [self.c.rt.core.id, *(ext.id for ext, _ in self.c.rt.extensions)]
        conds = []
        for urn in urns:
            hit = pred(_ConstValue(urn))
            if not _is_const(hit, False):
                conds.append(_and(hit, self._holds(urn)))
        return sa.or_(*conds) if conds else _const(False)

    def present(self) -> Bool:
        return _const(True)


class _Element:
    """One element of a multi-valued attribute, inside the statement that iterates them."""

    def value(self, sub: S.Attribute | None) -> _Value:
        raise NotImplementedError


class _Elements(_Target):
    """A multi-valued attribute; ``sub`` selects the sub-attribute its values are read from."""

    sub: S.Attribute | None = None

    def exists(self, cond: Callable[[_Element], Bool], objects_only: bool) -> Bool:
        raise NotImplementedError

    def any(self, pred: Pred) -> Bool:
        sub = self.sub
        return self.exists(lambda e: pred(e.value(sub)), objects_only=sub is not None)

    def present(self) -> Bool:
        sub = self.sub
        return self.exists(lambda e: e.value(sub).present(), objects_only=sub is not None)


class _SqliteElement(_Element):
    def __init__(self, each: Any) -> None:
        self.each = each

    def value(self, sub: S.Attribute | None) -> _Value:
        if sub is None:
            return _SqliteAtom(self.each.c.type, self.each.c.atom, self.each.c.value)
        obj = sa.case((self.each.c.type == _text("object"), self.each.c.value))
        return _SqliteJson(obj, _sqlite_path([sub.name]))


class _SqliteArray(_Elements):
    def __init__(self, c: _Compiler, keys: list[str], sub: S.Attribute | None) -> None:
        self.c, self.keys, self.sub = c, keys, sub

    def _each(self) -> tuple[Any, Bool]:
        path = _text(_sqlite_path(self.keys))
        each = (
            sa.func.json_each(self.c.table.c.doc, path)
            .table_valued("key", "value", "type", "atom")
            .alias()
        )
        is_array = sa.func.json_type(self.c.table.c.doc, path) == _text("array")
        return each, is_array

    def exists(self, cond: Callable[[_Element], Bool], objects_only: bool) -> Bool:
        each, is_array = self._each()
        inner = cond(_SqliteElement(each))
        if _is_const(inner, False):
            return sa.false()
        guard = each.c.type == _text("object") if objects_only else None
        q = sa.select(sa.literal(1)).select_from(each).where(_and(is_array, guard, inner))
        return q.correlate(self.c.table).exists()

    def present(self) -> Bool:
        if self.sub is None:
            return self.c.json(self.keys).present()
        return super().present()

    def pick(self, attr: S.Attribute) -> Expr:
        """Sort key: the primary element's value if any, else the first element's."""
        each, is_array = self._each()
        elem = _SqliteElement(each)
        order: list[Any] = []
        if attr.is_complex and "primary" in attr.sub:
            primary = sa.func.json_type(each.c.value, _text(_sqlite_path(["primary"])))
            order.append(
                sa.case(
                    (each.c.type != _text("object"), 1),
                    (primary == _text("true"), 0),
                    else_=1,
                )
            )
        order.append(each.c.key)
        key = self.c.typed_key(elem.value(self.sub), self.sub or attr)
        q = sa.select(key).select_from(each).where(is_array).order_by(*order).limit(1)
        return q.correlate(self.c.table).scalar_subquery()


class _PgElement(_Element):
    def __init__(self, each: Any) -> None:
        self.each = each

    def value(self, sub: S.Attribute | None) -> _Value:
        v = self.each.c.value
        if sub is None:
            return _PgJson(v, v.op("#>>")(sa.literal_column("'{}'::text[]")))
        return _PgJson(_pg_get(v, sub.name), _pg_get_text(v, sub.name))


class _PgArray(_Elements):
    def __init__(self, c: _Compiler, keys: list[str], sub: S.Attribute | None) -> None:
        self.c, self.keys, self.sub = c, keys, sub

    def _json(self) -> Expr:
        j: Expr = self.c.table.c.doc
        for k in self.keys:
            j = _pg_get(j, k)
        return j

    def _each(self, ordinality: bool = False) -> Any:
        j = self._json()
        safe = sa.case(
            (sa.func.jsonb_typeof(j) == _text("array"), j),
            else_=sa.cast(_text("[]"), JSONB()),
        )
        fn = sa.func.jsonb_array_elements(safe)
        if ordinality:
            return fn.table_valued("value", with_ordinality="ord").render_derived()
        return fn.table_valued("value").render_derived()

    def exists(self, cond: Callable[[_Element], Bool], objects_only: bool) -> Bool:
        each = self._each()
        inner = cond(_PgElement(each))
        if _is_const(inner, False):
            return sa.false()
        guard = sa.func.jsonb_typeof(each.c.value) == _text("object") if objects_only else None
        q = sa.select(sa.literal(1)).select_from(each).where(_and(guard, inner))
        return q.correlate(self.c.table).exists()

    def present(self) -> Bool:
        if self.sub is None:
            return self.c.json(self.keys).present()
        return super().present()

    def pick(self, attr: S.Attribute) -> Expr:
        each = self._each(ordinality=True)
        elem = _PgElement(each)
        order: list[Any] = []
        if attr.is_complex and "primary" in attr.sub:
            v = each.c.value
            primary = _PgJson(_pg_get(v, "primary"), _pg_get_text(v, "primary"))
            order.append(sa.case((primary.is_bool(True), 0), else_=1))
        order.append(each.c.ord)
        key = self.c.typed_key(elem.value(self.sub), self.sub or attr)
        q = sa.select(key).select_from(each).order_by(*order).limit(1)
        return q.correlate(self.c.table).scalar_subquery()


class _RowElement(_Element):
    def __init__(self, values: dict[str, _Value]) -> None:
        self.values = values

    def value(self, sub: S.Attribute | None) -> _Value:
        assert sub is not None
        return self.values[sub.name]


class _Relation(_Elements):
    """User ``groups`` or group ``members``: elements are rows of the ``members`` table."""

    def __init__(self, c: _Compiler, attr: S.Attribute, sub: S.Attribute | None) -> None:
        self.c, self.attr, self.sub = c, attr, sub
        if sub is not None:
            self._check(sub)

    def _check(self, sub: S.Attribute) -> None:
        check_relation_filter(self.attr.name, sub.name)

    def exists(self, cond: Callable[[_Element], Bool], objects_only: bool) -> Bool:
        m = tables.members.alias()
        if self.attr.name == "groups":  # the user's groups
            g = tables.groups.alias()
            elem = _RowElement(
                {
                    "value": _Column(g.c.id, "string", nullable=False),
                    "display": _Column(
                        g.c.display_name_lower, "string", nullable=False, lowered=True
                    ),
                    "type": _ConstValue("direct"),
                }
            )
            inner = cond(_CheckedElement(elem, self))
            if _is_const(inner, False):
                return sa.false()
            q = (
                sa.select(m.c.member_id)
                .select_from(m.join(g, g.c.pk == m.c.group_pk))
                .where(m.c.member_type == _text("User"), inner)
            )
            return self.c.table.c.id.in_(q)
        elem = _RowElement(
            {
                "value": _Column(m.c.member_id, "string", nullable=False),
                "type": _Column(m.c.member_type, "string", nullable=False),
            }
        )
        inner = cond(_CheckedElement(elem, self))
        if _is_const(inner, False):
            return sa.false()
        return self.c.table.c.pk.in_(sa.select(m.c.group_pk).where(inner))

    def present(self) -> Bool:
        if self.sub is None:  # every element has a non-empty value
            return self.exists(lambda e: sa.true(), objects_only=True)
        return super().present()


class _CheckedElement(_Element):
    def __init__(self, inner: _RowElement, rel: _Relation) -> None:
        self.inner, self.rel = inner, rel

    def value(self, sub: S.Attribute | None) -> _Value:
        assert sub is not None
        self.rel._check(sub)
        return self.inner.value(sub)


def _sqlite_path(keys: list[str]) -> str:
    for k in keys:
        if '"' in k or "\\" in k:
            raise InvalidFilter(f"attribute name '{k}' cannot be filtered on")
    return "$" + "".join(f'."{k}"' for k in keys)


def _pg_get(j: Expr, key: str) -> Expr:
    return j.op("->", return_type=JSONB())(_text(key))


def _pg_get_text(j: Expr, key: str) -> Expr:
    return j.op("->>", return_type=sa.Text())(_text(key))


# ---------------------------------------------------------------------------------------------
# The compiler


def folded(x: Expr, postgresql: bool) -> Expr:
    """``x`` as ``values.fold`` writes it, in SQL: SQLite's own lower() is ASCII only."""
    if postgresql:  # lower(), then one sigma
        return sa.func.replace(sa.func.lower(sa.collate(x, PG_FOLD)), FINAL_SIGMA, SIGMA)
    return sa.func.py_lower(x)


class _Compiler:
    def __init__(self, rt: S.ResourceType, table: sa.Table, dialect_name: str) -> None:
        if dialect_name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported SQL dialect '{dialect_name}'")
        if rt.name not in ("User", "Group"):
            raise ValueError(f"unsupported resource type '{rt.name}'")
        self.rt, self.table, self.pg = rt, table, dialect_name == "postgresql"

    # -- dialect primitives -------------------------------------------------------------------
    def lower(self, x: Expr) -> Expr:
        return folded(x, self.pg)

    def ordered(self, x: Expr) -> Expr:
        return sa.collate(x, "C") if self.pg else x

    def number(self, v: int | float) -> Expr:
        if self.pg:
            # The shortest decimal form, as the JSON text was written: see the module docstring.
            # (A whole double from -2^63 to 2^64 is an integer by now: values.coerce_scalar.)
            return sa.literal(Decimal(repr(v)), sa.Numeric())
        if isinstance(v, int) and not -(2**63) <= v < 2**63:
            # A Decimal's shortest digits past 2^63 (values.coerce_scalar): SQLite's integers
            # stop at 64 bits, and its JSON reads such a number as a double.
            return sa.literal(float(v), sa.Float())
        return sa.literal(v, sa.Integer() if isinstance(v, int) else sa.Float())

    # -- filters ------------------------------------------------------------------------------
    def filter(self, f: Filter) -> Bool:
        if isinstance(f, And):
            return sa.and_(self.filter(f.left), self.filter(f.right))
        if isinstance(f, Or):
            return sa.or_(self.filter(f.left), self.filter(f.right))
        if isinstance(f, Not):
            return _not(self.filter(f.expr))
        if isinstance(f, ValuePath):
            urn, attr, _ = _resolve(f.path, self.rt)
            target = self.target(urn, attr, None)
            if not isinstance(target, _Elements):  # pragma: no cover - rejected by bind
                raise InvalidFilter(f"'{f.path}[...]' needs a multi-valued complex attribute")
            inner = f.filter
            return target.exists(lambda e: self.element(inner, e, attr), objects_only=True)
        urn, attr, sub = _resolve(f.path, self.rt)
        return self.leaf(f, self.target(urn, attr, sub), sub or attr)

    def element(self, f: Filter, e: _Element, parent: S.Attribute) -> Bool:
        """A value filter on one element ``e`` of the multi-valued ``parent``."""
        if isinstance(f, And):
            return sa.and_(self.element(f.left, e, parent), self.element(f.right, e, parent))
        if isinstance(f, Or):
            return sa.or_(self.element(f.left, e, parent), self.element(f.right, e, parent))
        if isinstance(f, Not):
            return _not(self.element(f.expr, e, parent))
        if isinstance(f, ValuePath):  # pragma: no cover - rejected by bind
            raise InvalidFilter("value filters cannot be nested")
        sub = parent.sub.get(f.path.attr.lower())
        if sub is None:  # pragma: no cover - rejected by bind
            raise InvalidFilter(f"attribute '{parent.name}' has no sub-attribute '{f.path}'")
        return self.leaf(f, _Single(e.value(sub)), sub)

    def leaf(self, f: Compare | Present, target: _Target, attr: S.Attribute) -> Bool:
        if isinstance(f, Present):
            return target.present()
        if f.value is None:
            if f.op == "eq":
                return _not(target.present())
            if f.op == "ne":
                return target.present()
            raise InvalidFilter(f"'{f.op} null' is not meaningful; use 'pr' or 'eq null'")
        value = f.value
        if f.op == "ne":
            return _not(target.any(lambda v: self.compare("eq", v, value, attr)))
        return target.any(lambda v: self.compare(f.op, v, value, attr))

    def compare(self, op: str, value: _Value, lit: Literal, attr: S.Attribute) -> Bool:
        """One value against a bound literal, as ``query.compare`` does it."""
        if isinstance(value, _ConstValue):
            return _const(compare(op, value.value, lit, attr))
        t = attr.type
        if t in STRINGISH or t == S.DATETIME:
            if not isinstance(lit, str):
                raise InvalidFilter(f"'{attr.name}' is a string attribute: quote the value")
            guard, text, lowered = value.string()
            if t == S.DATETIME and not isinstance(value, _Column):
                # A property's dateTime is stored as sent: compared as its instant (the
                # literal already is one, ``query._bind_leaf``). meta's columns are canonical.
                text = self.instant(text, guard)
                guard = None
            if _folds(attr):
                lit = fold(lit)
                if not lowered:
                    text = self.lower(text)
            elif lowered:  # pragma: no cover - lower-cased columns hold case-insensitive values
                raise InvalidFilter(f"'{attr.name}' cannot be compared case-sensitively")
            return _and(guard, self.string_op(op, text, lit, folded=_folds(attr)))
        if t == S.BOOLEAN:
            if op != "eq" or not isinstance(lit, bool):
                raise InvalidFilter(f"'{op}' cannot compare '{attr.name}', a boolean attribute")
            return value.is_bool(lit)
        if t in (S.INTEGER, S.DECIMAL):
            if op not in _ORDER or isinstance(lit, bool) or not isinstance(lit, (int, float)):
                raise InvalidFilter(f"'{op} {lit!r}' cannot compare '{attr.name}', a number")
            guard, num = value.number()
            return _and(guard, _ORDER[op](num, self.number(lit)))
        raise InvalidFilter(f"cannot compare '{attr.name}', a {t} attribute")

    def instant(self, text: Expr, guard: Bool | None) -> Expr:
        """``values.instant`` of a stored dateTime text, NULL for anything else: on SQLite
        the Python function itself; on PostgreSQL its twin (the text cut to the microsecond,
        cast, in UTC, and the fraction's digits 7 to 9 put back), for the RFC 3339 forms
        values are stored in (a CASE, so nothing else is ever cast)."""
        if not self.pg:
            out: Expr = sa.func.scim_instant(text)
            return out if guard is None else sa.case((guard, out))
        cut = sa.func.regexp_replace(text, _text(r"(\.\d{6})\d+"), _text(r"\1"))
        utc = sa.func.timezone(_text("UTC"), sa.cast(cut, sa.TIMESTAMP(timezone=True)))
        # Digits 7 to 9 of the fraction (no offset changes them), as ``values.instant``.
        past = sa.func.substring(text, _text(r"T\d{2}:\d{2}:\d{2}\.\d{6}(\d{1,3})"))
        formatted = sa.func.concat(
            sa.func.to_char(utc, _text('YYYY-MM-DD"T"HH24:MI:SS.US')),
            sa.func.rpad(sa.func.coalesce(past, _text("")), 3, _text("0")),
            _text("Z"),
        )
        castable = text.op("~")(_text(_PG_INSTANT))
        return sa.case((sa.and_(guard, castable) if guard is not None else castable, formatted))

    def string_op(self, op: str, x: Expr, v: str, folded: bool) -> Bool:
        if op == "eq":
            return x == _text(v)
        if op in _ORDER:
            return _ORDER[op](self.ordered(x), _text(v))
        if op == "sw":
            if v == "":
                return sa.true()
            hi = _successor(v)
            lo = self.ordered(x) >= _text(v)
            return lo if hi is None else sa.and_(lo, self.ordered(x) < _text(hi))
        if op in ("co", "ew"):
            if v == "":
                return sa.true()
            if self.pg or folded:
                # SQLite's LIKE folds ASCII case: exact only when both sides are lower-cased.
                pattern = _like_pattern("%", v, "%" if op == "co" else "")
                return x.like(_text(pattern), escape=_LIKE_ESCAPE)
            if op == "co":
                return sa.func.instr(x, _text(v)) > 0
            n = len(v)
            return sa.and_(
                sa.func.length(x) >= n,
                sa.func.substr(x, sa.func.length(x) - (n - 1)) == _text(v),
            )
        raise InvalidFilter(f"unknown operator '{op}'")

    # -- attribute storage --------------------------------------------------------------------
    def target(self, urn: str | None, attr: S.Attribute, sub: S.Attribute | None) -> _Target:
        t = self.table.c
        if urn is None:
            name = attr.name
            if name == "schemas":
                return _Schemas(self)
            if name == "id":
                return _Single(_Column(t.id, "string", nullable=False))
            if name == "externalId":
                return _Single(_Column(t.external_id, "string", nullable=True))
            if name == "meta":
                return self.meta(sub)
            if self.rt.name == "User":
                if name == "userName":
                    return _Single(_Column(t.user_name_lower, "string", False, lowered=True))
                if name == "active":
                    return _Single(_Column(t.active, "boolean", nullable=True))
                if name == "groups":
                    return _Relation(self, attr, sub)
            else:
                if name == "displayName":
                    return _Single(_Column(t.display_name_lower, "string", False, lowered=True))
                if name == "members":
                    return _Relation(self, attr, sub)
        keys = [urn, attr.name] if urn else [attr.name]
        if attr.multi_valued:
            return (_PgArray if self.pg else _SqliteArray)(self, keys, sub)
        if sub is not None:
            keys.append(sub.name)
        return _Single(self.json(keys))

    def json(self, keys: list[str]) -> _Value:
        doc = self.table.c.doc
        if not self.pg:
            return _SqliteJson(doc, _sqlite_path(keys))
        j: Expr = doc
        for k in keys[:-1]:
            j = _pg_get(j, k)
        return _PgJson(_pg_get(j, keys[-1]), _pg_get_text(j, keys[-1]))

    def meta(self, sub: S.Attribute | None) -> _Target:
        t = self.table.c
        if sub is None:  # meta always holds resourceType, created, ...
            return _Single(_ConstValue(self.rt.name))
        if sub.name == "created":
            return _Single(_Column(t.created, "string", nullable=False))
        if sub.name == "lastModified":
            return _Single(_Column(t.last_modified, "string", nullable=False))
        if sub.name == "resourceType":
            return _Single(_ConstValue(self.rt.name))
        if sub.name == "version":
            etag = _text('W/"') + sa.cast(t.version, sa.Text()) + _text('"')
            return _Single(_Column(etag, "string", nullable=False))
        hint = "; filter on id (a location is the id's URL)" if sub.name == "location" else ""
        raise InvalidFilter(f"filtering on 'meta.{sub.name}' is not supported{hint}")

    # -- sorting ------------------------------------------------------------------------------
    def sort_key(self, path: AttrPath) -> tuple[Expr, bool]:
        """(key, whether it can be NULL)."""
        urn, attr, sub = _resolve_sort(path, self.rt)
        target = self.target(urn, attr, sub)
        leaf = sub or attr
        if isinstance(target, (_SqliteArray, _PgArray)):
            return target.pick(attr), True
        assert isinstance(target, _Single)
        value = target.value
        if isinstance(value, _ConstValue):
            v = fold(value.value) if _folds(leaf) else value.value
            return self.ordered(_text(v)), False
        key = self.typed_key(value, leaf)
        nullable = not isinstance(value, _Column) or value.nullable
        return key, nullable

    def typed_key(self, value: _Value, attr: S.Attribute) -> Expr:
        """``value`` as ``attr``'s type, NULL when of another type."""
        t = attr.type
        if t in STRINGISH or t == S.DATETIME:
            guard, text, lowered = value.string()
            if t == S.DATETIME and not isinstance(value, _Column):
                return self.ordered(self.instant(text, guard))
            if _folds(attr) and not lowered:
                text = self.lower(text)
            return self.ordered(text if guard is None else sa.case((guard, text)))
        if t == S.BOOLEAN:
            return value.bool_value()
        if t in (S.INTEGER, S.DECIMAL):
            guard, num = value.number()
            return num if guard is None else sa.case((guard, num))
        raise InvalidFilter(f"cannot sort by '{attr.name}', a {t} attribute")
