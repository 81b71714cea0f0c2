"""The SCIM filter language (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2) as typed trees.

One hand-written recursive-descent parser produces frozen dataclasses; ``str(node)`` renders the
canonical text (``parse(str(tree)) == tree``). ``and`` binds tighter than ``or``, ``not`` tighter
than both. Keywords, operators and attribute names are case-insensitive. Parsing knows no schema:
``scimd.scim.query.bind`` resolves names against a resource type and checks literal types.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import orjson

from scimd.scim.errors import InvalidFilter, InvalidPath, around

MAX_FILTER_LENGTH = 8192
MAX_DEPTH = 32
MAX_NODES = 256

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})

Literal = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``[urn:]attr[.sub]``; ``schema`` is the URN as written (no trailing colon)."""

    schema: str | None
    attr: str
    sub: str | None = None

    def __str__(self) -> str:
        s = f"{self.schema}:{self.attr}" if self.schema else self.attr
        return f"{s}.{self.sub}" if self.sub else s


@dataclass(frozen=True, slots=True)
class Compare:
    path: AttrPath
    op: str  # lower-case, one of COMPARE_OPS
    value: Literal

    def __str__(self) -> str:
        return f"{self.path} {self.op} {render_literal(self.value)}"


@dataclass(frozen=True, slots=True)
class Present:
    path: AttrPath

    def __str__(self) -> str:
        return f"{self.path} pr"


@dataclass(frozen=True, slots=True)
class And:
    left: Filter
    right: Filter

    def __str__(self) -> str:
        return f"{_wrap(self.left, (Or,))} and {_wrap(self.right, (Or, And))}"


@dataclass(frozen=True, slots=True)
class Or:
    left: Filter
    right: Filter

    def __str__(self) -> str:
        return f"{self.left} or {_wrap(self.right, (Or,))}"


@dataclass(frozen=True, slots=True)
class Not:
    expr: Filter

    def __str__(self) -> str:
        return f"not ({self.expr})"


@dataclass(frozen=True, slots=True)
class ValuePath:
    """``attr[filter]``: some element of a multi-valued attribute matches ``filter``.

    Paths inside ``filter`` are relative: their ``attr`` names a sub-attribute of ``path``.
    """

    path: AttrPath
    filter: Filter

    def __str__(self) -> str:
        return f"{self.path}[{self.filter}]"


Filter = Compare | Present | And | Or | Not | ValuePath


@dataclass(frozen=True, slots=True)
class PatchPath:
    """A PATCH ``path``: ``attrPath`` or ``valuePath [ "." subAttr ]`` (RFC 7644 §3.5.2)."""

    path: AttrPath
    filter: Filter | None = None
    sub: str | None = None

    def __str__(self) -> str:
        s = str(self.path)
        if self.filter is not None:
            s += f"[{self.filter}]"
        if self.sub:
            s += f".{self.sub}"
        return s


def _wrap(node: Filter, kinds: tuple[type, ...]) -> str:
    return f"({node})" if isinstance(node, kinds) else str(node)


def render_literal(value: Literal) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Lexer

# PostgreSQL cannot store U+0000 in text or JSON, so no stored value holds it, on any database.
NUL_IN_TEXT = "a string cannot contain the NUL character (U+0000)"
_WS = re.compile(r"[ \t\r\n]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"\$?[A-Za-z][A-Za-z0-9_\-]*")
_URN_PATH = re.compile(r"urn:[^\s\[\]()\"]+", re.IGNORECASE)
_SUB = re.compile(r"\.(\$?[A-Za-z][A-Za-z0-9_\-]*)")
_BARE_WORD = re.compile(r"[^\s\[\]()\"]+")


class _Parser:
    def __init__(self, text: str, error: type[InvalidFilter] | type[InvalidPath]) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.nodes = 0
        self.error = error

    # -- helpers --------------------------------------------------------------------------
    def fail(self, msg: str, pos: int | None = None) -> InvalidFilter | InvalidPath:
        p = self.pos if pos is None else pos
        return self.error(f"{msg} at position {p} in '{around(self.text, p)}'")

    def skip_ws(self) -> None:
        m = _WS.match(self.text, self.pos)
        if m:
            self.pos = m.end()

    def peek_char(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self, *words: str) -> str | None:
        """Consume a case-insensitive keyword that ends at a word boundary."""
        self.skip_ws()
        for w in words:
            end = self.pos + len(w)
            if self.text[self.pos : end].lower() == w and (
                end >= len(self.text) or not (self.text[end].isalnum() or self.text[end] in "_-.:$")
            ):
                self.pos = end
                return w
        return None

    def expect(self, ch: str) -> None:
        if self.peek_char() != ch:
            found = self.text[self.pos] if self.pos < len(self.text) else "end of filter"
            raise self.fail(f"expected '{ch}' but found '{found}'")
        self.pos += 1

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                f"filter has more than {MAX_NODES} comparisons and operators (and, or, not)"
            )

    # -- grammar ---------------------------------------------------------------------------
    def parse_filter(self, in_value: bool = False) -> Filter:
        left = self.parse_and(in_value)
        while self.keyword("or"):
            left = Or(left, self.parse_and(in_value))
            self.count()
        return left

    def parse_and(self, in_value: bool) -> Filter:
        left = self.parse_unary(in_value)
        while self.keyword("and"):
            left = And(left, self.parse_unary(in_value))
            self.count()
        return left

    def parse_unary(self, in_value: bool) -> Filter:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                f"filter is nested too deeply: at most {MAX_DEPTH - 1} levels of"
                " parentheses, not(...) and [...]"
            )
        try:
            start = self.pos
            if self.keyword("not"):
                if self.peek_char() != "(":
                    self.pos = start  # "not" is an attribute name here
                else:
                    self.expect("(")
                    inner = self.parse_filter(in_value)
                    self.expect(")")
                    self.count()
                    return Not(inner)
            if self.peek_char() == "(":
                self.pos += 1
                inner = self.parse_filter(in_value)
                self.expect(")")
                return inner
            return self.parse_attr_exp(in_value)
        finally:
            self.depth -= 1

    def parse_attr_path(self) -> AttrPath:
        self.skip_ws()
        start = self.pos
        m = _URN_PATH.match(self.text, self.pos)
        if m:
            full = m.group(0)
            self.pos = m.end()
            urn, _, rest = full.rpartition(":")
            name, _, dotted = rest.partition(".")
            if not _NAME.fullmatch(name) or (dotted and not _NAME.fullmatch(dotted)):
                raise self.fail(f"invalid attribute path '{full}'", start)
            return AttrPath(urn, name, dotted or None)
        m = _NAME.match(self.text, self.pos)
        if not m:
            found = self.text[self.pos : self.pos + 10] or "end of filter"
            raise self.fail(f"expected an attribute name but found '{found}'")
        self.pos = m.end()
        sub_m = _SUB.match(self.text, self.pos)
        sub: str | None = None
        if sub_m:
            sub = sub_m.group(1)
            self.pos = sub_m.end()
        return AttrPath(None, m.group(0), sub)

    def parse_attr_exp(self, in_value: bool) -> Filter:
        start = self.pos
        path = self.parse_attr_path()
        self.count()
        if self.pos < len(self.text) and self.text[self.pos] == "[":
            if in_value:
                raise self.fail("value filters cannot be nested", self.pos)
            if path.sub:
                raise self.fail("a value filter must follow a multi-valued attribute", start)
            self.pos += 1
            inner = self.parse_filter(in_value=True)
            self.expect("]")
            sub_m = _SUB.match(self.text, self.pos)
            if sub_m:
                # Not in the RFC grammar, but Entra documents ``emails[type eq "work"].value eq
                # "x"``: it means an element with both properties, i.e. a value filter.
                self.pos = sub_m.end()
                cond = self._comparison(AttrPath(None, sub_m.group(1)), self.pos)
                return ValuePath(path, And(inner, cond))
            return ValuePath(path, inner)
        return self._comparison(path, start)

    def _comparison(self, path: AttrPath, start: int) -> Filter:
        op = self.keyword(*COMPARE_OPS, "pr")
        if op is None:
            self.skip_ws()
            found = self.text[self.pos : self.pos + 10] or "end of filter"
            raise self.fail(f"expected an operator after '{path}' but found '{found}'")
        if op == "pr":
            return Present(path)
        return Compare(path, op, self.parse_literal())

    def parse_literal(self) -> Literal:
        self.skip_ws()
        text, pos = self.text, self.pos
        if pos >= len(text):
            raise self.fail("expected a value but the filter ended")
        if text[pos] == '"':
            end = pos + 1
            while end < len(text):
                c = text[end]
                if c == "\\":
                    end += 2
                    continue
                if c == '"':
                    break
                end += 1
            if end >= len(text):
                raise self.fail("unterminated string", pos)
            try:
                value = orjson.loads(text[pos : end + 1])
            except orjson.JSONDecodeError:
                raise self.fail(
                    "invalid string (a bad escape, or a control character not escaped)", pos
                ) from None
            if "\x00" in value:
                raise self.fail(NUL_IN_TEXT, pos)
            self.pos = end + 1
            return str(value)
        for word, val in (("true", True), ("false", False), ("null", None)):
            if self.keyword(word):
                return val
        m = _NUMBER.match(text, pos)
        if m and (m.end() >= len(text) or text[m.end()] in " \t\r\n)]"):
            self.pos = m.end()
            s = m.group(0)
            if any(c in s for c in ".eE"):
                f = float(s)
                # Too large, it would render as "inf", which reads back as a string; too
                # small, 0 (``Dec lt 1e-400`` left out a 0 smaller than it).
                if not math.isfinite(f) or (f == 0 and s.split("e")[0].split("E")[0].strip("-+0.")):
                    raise self.fail(f"number '{s}' is out of range", pos)
                return f
            try:
                return int(s)
            except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
                raise self.fail("number is out of range", pos) from None
        if text[pos] == "'":
            # Not a bare word: ``userName eq 'x'`` would otherwise look for the seven characters
            # ``'x'`` and silently find nothing (RFC 7644 §3.4.2.2 takes JSON strings).
            raise self.fail(
                'strings are written in double quotes ("like this"), not single quotes', pos
            )
        m = _BARE_WORD.match(text, pos)
        if m:
            # Compat: Microsoft's tutorial shows ``externalId eq jyoung``; an unquoted word that
            # is not a number or keyword is read as the string it spells.
            self.pos = m.end()
            return m.group(0)
        raise self.fail(f"expected a value but found '{text[pos]}'")

    def at_end(self) -> None:
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected '{self.text[self.pos]}'")


def _check_length(text: str, what: str, error: type[InvalidFilter] | type[InvalidPath]) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        raise error(
            f"{what} is longer than {MAX_FILTER_LENGTH} characters at position {MAX_FILTER_LENGTH}"
        )
    if not text.strip():
        raise error(f"{what} is empty: an expression was expected at position {len(text)}")


# ``attr eq "plain string"``: what an identity provider sends before almost every write (its
# matching probe), recognised without running the parser; the tree is the one it would build.
_SIMPLE_EQ = re.compile(
    r"[ \t\r\n]*([A-Za-z][A-Za-z0-9_\-]*)[ \t\r\n]+[eE][qQ][ \t\r\n]+"
    r'"([^"\\\x00-\x1f\ud800-\udfff]*)"[ \t\r\n]*'
)
_KEYWORDS = frozenset(("not", "and", "or"))


def parse(text: str) -> Filter:
    """Parse a filter; raise ``InvalidFilter`` naming the position of the first problem."""
    _check_length(text, "filter", InvalidFilter)
    m = _SIMPLE_EQ.fullmatch(text)
    if m and m.group(1).lower() not in _KEYWORDS:
        return Compare(AttrPath(None, m.group(1)), "eq", m.group(2))
    p = _Parser(text, InvalidFilter)
    tree = p.parse_filter()
    p.at_end()
    return tree


def parse_patch_path(text: str) -> PatchPath:
    """Parse a PATCH ``path``; raise ``InvalidPath``."""
    _check_length(text, "path", InvalidPath)
    p = _Parser(text, InvalidPath)
    path = p.parse_attr_path()
    filt: Filter | None = None
    sub: str | None = None
    if p.pos < len(text) and text[p.pos] == "[":
        if path.sub:
            raise p.fail("a value filter must follow a multi-valued attribute")
        p.pos += 1
        try:
            filt = p.parse_filter(in_value=True)
        except InvalidFilter as e:  # pragma: no cover - the parser raises InvalidPath here
            raise InvalidPath(e.detail) from None
        p.expect("]")
        m = _SUB.match(text, p.pos)
        if m:
            sub = m.group(1)
            p.pos = m.end()
    p.at_end()
    return PatchPath(path, filt, sub)
