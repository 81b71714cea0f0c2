"""Resource bodies as ``scim.resource`` reads and projects them (RFC 7643 §2, RFC 7644 §3.9):
what is stored for what a client sends, and what a projection returns."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scimd.scim import compat
from scimd.scim import passwords as P
from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import InvalidSyntax, InvalidValue, NotFound, ScimError

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


# --------------------------------------------------------------------------------------------
# Bodies: schemas, extension objects and what is stored (a fifth mutation audit)


def test_a_schemas_list_of_non_strings_is_a_syntax_error() -> None:
    """``"schemas": [1]`` is a malformed body (400 invalidSyntax), not a server error."""
    with pytest.raises(InvalidSyntax, match="list of schema URIs"):
        R.normalise(USERS, {"schemas": [1], "userName": "ada"})


def test_schemas_repeated_inside_an_extension_object_in_any_case_is_ignored() -> None:
    """Some clients repeat ``schemas`` inside an extension object; the key is read without
    case, as every key is, and a ``Schemas`` there refused the whole body."""
    doc = stored(**{ENT: {"Schemas": [ENT], "department": "R&D"}})
    assert doc[ENT] == {"department": "R&D"}


def test_an_extension_urn_key_in_upper_case_is_the_extension() -> None:
    """Schema URNs are compared without case everywhere else (filters, paths, attribute
    lists): an upper-cased extension key was refused as naming a schema, not an attribute."""
    doc = stored(**{ENT.upper(): {"employeeNumber": "7"}})
    assert doc[ENT] == {"employeeNumber": "7"}


def test_an_extension_that_is_not_an_object_is_an_invalid_value() -> None:
    """``"urn:...:enterprise:2.0:User": "x"`` is a client error that says what the extension
    must be, not a server error."""
    with pytest.raises(InvalidValue, match="must be a JSON object of EnterpriseUser"):
        stored(**{ENT: "x"})


def test_an_unknown_attribute_inside_an_extension_object_is_an_invalid_value() -> None:
    """A body naming an undeclared attribute is 400 invalidValue (RFC 7644 §3.12), inside an
    extension object as at the top level; invalidPath is for PATCH paths."""
    with pytest.raises(ScimError) as caught:
        stored(**{ENT: {"shoeSize": "9"}})
    assert caught.value.scim_type == "invalidValue" and "shoeSize" in caught.value.detail


def test_an_extension_left_empty_is_not_listed_in_schemas() -> None:
    """A user's custom-properties object is left empty when an admin removes the property it
    held; its reply drops the object, so ``schemas`` must not name the extension (RFC 7643 §3).
    A property holding ``""`` still counts: that value is returned."""
    props = S.USER_PROPERTIES_SCHEMA
    assert R.schemas_of(USERS, {"userName": "ada", props: {}}) == [S.USER_SCHEMA]
    assert R.schemas_of(USERS, {"userName": "ada", props: {"Age": ""}}) == [S.USER_SCHEMA, props]


def test_a_resource_id_holding_nul_names_nothing() -> None:
    """No resource can hold a NUL in its id, and PostgreSQL refuses to even look one up (a
    500): such an id is 404 before any query."""
    with pytest.raises(NotFound):
        R.resource_id("User", "a\x00b")
    assert R.resource_id("User", "u-1") == "u-1"


def test_a_whole_attribute_asked_for_beside_one_of_its_parts_is_returned_whole() -> None:
    """``attributes=name,name.givenName`` asks for all of name; reading the part after the
    whole narrowed the reply to givenName, and familyName went missing."""
    user = {**RENDERED, "name": {"givenName": "Ada", "familyName": "Lovelace"}}
    out = R.project(user, USERS, attributes=["name", "name.givenName"])
    assert out["name"] == {"givenName": "Ada", "familyName": "Lovelace"}


def test_two_parts_of_one_attribute_asked_for_are_both_returned() -> None:
    """``attributes=name.givenName,name.familyName``: each part adds to what is returned."""
    user = {**RENDERED, "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "A L"}}
    out = R.project(user, USERS, attributes=["name.givenName", "name.familyName"])
    assert out["name"] == {"givenName": "Ada", "familyName": "Lovelace"}


def test_excluding_one_part_of_an_attribute_keeps_the_others() -> None:
    """``excludedAttributes=name.givenName`` drops that part only; the reply had kept only
    the part excluded, and lost the rest of the name."""
    user = {**RENDERED, "name": {"givenName": "Ada", "familyName": "Lovelace"}}
    out = R.project(user, USERS, excluded=["name.givenName"])
    assert out["name"] == {"familyName": "Lovelace"}


def test_a_read_only_part_named_on_its_own_is_ignored() -> None:
    """RFC 7643 §2.2: a client cannot set readOnly values; ``manager.displayName`` is the
    server's, and naming it with its URN and a dot stored what the client sent."""
    doc = stored(**{f"{ENT}:manager.displayName": "Boss", f"{ENT}:manager.value": "m-1"})
    assert doc[ENT] == {"manager": {"value": "m-1"}}


def test_excluding_the_only_part_of_an_attribute_leaves_no_empty_object() -> None:
    """``excludedAttributes=name.givenName`` on a user whose name is only a givenName: the
    reply has no ``name`` rather than ``"name": {}``, an object that says nothing."""
    doc = {**RENDERED, "name": {"givenName": "Ada"}}
    out = R.project(doc, USERS, excluded=["name.givenName"])
    assert "name" not in out and out["userName"] == "ada"


def test_a_part_of_a_multi_valued_attribute_is_no_body_key() -> None:
    """``"emails.value": "a@x.com"`` does not say which email it sets: refused with the
    reason, where it was stored as ``"emails": {"value": ...}``, a single object that no
    client reads as a list of emails."""
    with pytest.raises(ScimError, match="sub-attribute of the multi-valued 'emails'"):
        stored(**{"emails.value": "a@x.com"})


def test_an_attribute_given_again_with_a_value_it_cannot_take_is_refused() -> None:
    """``"active": true`` and ``"Active": "maybe"`` name one attribute twice: the second
    value cannot be compared as a boolean, so the two are different, and the body is refused
    rather than stored with the first and the second silently dropped."""
    with pytest.raises(InvalidValue, match="'active' is given twice"):
        stored(active=True, Active="maybe")


def test_a_null_beside_a_value_for_the_same_attribute_is_no_second_value() -> None:
    """Entra sends nulls for attributes it has no value for (facts §4): a null key beside a
    value for the same attribute (in another case, or a part of it) is no conflict."""
    assert stored(title=None, Title="Engineer")["title"] == "Engineer"
    doc = stored(name={"givenName": None, "familyName": "Lovelace"}, **{"name.givenName": "Ada"})
    assert doc["name"] == {"givenName": "Ada", "familyName": "Lovelace"}


def test_an_empty_element_of_a_multi_valued_attribute_is_not_stored() -> None:
    """``"addresses": [{}]`` holds no address: storing it showed users with an empty address
    (RFC 7643 §2.5: an empty object is no value)."""
    assert stored(addresses=[{}, {"locality": "London"}])["addresses"] == [{"locality": "London"}]
    assert "addresses" not in stored(addresses=[{}])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


def _scalars(value: Any) -> list[Any]:
    """Every scalar of a JSON value, nulls included, in order."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _scalars(v)]
    if isinstance(value, list):
        return [x for v in value for x in _scalars(v)]
    return [value]


@given(st.dictionaries(st.text(max_size=3), _JSON, max_size=4))
def test_nulls_are_dropped_at_every_depth_and_the_body_is_left_as_sent(
    value: dict[str, Any],
) -> None:
    """A body without nulls (nearly every one) is read as it is, not copied; one with a null
    anywhere is read as the copy without its nulls, every other value kept in order. Either
    way the client's body is not changed."""
    sent = copy.deepcopy(value)
    out = compat.drop_nulls(value)
    assert value == sent
    if None not in _scalars(sent):
        assert out is value
    else:
        assert out == compat._without_nulls(sent)
        assert _scalars(out) == [x for x in _scalars(sent) if x is not None]


def test_one_empty_email_is_no_email_and_one_email_is_kept_as_given() -> None:
    """A one-element list is the usual case (Entra's one work email): an empty object in it
    is no value; one element is stored as given, its type and primary kept."""
    assert "emails" not in stored(emails=[{}])
    assert stored(emails=[{"value": "a@x.com", "type": "work", "primary": True}])["emails"] == [
        {"value": "a@x.com", "type": "work", "primary": True}
    ]
