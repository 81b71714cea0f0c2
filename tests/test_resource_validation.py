"""Resource bodies as ``scim.resource`` reads and projects them (RFC 7643 §2, RFC 7644 §3.9):
what is stored for what a client sends, and what a projection returns."""

from __future__ import annotations

from typing import Any

import pytest

from scimd.scim import passwords as P
from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import InvalidValue

USERS = S.user_type([S.PropertyDef("Age", "Integer")])
ENT = S.ENTERPRISE_SCHEMA


def stored(**attributes: Any) -> dict[str, Any]:
    """The stored document of a User body with ``attributes`` beside its userName."""
    return R.normalise(USERS, {"schemas": [S.USER_SCHEMA], "userName": "ada", **attributes})


def test_two_primary_values_are_refused() -> None:
    """RFC 7643 §2.4: 'primary' true MUST appear no more than once; a client that sets it on
    two emails would not know which one the directory keeps as the user's address."""
    emails = [{"value": f"{n}@x.com", "primary": True} for n in ("a", "b")]
    with pytest.raises(InvalidValue, match="more than one value marked primary"):
        stored(emails=emails)


def test_a_password_is_stored_only_as_a_digest() -> None:
    """A password the request's first pass did not hash is hashed by the write itself:
    never stored in plain text."""
    kept = stored(password="s3cret!")["password"]
    assert kept != "s3cret!" and P.verify(kept, "s3cret!")


def test_an_attribute_list_takes_names_with_blanks_around_them() -> None:
    """``attributes=userName, emails`` (a space after the comma, as people write lists)
    asked for emails too; a name with its blank was unknown, and silently ignored."""
    assert R.parse_attribute_list(" userName , emails,,") == ["userName", "emails"]


RENDERED: dict[str, Any] = {
    "schemas": [S.USER_SCHEMA, ENT],
    "id": "u-1",
    "userName": "ada",
    "title": "Engineer",
    "emails": [{"value": "a@x.com", "type": "work"}],
    ENT: {"employeeNumber": "7"},
    "meta": {"resourceType": "User", "location": "http://h/scim/v2/Users/u-1"},
}


def test_excluding_an_always_returned_attribute_keeps_it() -> None:
    """RFC 7643 §2.4: an attribute returned "always" is returned whatever
    excludedAttributes says; a client that excluded ``id`` lost the handle of the user."""
    out = R.project(RENDERED, USERS, excluded=["id", "title"])
    assert out["id"] == "u-1" and "title" not in out
