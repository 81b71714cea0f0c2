"""The SCIM filter parser (RFC 7644 §3.4.2.2), binding, and PATCH path parsing (§3.5.2).

Tree shapes are pinned node by node; every RFC example filter parses, binds against the User
resource type and round-trips through its canonical rendering; every malformed filter is a 400
``invalidFilter`` whose detail says where the problem is.
"""

from __future__ import annotations

import pytest

from scimd.scim.errors import InvalidFilter, InvalidPath
from scimd.scim.filter import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_NODES,
    And,
    AttrPath,
    Compare,
    Filter,
    Literal,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    parse,
    parse_patch_path,
)
from scimd.scim.query import bind
from scimd.scim.schema import (
    ENTERPRISE_SCHEMA,
    ENTERPRISE_USER,
    GROUP_TYPE,
    USER_PROPERTIES_SCHEMA,
    USER_SCHEMA,
    PropertyDef,
    ResourceType,
    user_type,
)

USER = user_type(
    [
        PropertyDef("IdentificationNumber", "String"),
        PropertyDef("Level", "Integer"),
        PropertyDef("Score", "Decimal"),
        PropertyDef("Verified", "Boolean"),
        PropertyDef("HiredOn", "Date"),
    ]
)


def p(attr: str, sub: str | None = None, schema: str | None = None) -> AttrPath:
    """Shorthand for an attribute path."""
    return AttrPath(schema, attr, sub)


def eq(attr: str, value: Literal) -> Compare:
    """Shorthand for ``attr eq value`` on an unqualified, sub-attribute-free path."""
    return Compare(p(attr), "eq", value)


def pr(attr: str) -> Present:
    """Shorthand for ``attr pr``."""
    return Present(p(attr))


def assert_round_trips(tree: Filter) -> None:
    """The canonical rendering parses back to the same tree, and is a fixpoint."""
    text = str(tree)
    assert parse(text) == tree
    assert str(parse(text)) == text


# ---------------------------------------------------------------------------------------------
# Tree shapes


def test_and_binds_tighter_than_or() -> None:
    """``a or b and c`` groups as ``a or (b and c)``."""
    tree = parse("a eq 1 or b eq 2 and c eq 3")
    assert tree == Or(eq("a", 1), And(eq("b", 2), eq("c", 3)))
    assert str(tree) == "a eq 1 or b eq 2 and c eq 3"


def test_and_binds_tighter_than_or_on_the_left() -> None:
    """``a and b or c`` groups as ``(a and b) or c``."""
    assert parse("a eq 1 and b eq 2 or c eq 3") == Or(And(eq("a", 1), eq("b", 2)), eq("c", 3))


@pytest.mark.parametrize(("keyword", "node"), [("or", Or), ("and", And)])
def test_logical_operators_are_left_associative(keyword: str, node: type[And | Or]) -> None:
    """A chain ``a k b k c`` nests to the left: ``(a k b) k c``."""
    tree = parse(f"a pr {keyword} b pr {keyword} c pr")
    assert tree == node(node(pr("a"), pr("b")), pr("c"))
    assert str(tree) == f"a pr {keyword} b pr {keyword} c pr"


def test_not_wraps_a_parenthesised_filter() -> None:
    """``not (f)`` is a Not node around ``f``, with or without a space before the parenthesis."""
    assert parse("not (title pr)") == Not(pr("title"))
    assert parse("not(title pr)") == Not(pr("title"))
    assert parse("not (a pr or b pr)") == Not(Or(pr("a"), pr("b")))


def test_not_binds_tighter_than_and_and_or() -> None:
    """``not (a) and b or c`` groups as ``((not a) and b) or c``."""
    tree = parse("not (a pr) and b pr or c pr")
    assert tree == Or(And(Not(pr("a")), pr("b")), pr("c"))


def test_not_without_parenthesis_is_an_attribute_name() -> None:
    """``not`` not followed by ``(`` is read as the ATTRNAME it also is in the RFC grammar."""
    assert parse('not eq "x"') == eq("not", "x")
    assert parse("a pr and not pr") == And(pr("a"), pr("not"))


def test_parentheses_override_precedence() -> None:
    """``(a or b) and c`` keeps the ``or`` inside the ``and``."""
    tree = parse("(a eq 1 or b eq 2) and c eq 3")
    assert tree == And(Or(eq("a", 1), eq("b", 2)), eq("c", 3))
    assert str(tree) == "(a eq 1 or b eq 2) and c eq 3"


def test_parentheses_override_associativity() -> None:
    """``a and (b and c)`` keeps its right-nested shape and renders its parentheses."""
    tree = parse("a pr and (b pr and c pr)")
    assert tree == And(pr("a"), And(pr("b"), pr("c")))
    assert str(tree) == "a pr and (b pr and c pr)"
    assert parse("a pr or (b pr or c pr)") == Or(pr("a"), Or(pr("b"), pr("c")))


def test_redundant_parentheses_leave_no_node() -> None:
    """Parentheses around a single expression are grouping only."""
    assert parse("((userName pr))") == pr("userName")
    assert parse("(a pr) and ((b pr))") == And(pr("a"), pr("b"))


def test_value_path_with_a_boolean_filter() -> None:
    """``emails[type eq "work" and value co "@x"]`` is a ValuePath over a relative And."""
    tree = parse('emails[type eq "work" and value co "@x"]')
    assert tree == ValuePath(p("emails"), And(eq("type", "work"), Compare(p("value"), "co", "@x")))
    assert_round_trips(tree)


def test_value_path_inside_logical_expressions() -> None:
    """Value paths combine with ``and``/``or``/``not`` like any other expression."""
    tree = parse('emails[type eq "work"] and not (ims[value pr]) or userName pr')
    work = ValuePath(p("emails"), eq("type", "work"))
    assert tree == Or(And(work, Not(ValuePath(p("ims"), pr("value")))), pr("userName"))


def test_value_path_filter_may_use_not_and_parentheses() -> None:
    """A value filter is a full boolean expression (minus nested value paths)."""
    tree = parse('emails[not (type eq "work") and (primary eq true or value pr)]')
    inner = And(Not(eq("type", "work")), Or(eq("primary", True), pr("value")))
    assert tree == ValuePath(p("emails"), inner)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (f"{USER_SCHEMA}:userName pr", p("userName", schema=USER_SCHEMA)),
        (f"{ENTERPRISE_SCHEMA}:employeeNumber pr", p("employeeNumber", schema=ENTERPRISE_SCHEMA)),
        (f"{ENTERPRISE_SCHEMA}:manager.value pr", p("manager", "value", ENTERPRISE_SCHEMA)),
        (
            f"{USER_PROPERTIES_SCHEMA}:IdentificationNumber pr",
            p("IdentificationNumber", schema=USER_PROPERTIES_SCHEMA),
        ),
        (f"{USER_SCHEMA.upper()}:NAME.GIVENNAME pr", p("NAME", "GIVENNAME", USER_SCHEMA.upper())),
    ],
)
def test_urn_qualified_paths(text: str, path: AttrPath) -> None:
    """The URN is everything before the last colon, kept as written; the rest is attr[.sub]."""
    tree = parse(text)
    assert tree == Present(path)
    assert_round_trips(tree)


def test_bizagi_identification_number_path() -> None:
    """The custom-properties URN path of Entra's matching attribute parses and binds."""
    text = f'{USER_PROPERTIES_SCHEMA}:IdentificationNumber eq "1020304050"'
    tree = parse(text)
    assert tree == Compare(
        p("IdentificationNumber", schema=USER_PROPERTIES_SCHEMA), "eq", "1020304050"
    )
    assert str(tree) == text
    assert bind(tree, USER) == tree


def test_urn_qualified_value_path() -> None:
    """A URN-qualified multi-valued attribute takes a value filter."""
    tree = parse(f'{USER_SCHEMA}:emails[type eq "work"]')
    assert tree == ValuePath(p("emails", schema=USER_SCHEMA), eq("type", "work"))
    assert bind(tree, USER) == ValuePath(p("emails"), eq("type", "work"))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('name.givenName eq "x"', p("name", "givenName")),
        ('meta.lastModified eq "x"', p("meta", "lastModified")),
        ('groups.$ref eq "x"', p("groups", "$ref")),
        ('emails.value eq "x"', p("emails", "value")),
        ('a-b_c.d-e eq "x"', p("a-b_c", "d-e")),
    ],
)
def test_sub_attribute_paths(text: str, path: AttrPath) -> None:
    """``attr.sub`` splits at the dot; ``$`` may start a name, ``-`` and ``_`` may follow."""
    assert parse(text) == Compare(path, "eq", "x")


@pytest.mark.parametrize("op", ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
def test_every_comparison_operator(op: str) -> None:
    """Each RFC comparison operator parses to a Compare with the lower-case operator."""
    for spelling in (op, op.upper(), op.capitalize()):
        tree = parse(f'title {spelling} "x"')
        assert tree == Compare(p("title"), op, "x")
        assert str(tree) == f'title {op} "x"'


def test_present_operator() -> None:
    """``pr`` takes no value and parses to a Present node."""
    assert parse("title pr") == pr("title")
    assert parse("title PR") == pr("title")


def test_keywords_and_operators_are_case_insensitive() -> None:
    """``EQ``, ``AND``, ``Pr``, ``OR``, ``NOT``, ``TRUE`` and ``Null`` read as their lower case."""
    assert parse('userName EQ "x" AND active Pr') == And(eq("userName", "x"), pr("active"))
    tree = parse("a pr OR NoT (b Eq TRUE) aNd c nE Null")
    assert tree == Or(pr("a"), And(Not(eq("b", True)), Compare(p("c"), "ne", None)))
    assert str(tree) == "a pr or not (b eq true) and c ne null"


def test_attribute_names_keep_their_spelling() -> None:
    """Parsing keeps names as written; ``bind`` is what canonicalises them."""
    tree = parse('USERNAME eq "x"')
    assert tree == eq("USERNAME", "x")
    assert bind(tree, USER) == eq("userName", "x")


def test_whitespace_is_flexible_between_tokens() -> None:
    """Tabs, newlines and repeated spaces separate tokens like one space."""
    assert parse('  userName\teq\n"x"   and\r\n title  pr ') == And(
        eq("userName", "x"), pr("title")
    )


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"line\nbreak"', "line\nbreak"),
        (r'"tab\there"', "tab\there"),
        (r'"caf\u00e9"', "café"),
        ('"café"', "café"),
        (r'"\/"', "/"),
        (r'"\ud83d\ude00"', "\U0001f600"),
        ('""', ""),
        ('"O\'Malley"', "O'Malley"),
        ('"a and b or not (c)"', "a and b or not (c)"),
        ("42", 42),
        ("0", 0),
        ("-7", -7),
        ("-0", 0),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        ("2.5e-2", 0.025),
        ("12345678901234567890", 12345678901234567890),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("FALSE", False),
        ("NULL", None),
    ],
)
def test_literals(literal: str, value: Literal) -> None:
    """JSON literals decode to the Python value and type they spell."""
    tree = parse(f"attr eq {literal}")
    assert isinstance(tree, Compare)
    assert tree.value == value
    assert type(tree.value) is type(value)
    assert_round_trips(tree)


def test_literal_in_value_filter_before_bracket() -> None:
    """A number may end right before ``]`` or ``)``."""
    assert parse("emails[value eq 1]") == ValuePath(p("emails"), eq("value", 1))
    assert parse("(a eq -2.5)") == eq("a", -2.5)


def test_entra_value_path_with_sub_attribute_comparison() -> None:
    """Entra's ``emails[type eq "work"].value eq "x"`` is a value path with an And."""
    tree = parse('emails[type eq "work"].value eq "x"')
    assert tree == ValuePath(p("emails"), And(eq("type", "work"), eq("value", "x")))
    assert str(tree) == 'emails[type eq "work" and value eq "x"]'
    assert bind(tree, USER) == tree


def test_entra_value_path_with_presence_and_or_filter() -> None:
    """The Entra form also takes ``pr``, and an ``or`` filter stays grouped inside the And."""
    tree = parse('emails[type eq "work" or type eq "home"].value pr')
    inner = Or(eq("type", "work"), eq("type", "home"))
    assert tree == ValuePath(p("emails"), And(inner, pr("value")))
    assert_round_trips(tree)


def test_microsoft_unquoted_value_is_a_string() -> None:
    """Microsoft's ``externalId eq jyoung`` reads the unquoted word as a string."""
    tree = parse("externalId eq jyoung")
    assert tree == eq("externalId", "jyoung")
    assert str(tree) == 'externalId eq "jyoung"'
    assert bind(tree, USER) == tree


def test_unquoted_word_that_starts_like_a_number_is_a_string() -> None:
    """An unquoted token that is not a JSON number (``01``, ``1x``) is a bare-word string."""
    assert parse("externalId eq 01") == eq("externalId", "01")
    assert parse("externalId eq 1x") == eq("externalId", "1x")


def test_single_quoted_value_is_refused_with_a_hint() -> None:
    """``userName eq 'x'`` is not a bare word: read as one it would look for the quotes too
    and silently find nobody, so a script checking whether a user exists would then create it
    again and get a 409. An apostrophe inside an unquoted word is still part of the word."""
    for text in ("userName eq 'bjensen'", "userName eq 'b jensen'", "emails[value sw 'x']"):
        with pytest.raises(InvalidFilter, match="double quotes") as info:
            parse(text)
        assert "position" in str(info.value)
    assert parse("externalId eq o'malley") == eq("externalId", "o'malley")


# ---------------------------------------------------------------------------------------------
# RFC 7644 §3.4.2.2 example filters

RFC_EXAMPLES = [
    'userName eq "bjensen"',
    'name.familyName co "O\'Malley"',
    'userName sw "J"',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"',
    "title pr",
    'meta.lastModified gt "2011-05-13T04:42:34Z"',
    'meta.lastModified ge "2011-05-13T04:42:34Z"',
    'meta.lastModified lt "2011-05-13T04:42:34Z"',
    'meta.lastModified le "2011-05-13T04:42:34Z"',
    'title pr and userType eq "Employee"',
    'title pr or userType eq "Intern"',
    'schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"',
    'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")',
    'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")',
    'userType eq "Employee" and (emails.type eq "work")',
    'userType eq "Employee" and emails[type eq "work" and value co "@example.com"]',
    'emails[type eq "work" and value co "@example.com"] or '
    'ims[type eq "xmpp" and value co "@foo.com"]',
]


def _rfc_params(marked: bool) -> list[object]:
    return [t for t in RFC_EXAMPLES]


@pytest.mark.parametrize("text", _rfc_params(marked=False))
def test_rfc_example_parses_and_round_trips(text: str) -> None:
    """Each RFC example parses, and its canonical rendering parses back to the same tree."""
    assert_round_trips(parse(text))


@pytest.mark.parametrize("text", _rfc_params(marked=True))
def test_rfc_example_binds_to_user(text: str) -> None:
    """Each RFC example binds against User, and the bound tree round-trips and re-binds."""
    bound = bind(parse(text), USER)
    assert_round_trips(bound)
    assert bind(parse(str(bound)), USER) == bound


def test_rfc_precedence_example_shape() -> None:
    """The RFC's ``and (... or ...)`` example keeps the Or under the And."""
    tree = parse(
        'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")'
    )
    emails = Or(
        Compare(p("emails"), "co", "example.com"),
        Compare(p("emails", "value"), "co", "example.org"),
    )
    assert tree == And(Compare(p("userType"), "ne", "Employee"), Not(emails))


def test_bind_canonicalises_names_urns_and_values() -> None:
    """Binding fixes spelling, drops the core URN, qualifies extensions and coerces literals."""
    tree = parse(
        f'{USER_SCHEMA}:USERNAME eq "x" and manager eq "m" and level gt 3.0'
        ' and meta.lastModified gt "2011-05-13T04:42:34+02:00" and active eq "True"'
    )
    bound = bind(tree, USER)
    assert str(bound) == (
        f'userName eq "x" and {ENTERPRISE_SCHEMA}:manager.value eq "m"'
        f" and {USER_PROPERTIES_SCHEMA}:Level gt 3"
        ' and meta.lastModified gt "2011-05-13T02:42:34.000Z" and active eq true'
    )


def test_bind_complex_with_value_means_its_value() -> None:
    """A multi-valued complex attribute compared whole (``emails co``) compares its ``value``."""
    assert bind(parse('emails co "x"'), USER) == Compare(p("emails", "value"), "co", "x")


def test_bind_against_group() -> None:
    """Group filters bind against the Group type."""
    tree = parse('members[value eq "2819c223"] and displayName sw "Admin"')
    assert bind(tree, GROUP_TYPE) == tree


# ---------------------------------------------------------------------------------------------
# Syntax errors

DEPTH_BOMB = "(" * 200 + 'userName eq "x"' + ")" * 200
NOT_BOMB = "not (" * (MAX_DEPTH + 1) + "title pr" + ")" * (MAX_DEPTH + 1)
NODE_BOMB = " or ".join(f'userName eq "{i}"' for i in range(300))
OVERLONG = 'userName eq "' + "x" * MAX_FILTER_LENGTH + '"'

SYNTAX_ERRORS: list[tuple[str, str]] = [
    ("", "empty"),
    ("   \t", "empty: an expression was expected at position 4"),
    ('userName eq "x" trailing', "unexpected 't' at position 16"),
    ('userName eq "x" )', "unexpected ')'"),
    ('userName eq "x" and', "end of filter"),
    ('userName eq "x" or or title pr', "expected an operator"),
    ('(userName eq "x"', "expected ')'"),
    ('((userName eq "x")', "expected ')'"),
    ('userName eq "x")', "unexpected ')' at position 15"),
    ("()", "expected an attribute name"),
    ('emails[type eq "work"', "expected ']'"),
    ('emails[type eq "work")', "expected ']'"),
    ('emails type eq "work"]', "expected an operator"),
    ('emails[type eq "work"]]', "unexpected ']'"),
    ("emails[]", "expected an attribute name"),
    ("userName eq", "expected a value but the filter ended at position 11"),
    ("(userName eq)", "expected a value but found ')'"),
    ("emails[type eq]", "expected a value but found ']'"),
    ("userName", "expected an operator"),
    ('userName xx "x"', "expected an operator after 'userName'"),
    ('userName equals "x"', "expected an operator"),
    ('userName == "x"', "expected an operator"),
    ('eq "x"', "expected an operator"),
    ("not userName pr", "expected an operator"),
    ('userName eq "abc', "unterminated string at position 12"),
    ('userName eq "abc\\"', "unterminated string"),
    ('userName eq "\\q"', "invalid string (a bad escape, or a control character not escaped) at"),
    ('userName eq "\\q"', "at position 12"),
    ('userName eq "\\u12"', "a bad escape"),
    ('userName eq "\\x41"', "a bad escape"),
    ('userName eq "a\tb"', "a control character not escaped"),
    ('userName eq "a\\u0000b"', "cannot contain the NUL character (U+0000) at position 12"),
    ('emails[value sw "\\u0000"]', "cannot contain the NUL character (U+0000) at position 16"),
    ('emails[addresses[type eq "work"]]', "value filters cannot be nested at position 16"),
    ('emails[type eq "work" and ims[value pr]]', "value filters cannot be nested"),
    ('name.givenName[type eq "x"]', "a value filter must follow a multi-valued attribute"),
    ('emails[type eq "work"].value', "expected an operator"),
    ('emails[type eq "work"].value.x eq "y"', "expected an operator"),
    ("a.b.c pr", "expected an operator"),
    (f"{USER_SCHEMA}: pr", "invalid attribute path"),
    ('"userName" eq "x"', "expected an attribute name"),
    ("userName eq 1e999", "out of range"),
    ("userName eq -1e999", "out of range"),
    ("userName eq " + "9" * 5000, "out of range"),
    (DEPTH_BOMB, f"nested too deeply: at most {MAX_DEPTH - 1} levels"),
    (NOT_BOMB, f"nested too deeply: at most {MAX_DEPTH - 1} levels"),
    (NODE_BOMB, f"more than {MAX_NODES} comparisons and operators"),
    (OVERLONG, f"longer than {MAX_FILTER_LENGTH} characters"),
]


@pytest.mark.parametrize(
    ("text", "fragment"),
    SYNTAX_ERRORS,
    ids=[f"{i}:{t[:30]}" for i, (t, _) in enumerate(SYNTAX_ERRORS)],
)
def test_malformed_filter_is_invalid_filter_with_position(text: str, fragment: str) -> None:
    """A malformed filter raises a 400 ``invalidFilter`` naming what and where."""
    with pytest.raises(InvalidFilter) as info:
        parse(text)
    err = info.value
    assert err.scim_type == "invalidFilter"
    assert err.status == 400
    assert "position" in err.detail
    assert fragment in err.detail
    assert err.to_dict()["scimType"] == "invalidFilter"


def test_limits_are_inclusive() -> None:
    """A filter exactly at MAX_NODES expressions and MAX_FILTER_LENGTH characters parses."""
    # n comparisons joined by n - 1 ``or``: 2n - 1 expressions.
    n = (MAX_NODES + 1) // 2
    assert isinstance(parse(" or ".join(f"a{i} pr" for i in range(n))), Or)
    text = 'userName eq "' + "x" * (MAX_FILTER_LENGTH - 14) + '"'
    assert len(text) == MAX_FILTER_LENGTH
    assert isinstance(parse(text), Compare)
    depth = MAX_DEPTH - 1
    assert parse("(" * depth + "a pr" + ")" * depth) == pr("a")


# ---------------------------------------------------------------------------------------------
# Binding errors

BIND_ERRORS: list[tuple[str, str]] = [
    ('nickname2 eq "x"', "unknown attribute 'nickname2'"),
    ('name.nickName eq "x"', "has no sub-attribute 'nickName'"),
    ('emails[kind eq "work"]', "has no sub-attribute 'kind'"),
    ('urn:example:unknown:2.0:User:userName eq "x"', "unknown schema"),
    (f'{ENTERPRISE_SCHEMA}:userName eq "x"', "unknown attribute 'userName'"),
    ("active gt true", "'gt' cannot order 'active'"),
    ("emails[primary lt false]", "cannot order 'emails.primary'"),
    (f"{USER_PROPERTIES_SCHEMA}:Level co 3", "'co' needs a string attribute"),
    (f'{USER_PROPERTIES_SCHEMA}:Level sw "3"', "'sw' needs a string attribute"),
    ('meta.lastModified co "2011"', "'co' needs a string attribute"),
    ("userName eq 42", "quote the value"),
    ("title eq true", "quote the value"),
    ("emails[value eq 1.5]", "'emails.value' is a string attribute: quote the value"),
    ('name eq "x"', "is complex"),
    ("name pr and name co 1", "is complex"),
    ("title gt null", "'gt null' is not meaningful"),
    ("emails[value co null]", "'co null' is not meaningful"),
    (f'{USER_PROPERTIES_SCHEMA}:Level eq "abc"', "integer, got"),
    (
        f'{USER_PROPERTIES_SCHEMA}:Level eq "1.5"',
        "integer, got",
    ),  # a number with a fraction compares
    (f"{USER_PROPERTIES_SCHEMA}:Level eq 1e30", "integer, got"),
    (f"{USER_PROPERTIES_SCHEMA}:Verified eq 1", "boolean, got"),
    (f'{USER_PROPERTIES_SCHEMA}:HiredOn eq "2020-02-30"', "date (YYYY-MM-DD), got"),
    ('meta.lastModified gt "yesterday"', "must be a dateTime (ISO 8601"),
    ('userName[value eq "x"]', "needs a multi-valued complex attribute"),
    ('name[givenName eq "x"]', "needs a multi-valued complex attribute"),
    ('emails[value.x eq "y"]', "name a sub-attribute of 'emails'"),
    (f'emails[{USER_SCHEMA}:type eq "y"]', "name a sub-attribute of 'emails'"),
    (f"{USER_PROPERTIES_SCHEMA} pr", "names a schema, not an attribute"),
    ('meta.lastModified gt "0001-01-01T00:00:00+01:00"', "outside years 1-9999"),
]


@pytest.mark.parametrize(("text", "fragment"), BIND_ERRORS)
def test_bind_error_is_invalid_filter(text: str, fragment: str) -> None:
    """A filter that parses but makes no sense for User raises a 400 ``invalidFilter``."""
    tree = parse(text)
    with pytest.raises(InvalidFilter) as info:
        bind(tree, USER)
    assert info.value.scim_type == "invalidFilter"
    assert info.value.status == 400
    assert fragment in info.value.detail


def test_bind_rejects_user_attributes_on_group() -> None:
    """Binding is per resource type: ``userName`` is unknown on Group."""
    with pytest.raises(InvalidFilter, match="unknown attribute 'userName'"):
        bind(parse('userName eq "x"'), GROUP_TYPE)


def test_bind_rejects_nested_value_paths_built_by_hand() -> None:
    """A hand-built nested ValuePath (the parser cannot produce one) is still refused."""
    nested = ValuePath(p("emails"), ValuePath(p("ims"), pr("value")))
    with pytest.raises(InvalidFilter, match="cannot be nested"):
        bind(nested, USER)


def test_unqualified_extension_attribute_resolves_when_unambiguous() -> None:
    """Entra's unqualified ``manager`` means the one extension that defines it."""
    bound = bind(parse('manager.value eq "m"'), USER)
    assert bound == Compare(p("manager", "value", ENTERPRISE_SCHEMA), "eq", "m")
    # Beside a custom property of the same name (refused since), the standard one.
    both: ResourceType = user_type([PropertyDef("department", "String")])
    bound = bind(parse('department eq "x"'), both)
    assert bound == Compare(p("department", None, ENTERPRISE_SCHEMA), "eq", "x")


# ---------------------------------------------------------------------------------------------
# PATCH paths

PATCH_PATHS: list[tuple[str, PatchPath]] = [
    ("userName", PatchPath(p("userName"))),
    ("name.givenName", PatchPath(p("name", "givenName"))),
    ('members[value eq "x"]', PatchPath(p("members"), eq("value", "x"))),
    ('emails[type eq "work"].value', PatchPath(p("emails"), eq("type", "work"), "value")),
    (
        'emails[type eq "work" and primary eq true].display',
        PatchPath(p("emails"), And(eq("type", "work"), eq("primary", True)), "display"),
    ),
    (
        f"{ENTERPRISE_SCHEMA}:manager.value",
        PatchPath(p("manager", "value", ENTERPRISE_SCHEMA)),
    ),
    (
        f"{USER_PROPERTIES_SCHEMA}:IdentificationNumber",
        PatchPath(p("IdentificationNumber", schema=USER_PROPERTIES_SCHEMA)),
    ),
    (
        f'{USER_SCHEMA}:emails[type eq "work"].value',
        PatchPath(p("emails", schema=USER_SCHEMA), eq("type", "work"), "value"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), PATCH_PATHS)
def test_patch_path(text: str, expected: PatchPath) -> None:
    """A PATCH path parses to its attribute, optional value filter and optional sub-attribute."""
    parsed = parse_patch_path(text)
    assert parsed == expected
    assert str(parsed) == text
    assert parse_patch_path(str(parsed)) == parsed


def test_patch_path_bare_extension_urn() -> None:
    """A bare extension URN parses (last segment as attr) and renders back to the URN."""
    parsed = parse_patch_path(ENTERPRISE_SCHEMA)
    assert parsed == PatchPath(
        p("User", schema="urn:ietf:params:scim:schemas:extension:enterprise:2.0")
    )
    assert str(parsed) == ENTERPRISE_SCHEMA
    assert USER.split_urn(str(parsed)) == (ENTERPRISE_USER, "")


def test_patch_path_filter_keywords_are_case_insensitive() -> None:
    """Inside a PATCH path's brackets the filter grammar is the same, keywords included."""
    parsed = parse_patch_path('members[VALUE EQ "x" OR display PR]')
    assert parsed == PatchPath(p("members"), Or(eq("VALUE", "x"), pr("display")))


PATCH_ERRORS = [
    "",
    "   ",
    'members[value eq "x"',
    'members[value eq "x"]]',
    "members[]",
    'members[value eq "x"].display.x',
    'emails[type eq "work"].value[primary pr]',
    'name.givenName[type eq "x"]',
    'emails[addresses[type eq "work"]]',
    'emails[type eq "work"] eq "x"',
    'userName eq "x"',
    "userName pr",
    "a.b.c",
    "user name",
    '"userName"',
    "[value pr]",
    'members[value eq "x"]x',
    "members[value eq 1e999]",
    "x" * (MAX_FILTER_LENGTH + 1),
]


@pytest.mark.parametrize(
    "text", PATCH_ERRORS, ids=[f"{i}:{t[:30]}" for i, t in enumerate(PATCH_ERRORS)]
)
def test_malformed_patch_path_is_invalid_path(text: str) -> None:
    """A malformed PATCH path raises a 400 ``invalidPath`` (not ``invalidFilter``)."""
    with pytest.raises(InvalidPath) as info:
        parse_patch_path(text)
    assert info.value.scim_type == "invalidPath"
    assert info.value.status == 400
    assert "position" in info.value.detail


def test_the_limits_are_where_their_messages_say() -> None:
    """At most MAX_DEPTH - 1 nested parentheses, and MAX_NODES comparisons and operators."""
    deepest = "(" * (MAX_DEPTH - 1) + 'userName eq "x"' + ")" * (MAX_DEPTH - 1)
    parse(deepest)
    with pytest.raises(InvalidFilter, match="nested too deeply"):
        parse("(" + deepest + ")")
    n = (MAX_NODES + 1) // 2  # n comparisons and n - 1 "or": 2n - 1 <= MAX_NODES nodes
    parse(" or ".join(['userName eq "x"'] * n))
    with pytest.raises(InvalidFilter, match="comparisons and operators"):
        parse(" or ".join(['userName eq "x"'] * (n + 1)))


# ---------------------------------------------------------------------------------------------
# From a mutation audit of the parser


def test_an_operator_run_into_the_attribute_name_is_refused() -> None:
    """``userNameeq "x"`` is one unknown name and no operator: the fast path for ``attr eq
    "string"`` must not split it into ``userName eq "x"`` and answer a different question."""
    for text in ('userNameeq "x"', 'externalIdEQ "x"'):
        with pytest.raises(InvalidFilter) as info:
            parse(text)
        assert "position" in info.value.detail, text


def test_a_value_filter_nested_after_or_is_refused_where_it_is() -> None:
    """Nesting is refused on either side of ``or`` as of ``and``, with its position; in a PATCH
    path it is an ``invalidPath`` (binding would call it an ``invalidFilter``)."""
    text = 'emails[type eq "work" or ims[value pr]]'
    with pytest.raises(InvalidFilter, match="value filters cannot be nested at position 28"):
        parse(text)
    with pytest.raises(InvalidPath, match="value filters cannot be nested at position 28"):
        parse_patch_path(text)


def test_not_counts_toward_the_node_limit() -> None:
    """The limit's message counts ``not`` among the operators; a filter of ``not (...)`` terms
    past MAX_NODES nodes is refused, so negations cannot double a filter's size unseen."""
    n = MAX_NODES // 3 + 1  # n comparisons, n nots, n - 1 ors: 3n - 1 > MAX_NODES
    assert 3 * n - 1 > MAX_NODES >= 2 * n - 1
    with pytest.raises(InvalidFilter, match="comparisons and operators"):
        parse(" or ".join(["not (title pr)"] * n))
    parse(" or ".join(["not (title pr)"] * ((MAX_NODES + 1) // 3)))
