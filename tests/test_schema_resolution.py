"""Attribute paths as ``scim.schema`` resolves them (RFC 7643 §2.1, §3.3; RFC 7644 §3.10):
which schema and attribute a name, a dotted name or a URN-qualified path means, and what a
client is told when it means none."""

from __future__ import annotations

import pytest

from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import InvalidPath

ENT = S.ENTERPRISE_SCHEMA
# A custom-properties URN an operator may choose (settings allow it) that extends a standard one.
UNDER_ENT = f"{ENT}:Custom"


def test_the_longest_urn_prefixing_a_path_names_its_schema() -> None:
    """A custom-properties URN under the enterprise one (``...:2.0:User:Custom``) prefixes its
    paths with the enterprise URN too; read as an enterprise path, ``...:Custom:Age`` was an
    unknown enterprise attribute and a property value could not be sent URN-qualified."""
    rt = S.user_type([S.PropertyDef("Age", "Integer")], urn=UNDER_ENT)
    res = rt.resolve(f"{UNDER_ENT}:Age")
    assert (res.schema, res.attr.name) == (UNDER_ENT, "Age")
    assert rt.resolve(f"{ENT}:department").schema == ENT
    doc = R.normalise(rt, {"userName": "ada", f"{UNDER_ENT}:Age": 42})
    assert doc[UNDER_ENT] == {"Age": 42}


def test_the_cache_of_resolved_paths_is_bounded() -> None:
    """Paths come from clients (filters, PATCH paths, body keys), and every spelling of a URN
    is another key: an unbounded cache grew with each request until the server ran out of
    memory."""
    rt = S.user_type()
    prefix = ENT
    for n in range(5000):
        # 5,000 spellings of one path: the case of the URN's first 13 letters, bit by bit
        letters = [i for i, c in enumerate(prefix) if c.isalpha()][:13]
        chars = list(prefix)
        for bit, i in enumerate(letters):
            if n >> bit & 1:
                chars[i] = chars[i].upper()
        res = rt.resolve("".join(chars) + ":department")
        assert (res.schema, res.attr.name) == (ENT, "department")
    assert 0 < len(rt.resolved) <= 4096


def test_an_unknown_schema_in_upper_case_is_named_as_a_schema() -> None:
    """``URN:`` is a URN as ``urn:`` is (RFC 8141: the scheme is case-insensitive); a path
    under an unknown schema is refused as such, not as an attribute named after the URN."""
    rt = S.user_type()
    with pytest.raises(InvalidPath, match="unknown schema in attribute path"):
        rt.resolve("URN:example:params:scim:schemas:unknown:1.0:User:title")


def test_a_bare_schema_urn_is_no_attribute_path() -> None:
    """A path that is a schema's URN alone (``...enterprise:2.0:User``) is told that it names
    a schema; it was refused as "unknown attribute ''", which says nothing to the client."""
    rt = S.user_type()
    with pytest.raises(InvalidPath, match="names a schema, not an attribute"):
        rt.resolve(ENT)
