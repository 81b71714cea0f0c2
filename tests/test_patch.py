"""PATCH (RFC 7644 §3.5.2) on canonical documents, with every Entra ID request shape we know."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import ScimError
from scimd.scim.patch import (
    MAX_OPERATIONS,
    PATCH_OP_SCHEMA,
    MemberOp,
    PatchResult,
    apply_patch,
)
from support.entra_replay import (
    check_expectation,
    generate_variables,
    load_steps,
    replay_path,
    substitute,
    variable_specs,
)

USERS = S.user_type(
    [S.PropertyDef("IdentificationNumber", "String"), S.PropertyDef("Age", "Integer")]
    + [S.PropertyDef(t, t) for t in ("Decimal", "Boolean", "DateTime", "Date")]
)
GROUPS = S.GROUP_TYPE
ENT = S.ENTERPRISE_SCHEMA
PROPS = S.USER_PROPERTIES_SCHEMA
ID_NUMBER = f"{PROPS}:IdentificationNumber"
MANAGER = f"{ENT}:manager"
MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"

# Entra's Create User request (facts §1.4), plus the attributes the tests below touch.
CREATE_USER: dict[str, Any] = {
    "schemas": [S.USER_SCHEMA, ENT],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
    "active": True,
    "emails": [
        {
            "primary": True,
            "type": "work",
            "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com",
        }
    ],
    "meta": {"resourceType": "User"},
    "name": {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "givenName",
    },
    "roles": [],
}


def user(**extra: Any) -> dict[str, Any]:
    """The stored document of Entra's created user, with ``extra`` attributes set."""
    return R.normalise(USERS, {**CREATE_USER, **extra})


def group(**extra: Any) -> dict[str, Any]:
    """The stored document of Entra's created group (members live elsewhere)."""
    return R.normalise(GROUPS, {"displayName": "displayName", "externalId": "8aa1a0c0", **extra})


def body(*ops: dict[str, Any]) -> dict[str, Any]:
    """A PatchOp request body holding ``ops``."""
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": list(ops)}


def patch(doc: dict[str, Any], *ops: dict[str, Any], rt: S.ResourceType = USERS) -> PatchResult:
    """Apply ``ops`` to ``doc`` and check the input was left alone."""
    before = copy.deepcopy(doc)
    result = apply_patch(rt, doc, body(*ops))
    assert doc == before
    return result


def fails(
    doc: dict[str, Any], *ops: dict[str, Any], rt: S.ResourceType = USERS, raw: Any = None
) -> ScimError:
    """Apply ``ops`` (or the ``raw`` body) expecting a SCIM error; return it."""
    before = copy.deepcopy(doc)
    with pytest.raises(ScimError) as info:
        apply_patch(rt, doc, raw if raw is not None else body(*ops))
    assert doc == before
    return info.value


def check(e: ScimError, status: int, scim_type: str | None, *fragments: str) -> None:
    """Assert the status, scimType and that the detail mentions every fragment."""
    assert (e.status, e.scim_type) == (status, scim_type), e.detail
    for fragment in fragments:
        assert fragment in e.detail, (fragment, e.detail)


def work_email(doc: dict[str, Any]) -> dict[str, Any]:
    """The single element of ``emails`` typed work."""
    found: list[dict[str, Any]] = [e for e in doc.get("emails", []) if e.get("type") == "work"]
    assert len(found) == 1, doc.get("emails")
    return found[0]


# ---------------------------------------------------------------------------------------------
# The request envelope


@pytest.mark.parametrize("raw", [[], "Operations", 3, True])
def test_body_must_be_an_object(raw: Any) -> None:
    """A body that is not a JSON object is invalidSyntax."""
    with pytest.raises(ScimError) as info:
        apply_patch(USERS, user(), raw)
    check(info.value, 400, "invalidSyntax", "JSON object")


def test_missing_operations_is_invalid_syntax() -> None:
    """A body without Operations is invalidSyntax naming Operations."""
    check(fails(user(), raw={"schemas": [PATCH_OP_SCHEMA]}), 400, "invalidSyntax", "Operations")


@pytest.mark.parametrize("ops", [None, {"op": "add"}, "add"])
def test_operations_must_be_a_list(ops: Any) -> None:
    """Operations that is not an array is invalidSyntax."""
    raw = {"schemas": [PATCH_OP_SCHEMA], "Operations": ops}
    check(fails(user(), raw=raw), 400, "invalidSyntax", "Operations", "array")


def test_empty_operations_is_invalid_value() -> None:
    """An empty Operations array is invalidValue saying one operation is needed."""
    check(fails(user(), raw=body()), 400, "invalidValue", "at least one operation")


@pytest.mark.parametrize("key", ["operations", "OPERATIONS", "Operations"])
def test_operations_key_in_any_case(key: str) -> None:
    """The Operations member is found whatever its case."""
    raw = {key: [{"op": "replace", "path": "nickName", "value": "Babs"}]}
    assert apply_patch(USERS, user(), raw).doc["nickName"] == "Babs"


def test_too_many_operations() -> None:
    """More than MAX_OPERATIONS operations is tooMany; exactly MAX_OPERATIONS is accepted."""
    op = {"op": "replace", "path": "nickName", "value": "Babs"}
    assert patch(user(), *[op] * MAX_OPERATIONS).doc["nickName"] == "Babs"
    e = fails(user(), *[op] * (MAX_OPERATIONS + 1))
    check(e, 400, "tooMany", str(MAX_OPERATIONS + 1), str(MAX_OPERATIONS))


@pytest.mark.parametrize("op", [None, "add", ["add"]])
def test_operation_must_be_an_object(op: Any) -> None:
    """A non-object operation is invalidSyntax naming its index."""
    ok = {"op": "add", "path": "nickName", "value": "x"}
    check(fails(user(), ok, op), 400, "invalidSyntax", "operation 2")


def test_operation_without_op() -> None:
    """An operation without op is invalidSyntax naming its index."""
    check(fails(user(), {"path": "nickName", "value": "x"}), 400, "invalidSyntax", "operation 1")


@pytest.mark.parametrize("op", ["copy", "move", "test", "", 1, None])
def test_unknown_op_is_invalid_syntax(op: Any) -> None:
    """An op other than add/replace/remove is invalidSyntax naming the index and the op."""
    e = fails(user(), {"op": "add", "path": "nickName", "value": "x"}, {"op": op, "path": "title"})
    check(
        e,
        400,
        "invalidSyntax",
        "operation 2",
        json.dumps(op) if not isinstance(op, str) else repr(op),
    )


@pytest.mark.parametrize("op", ["Add", "add", "ADD", "Replace", "replace", "rEpLaCe"])
def test_op_is_case_insensitive(op: str) -> None:
    """Entra's Add/Replace (legacy) and add/replace (flag dialect) are the same (facts §4.1)."""
    assert patch(user(), {"op": op, "path": "nickName", "value": "Babs"}).doc["nickName"] == "Babs"


@pytest.mark.parametrize("op", ["Remove", "remove", "REMOVE"])
def test_remove_op_is_case_insensitive(op: str) -> None:
    """Remove in any case removes (facts §4.1)."""
    assert "displayName" not in patch(user(displayName="x"), {"op": op, "path": "displayName"}).doc


def test_operation_member_names_in_any_case() -> None:
    """Op, Path and Value member names are matched case-insensitively."""
    result = patch(user(), {"Op": "Replace", "Path": "nickName", "Value": "Babs"})
    assert result.doc["nickName"] == "Babs"


@pytest.mark.parametrize(
    "schemas", [None, [], ["urn:ietf:params:scim:api:messages:2.0:Error"], "PatchOp"]
)
def test_patch_op_schema_is_tolerated_missing_or_wrong(schemas: Any) -> None:
    """A missing or unexpected schemas member does not reject the request."""
    raw: dict[str, Any] = {"Operations": [{"op": "add", "path": "nickName", "value": "Babs"}]}
    if schemas is not None:
        raw["schemas"] = schemas
    assert apply_patch(USERS, user(), raw).doc["nickName"] == "Babs"


@pytest.mark.parametrize("path", [1, ["nickName"], {"attr": "nickName"}, True])
def test_path_must_be_a_string(path: Any) -> None:
    """A non-string path is invalidPath naming the operation."""
    e = fails(user(), {"op": "replace", "path": path, "value": "x"})
    check(e, 400, "invalidPath", "operation 1", "string")


@pytest.mark.parametrize("op", ["add", "replace"])
def test_add_and_replace_need_a_value(op: str) -> None:
    """add/replace without a value member is invalidValue naming the operation."""
    check(fails(user(), {"op": op, "path": "nickName"}), 400, "invalidValue", "operation 1", op)


def test_empty_path_means_the_resource() -> None:
    """An empty path is the same as no path: the value holds attributes."""
    assert patch(user(), {"op": "replace", "path": "", "value": {"title": "T"}}).doc["title"] == "T"


@pytest.mark.parametrize(
    "path", ['emails[type eq "work"', "emails[type xx 1]", "name..givenName", "a b", "emails]"]
)
def test_malformed_path_is_invalid_path(path: str) -> None:
    """A path that does not parse is invalidPath naming the operation and the path."""
    e = fails(user(), {"op": "replace", "path": path, "value": "x"})
    check(e, 400, "invalidPath", "operation 1", path)


def test_error_detail_names_index_op_and_path() -> None:
    """An error in a later operation names its index, op and path."""
    e = fails(
        user(),
        {"op": "replace", "path": "nickName", "value": "ok"},
        {"op": "Replace", "path": "active", "value": "maybe"},
    )
    check(e, 400, "invalidValue", "operation 2 (replace 'active')", "'maybe'", "boolean")


# ---------------------------------------------------------------------------------------------
# add


@pytest.mark.parametrize("op", ["Add", "add"])
def test_add_single_valued_string_both_dialects(op: str) -> None:
    """Adding nickName sets it, in the legacy and flag dialects (facts §2.4)."""
    result = patch(user(), {"op": op, "path": "nickName", "value": "Babs"})
    assert result.doc["nickName"] == "Babs"
    assert result.changed


def test_add_replaces_an_existing_single_value() -> None:
    """add to a single-valued attribute that has a value replaces it (RFC 7644 §3.5.2.1)."""
    assert patch(user(nickName="a"), {"op": "add", "path": "nickName", "value": "b"}).doc[
        "nickName"
    ] == ("b")


def test_add_complex_merges_sub_attributes() -> None:
    """add of a complex value keeps the sub-attributes it does not mention."""
    result = patch(user(), {"op": "add", "path": "name", "value": {"middleName": "J"}})
    assert result.doc["name"] == {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "givenName",
        "middleName": "J",
    }


def test_add_multi_valued_appends() -> None:
    """add to a multi-valued attribute appends the new values."""
    result = patch(
        user(), {"op": "add", "path": "emails", "value": [{"value": "h@x.org", "type": "home"}]}
    )
    assert [e["type"] for e in result.doc["emails"]] == ["work", "home"]


def test_add_multi_valued_skips_exact_duplicates() -> None:
    """Adding a value already present changes nothing (Entra re-sends values)."""
    doc = user()
    result = patch(doc, {"op": "add", "path": "emails", "value": copy.deepcopy(doc["emails"])})
    assert result.doc == doc
    assert not result.changed


def test_add_multi_valued_skips_a_copy_differing_only_in_case() -> None:
    """emails.value and type are not caseExact (RFC 7643 §2.3.1, §4.1.2): "H@X.com"/"Home"
    is the value already there, so adding it changes nothing (RFC 7644 §3.5.2.1)."""
    doc = user()
    doc["emails"].append({"value": "h@x.org", "type": "home"})
    again = [{"value": "H@X.ORG", "type": "Home"}]
    result = patch(doc, {"op": "add", "path": "emails", "value": again})
    assert result.doc == doc
    assert not result.changed
    # Another display is another value; so is a different address.
    other = [{"value": "H@X.ORG", "type": "home", "display": "Home"}, {"value": "i@x.org"}]
    result = patch(doc, {"op": "add", "path": "emails", "value": other})
    assert result.doc["emails"][2:] == other


def test_copies_stored_earlier_stay_until_their_attribute_is_written() -> None:
    """Emails differing only in case were two values before they counted as one: a PATCH of
    another attribute (Entra re-sending active) leaves them, and changes only what it says."""
    doc = user()
    doc["emails"] = [{"value": "a@x.org"}, {"value": "A@X.org"}]
    result = patch(doc, {"op": "replace", "path": "active", "value": False})
    assert result.doc["emails"] == doc["emails"] and result.doc["active"] is False
    assert patch(doc, {"op": "replace", "path": "title", "value": doc.get("title")}).doc == doc
    added = patch(doc, {"op": "add", "path": "emails", "value": [{"value": "b@x.org"}]})
    assert added.doc["emails"] == [{"value": "a@x.org"}, {"value": "b@x.org"}]


def test_case_exact_sub_attributes_keep_copies_differing_in_case() -> None:
    """x509Certificates.value is binary (caseExact): values differing in case are two values.
    A POST body's own duplicates collapse by the same rule, keeping the first copy."""
    certs = [{"value": "QUJD"}, {"value": "qujd"}]
    result = patch(user(), {"op": "add", "path": "x509Certificates", "value": certs})
    assert result.doc["x509Certificates"] == certs
    attr = S.USER.attr["emails"]
    given = [{"value": "a@x.org", "type": "work"}, {"value": "A@X.org", "type": "WORK"}]
    assert R.normalise_value(attr, given, "emails") == [given[0]]


def test_add_multi_valued_primary_clears_the_others() -> None:
    """An added value marked primary makes the previous primary value non-primary."""
    new = {"value": "h@x.org", "type": "home", "primary": True}
    result = patch(user(), {"op": "add", "path": "emails", "value": [new]})
    assert result.doc["emails"][0]["primary"] is False
    assert result.doc["emails"][1] == new


def test_add_multi_valued_two_primaries_rejected() -> None:
    """Adding two values marked primary is invalidValue."""
    values = [{"value": f"{i}@x.org", "primary": True} for i in range(2)]
    e = fails(user(), {"op": "add", "path": "emails", "value": values})
    check(e, 400, "invalidValue", "primary")


def test_add_multi_valued_accepts_a_single_object() -> None:
    """A single object given for a multi-valued attribute is one value."""
    result = patch(
        user(), {"op": "add", "path": "phoneNumbers", "value": {"value": "+1 555", "type": "work"}}
    )
    assert result.doc["phoneNumbers"] == [{"value": "+1 555", "type": "work"}]


def test_add_empty_list_changes_nothing() -> None:
    """Adding an empty array is a no-op (changed False)."""
    result = patch(user(), {"op": "add", "path": "emails", "value": []})
    assert not result.changed


def test_add_roles_with_json_encoded_value() -> None:
    """Entra's AppRoleAssignmentsComplex role value (a JSON string) is stored as sent (§1.7)."""
    role = {"value": '{"id":"06b07648","value":"25","displayName":"Role1234"}'}
    result = patch(user(), {"op": "Add", "path": "roles", "value": [role]})
    assert result.doc["roles"] == [role]


def test_add_password_is_stored_hashed() -> None:
    """A password (writeOnly) is stored only as a salted digest."""
    result = patch(user(), {"op": "replace", "path": "password", "value": "s3cret!"})
    assert result.doc["password"].startswith("scrypt$")
    assert "s3cret!" not in result.doc["password"]


# ---------------------------------------------------------------------------------------------
# replace


def test_replace_user_name_doc_example() -> None:
    """Microsoft's Update User [single-valued] example replaces userName (facts §1.4)."""
    new = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    result = patch(user(), {"op": "Replace", "path": "userName", "value": new})
    assert result.doc["userName"] == new


def test_replace_multi_valued_doc_example() -> None:
    """Microsoft's Update User [multi-valued] example updates the work email in place."""
    result = patch(
        user(),
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@x.org"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
    )
    assert result.doc["emails"] == [
        {"value": "updatedEmail@x.org", "type": "work", "primary": True}
    ]
    assert result.doc["name"]["familyName"] == "updatedFamilyName"
    assert result.doc["name"]["givenName"] == "givenName"


def test_replace_complex_merges_sub_attributes() -> None:
    """replace of a complex value keeps unmentioned sub-attributes (RFC 7644 §3.5.2.3)."""
    result = patch(user(), {"op": "replace", "path": "name", "value": {"givenName": "G"}})
    assert result.doc["name"] == {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "G",
    }


def test_replace_complex_null_sub_attribute_unassigns_it() -> None:
    """A null sub-attribute in a complex replace value removes that sub-attribute."""
    result = patch(
        user(), {"op": "replace", "path": "name", "value": {"givenName": "G", "formatted": None}}
    )
    assert result.doc["name"] == {"familyName": "familyName", "givenName": "G"}


def test_replace_multi_valued_replaces_all_values() -> None:
    """replace of a multi-valued attribute without filter replaces every value."""
    new = [{"value": "a@x.org", "type": "home"}]
    assert patch(user(), {"op": "replace", "path": "emails", "value": new}).doc["emails"] == new


def test_replace_multi_valued_with_empty_list_removes_it() -> None:
    """Replacing a multi-valued attribute with [] leaves it unassigned."""
    assert "emails" not in patch(user(), {"op": "replace", "path": "emails", "value": []}).doc


def test_replace_core_urn_qualified_paths() -> None:
    """Paths qualified with the core schema URN, common attributes included, resolve."""
    result = patch(
        user(),
        {"op": "replace", "path": f"{S.USER_SCHEMA}:displayName", "value": "D"},
        {"op": "replace", "path": f"{S.USER_SCHEMA}:externalId", "value": "E"},
        {"op": "replace", "path": f"{S.USER_SCHEMA}:name.givenName", "value": "G"},
    )
    assert (result.doc["displayName"], result.doc["externalId"]) == ("D", "E")
    assert result.doc["name"]["givenName"] == "G"


def test_attribute_names_are_case_insensitive() -> None:
    """Attribute and sub-attribute names in paths resolve whatever their case."""
    result = patch(
        user(),
        {"op": "replace", "path": "USERNAME", "value": "u"},
        {"op": "replace", "path": "Name.GivenName", "value": "g"},
        {"op": "replace", "path": 'EMAILS[TYPE eq "work"].VALUE', "value": "v@x.org"},
    )
    assert result.doc["userName"] == "u"
    assert result.doc["name"]["givenName"] == "g"
    assert work_email(result.doc)["value"] == "v@x.org"


def test_idempotent_replace_reports_no_change() -> None:
    """Entra re-sending active=true (and other unchanged values) is a success with changed False."""
    ops: list[dict[str, Any]] = [
        {"op": "Replace", "path": "active", "value": "True"},
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "w@x.org"},
        {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
        {"op": "replace", "value": {"displayName": "Bjfe", f"{ENT}:employeeNumber": "Aklq"}},
    ]
    first = patch(user(), *ops)
    assert first.changed
    second = patch(first.doc, *ops)
    assert not second.changed
    assert second.doc == first.doc
    assert not patch(user(), {"op": "replace", "path": "active", "value": True}).changed


# ---------------------------------------------------------------------------------------------
# Booleans and numbers as strings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("False", False),
        ("True", True),
        ("false", False),
        ("TRUE", True),
        (False, False),
        (True, True),
    ],
)
def test_active_accepts_booleans_and_boolean_strings(value: Any, expected: bool) -> None:
    """active as a JSON boolean or "True"/"False" in any case (facts §2.4, §4.2)."""
    assert patch(user(), {"op": "Replace", "path": "active", "value": value}).doc["active"] is (
        expected
    )


@pytest.mark.parametrize("value", ["maybe", "1", 0, [], {}])
def test_active_rejects_non_booleans(value: Any) -> None:
    """A value that is no boolean is invalidValue naming active."""
    check(fails(user(), {"op": "replace", "path": "active", "value": value}), 400, "invalidValue")
    e = fails(user(), {"op": "replace", "path": "active", "value": "maybe"})
    check(e, 400, "invalidValue", "active")


def test_primary_filter_value_as_string() -> None:
    """emails[type eq "work"].primary accepts "True", as Entra sends booleans (facts §2.3)."""
    doc = user(emails=[{"value": "a@x.org", "type": "work"}, {"value": "b@x.org", "primary": True}])
    result = patch(
        doc, {"op": "replace", "path": 'emails[type eq "work"].primary', "value": "True"}
    )
    assert result.doc["emails"] == [
        {"value": "a@x.org", "type": "work", "primary": True},
        {"value": "b@x.org", "primary": False},
    ]


def test_integer_property_accepts_numeric_strings() -> None:
    """An Integer custom property accepts "42" and stores 42."""
    result = patch(user(), {"op": "add", "path": f"{PROPS}:Age", "value": "42"})
    assert result.doc[PROPS] == {"Age": 42}


def test_integer_property_rejects_text() -> None:
    """A non-numeric value for an Integer property is invalidValue naming it."""
    e = fails(user(), {"op": "add", "path": f"{PROPS}:Age", "value": "forty"})
    check(e, 400, "invalidValue", "Age", "integer")


# ---------------------------------------------------------------------------------------------
# Path-less add/replace


def test_pathless_replace_plain_keys() -> None:
    """A path-less value's plain keys are attributes (validator: userName, active)."""
    result = patch(
        user(), {"op": "replace", "value": {"userName": "emilio@hermann.uk", "active": "False"}}
    )
    assert (result.doc["userName"], result.doc["active"]) == ("emilio@hermann.uk", False)


def test_pathless_replace_flag_dialect_example() -> None:
    """The flag dialect's replace-multiple body: dotted and full-URN keys (facts §2.4)."""
    result = patch(
        user(),
        {
            "op": "replace",
            "path": 'emails[type eq "work"].value',
            "value": "TestMhvaes@test.microsoft.com",
        },
        {
            "op": "replace",
            "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                f"{ENT}:employeeNumber": "Aklq",
            },
        },
    )
    doc = result.doc
    assert work_email(doc) == {
        "value": "TestMhvaes@test.microsoft.com",
        "type": "work",
        "primary": True,
    }
    assert doc["displayName"] == "Bjfe"
    assert doc["name"] == {
        "formatted": "givenName familyName",
        "familyName": "Unua",
        "givenName": "Kkom",
    }
    assert doc[ENT] == {"employeeNumber": "Aklq"}


def test_pathless_custom_property_key() -> None:
    """The Bizagi custom property as a full-URN path-less key (replay, flag dialect)."""
    result = patch(user(), {"op": "replace", "value": {ID_NUMBER: "9876543210"}})
    assert result.doc[PROPS] == {"IdentificationNumber": "9876543210"}


def test_pathless_extension_object_key() -> None:
    """An extension URN key holds an object of that extension's attributes."""
    result = patch(
        user(),
        {
            "op": "add",
            "value": {ENT: {"department": "Tour", "manager": MANAGER_ID}, PROPS: {"Age": 3}},
        },
    )
    assert result.doc[ENT] == {"department": "Tour", "manager": {"value": MANAGER_ID}}
    assert result.doc[PROPS] == {"Age": 3}


def test_pathless_core_schema_object_key() -> None:
    """A core schema URN key holds core attributes."""
    result = patch(user(), {"op": "replace", "value": {S.USER_SCHEMA: {"title": "Boss"}}})
    assert result.doc["title"] == "Boss"


@pytest.mark.parametrize(
    "value",
    [
        {"title": "t1", "Title": "t2"},
        {S.USER_SCHEMA: {"title": "t1"}, "title": "t2"},
        {ENT: {"department": "d1"}, f"{ENT}:department": "d2"},
        {'emails[type eq "work"].value': "a@x.com", 'Emails[Type eq "work"].Value': "b@x.com"},
    ],
)
def test_pathless_one_attribute_under_two_keys_with_different_values_is_refused(
    value: dict[str, Any],
) -> None:
    """Keys name attributes case-insensitively, and an extension's attributes may be written
    inside its object or with its URN: one value was silently lost (the last key won)."""
    e = fails(user(), {"op": "replace", "value": value})
    check(e, 400, "invalidValue", "given twice", "send it once")


def test_pathless_one_attribute_under_two_keys_alike_is_written_once() -> None:
    value = {"title": "t", "Title": "t", ENT: {"department": "d"}, f"{ENT}:department": "d"}
    result = patch(user(), {"op": "replace", "value": value})
    assert result.doc["title"] == "t" and result.doc[ENT] == {"department": "d"}


def test_a_body_naming_one_attribute_twice_differently_is_refused() -> None:
    """POST and PUT: ``emails`` and ``Emails`` both given, only the last was stored."""
    for extra in (
        {"emails": [{"value": "a@x.com"}], "Emails": [{"value": "b@x.com"}]},
        {"title": "a", f"{S.USER_SCHEMA}:title": "b"},
        {ENT: {"department": "d1"}, f"{ENT}:department": "d2"},
        {"name.givenName": "a", "Name.GivenName": "b"},
        {"name": {"givenName": "a", "GivenName": "b"}},  # within one complex value
        {"name": {"givenName": "a"}, "name.givenName": "b"},  # whole and part
        {"emails": [{"value": "a@x.com", "Value": "b@x.com"}]},
    ):
        with pytest.raises(ScimError, match=r"given twice.*send it once") as refused:
            R.normalise(USERS, {"userName": "u", **extra})
        assert refused.value.status == 400 and refused.value.scim_type == "invalidValue"
    same = R.normalise(USERS, {"userName": "u", "title": "a", "TITLE": "a"})
    assert same == {"userName": "u", "title": "a"}
    # Alike once read as the attribute reads them (they were refused as "different").
    alike = R.normalise(USERS, {"userName": "u", "active": True, "Active": "True"})
    assert alike["active"] is True
    manager = {ENT: {"manager": MANAGER_ID}, f"{ENT}:manager": {"value": MANAGER_ID}}
    assert R.normalise(USERS, {"userName": "u", **manager})[ENT] == {
        "manager": {"value": MANAGER_ID}
    }
    patched = patch(user(), {"op": "replace", "value": {"active": "False", "Active": False}})
    assert patched.doc["active"] is False
    # A whole value and a part of it it does not give merge, in either order.
    for body in (
        {"userName": "u", "name.givenName": "g", "name": {"familyName": "f"}},
        {"userName": "u", "name": {"familyName": "f"}, "name.givenName": "g"},
        {"userName": "u", "name": {"familyName": "f", "givenName": "g"}, "name.givenName": "g"},
    ):
        assert R.normalise(USERS, body)["name"] == {"givenName": "g", "familyName": "f"}
    e = fails(
        user(), {"op": "replace", "path": "name", "value": {"givenName": "a", "GIVENNAME": "b"}}
    )
    check(e, 400, "invalidValue", "given twice")


@pytest.mark.parametrize(
    "raw",
    [
        {"Operations": [{"op": "replace", "path": "active", "value": True, "Value": False}]},
        {"Operations": [{"op": "replace", "path": "title", "Path": "active", "value": False}]},
        {"Operations": [{"op": "add", "Op": "remove", "path": "title"}]},
        {
            "operations": [{"op": "replace", "path": "title", "value": "t"}],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    ],
)
def test_an_envelope_key_spelled_twice_with_different_values_is_refused(raw: Any) -> None:
    """The PATCH applied one spelling and its audit record read the other: a user could be
    disabled while the log said a title changed, or that the user was enabled."""
    e = fails(user(), raw=raw)
    check(e, 400, "invalidSyntax", "different values", "send it once")


def test_the_operations_applied_are_returned_as_read() -> None:
    """The audit record is written from these, not from the raw body again."""
    raw = {
        "operations": [{"Op": "Replace", "Path": "active", "Value": "False", "value": "False"}],
        "Operations": [{"Op": "Replace", "Path": "active", "Value": "False", "value": "False"}],
    }
    result = apply_patch(USERS, user(), raw)
    assert result.operations == [("replace", "active", "False")]
    assert result.doc["active"] is False


def test_pathless_ignores_server_owned_keys() -> None:
    """schemas, id and meta in a path-less value are ignored."""
    value = {"schemas": [S.USER_SCHEMA], "id": "x", "meta": {"resourceType": "User"}, "title": "T"}
    result = patch(user(), {"op": "replace", "value": value})
    assert result.doc == {**user(), "title": "T"}


def test_pathless_unknown_key_is_rejected_by_name() -> None:
    """An unknown key in a path-less value is invalidValue naming it."""
    e = fails(user(), {"op": "replace", "value": {"displayName": "x", "favouriteColour": "red"}})
    check(e, 400, "invalidValue", "favouriteColour", "operation 1")


def test_pathless_unknown_custom_property_is_rejected_by_name() -> None:
    """An undefined custom property in a path-less value is a 400 naming it."""
    e = fails(user(), {"op": "replace", "value": {f"{PROPS}:ShoeSize": "42"}})
    check(e, 400, "invalidValue", "ShoeSize")
    e = fails(user(), {"op": "replace", "value": {PROPS: {"ShoeSize": "42"}}})
    check(e, 400, "invalidValue", "ShoeSize")


@pytest.mark.parametrize("value", ["x", ["a"], None, 3])
def test_pathless_value_must_be_an_object(value: Any) -> None:
    """A path-less add/replace whose value is not an object is invalidValue."""
    check(fails(user(), {"op": "add", "value": value}), 400, "invalidValue", "JSON object")


def test_pathless_equals_the_same_ops_with_paths() -> None:
    """A path-less value is the list of (key, value) ops applied in order."""
    value = {"name.givenName": "K", "displayName": "D", f"{ENT}:costCenter": "4", ID_NUMBER: "7"}
    pathless = patch(user(), {"op": "replace", "value": value})
    with_paths = patch(
        user(), *({"op": "replace", "path": k, "value": v} for k, v in value.items())
    )
    assert pathless.doc == with_paths.doc


def test_pathless_null_unassigns() -> None:
    """A null in a path-less value removes that attribute."""
    result = patch(user(title="T"), {"op": "replace", "value": {"title": None, ENT: None}})
    assert "title" not in result.doc


def test_pathless_group_replace() -> None:
    """The validator's path-less group replace of externalId (replay)."""
    result = patch(group(), {"op": "replace", "value": {"externalId": "c3b97a69"}}, rt=GROUPS)
    assert result.doc == {"displayName": "displayName", "externalId": "c3b97a69"}
    assert result.member_ops == []


# ---------------------------------------------------------------------------------------------
# Value paths


def test_value_path_replace_updates_in_place() -> None:
    """replace emails[type eq "work"].value updates the work element, keeping primary."""
    result = patch(
        user(), {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "n@x.org"}
    )
    assert result.doc["emails"] == [{"value": "n@x.org", "type": "work", "primary": True}]


def test_value_path_add_creates_missing_element() -> None:
    """Add phoneNumbers[type eq "mobile"].value creates the mobile element (facts §4.4)."""
    result = patch(
        user(),
        {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+57 3001234567"},
    )
    assert result.doc["phoneNumbers"] == [{"type": "mobile", "value": "+57 3001234567"}]


def test_value_path_keeps_one_element_per_type() -> None:
    """Repeated value-path writes create the typed element once, then update it."""
    doc = user()
    for street in ["1 Main St", "2 Main St", "2 Main St"]:
        doc = patch(
            doc,
            {"op": "replace", "path": 'addresses[type eq "work"].streetAddress', "value": street},
            {"op": "replace", "path": 'addresses[type eq "work"].locality', "value": "Bogota"},
        ).doc
    assert doc["addresses"] == [
        {"type": "work", "streetAddress": "2 Main St", "locality": "Bogota"}
    ]


def test_validator_replace_on_several_value_paths() -> None:
    """The SCIM Validator's multi-attribute value-path replace (facts §3.1)."""
    doc = user(
        phoneNumbers=[{"type": "work", "value": "1"}],
        addresses=[{"type": "work", "streetAddress": "old", "country": "CO"}],
    )
    result = patch(
        doc,
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "w@x.org"},
        {"op": "replace", "path": 'phoneNumbers[type eq "work"].value', "value": "2"},
        {"op": "replace", "path": 'addresses[type eq "work"].streetAddress', "value": "new"},
        {"op": "replace", "path": 'addresses[type eq "work"].locality', "value": "Cali"},
    )
    assert work_email(result.doc)["value"] == "w@x.org"
    assert result.doc["phoneNumbers"] == [{"type": "work", "value": "2"}]
    assert result.doc["addresses"] == [
        {"type": "work", "streetAddress": "new", "country": "CO", "locality": "Cali"}
    ]


def test_roles_primary_value_path_creates_primary_role() -> None:
    """roles[primary eq "True"].value creates a primary role (SingleAppRoleAssignment, §1.7)."""
    result = patch(
        user(), {"op": "Add", "path": 'roles[primary eq "True"].value', "value": "Admin"}
    )
    assert result.doc["roles"] == [{"primary": True, "value": "Admin"}]
    again = patch(
        result.doc, {"op": "Replace", "path": 'roles[primary eq "True"].value', "value": "User"}
    )
    assert again.doc["roles"] == [{"primary": True, "value": "User"}]


def test_value_path_updates_every_matching_element() -> None:
    """A value path that matches several elements sets the sub-attribute on each."""
    doc = user(emails=[{"value": "a@x.org", "type": "home"}, {"value": "b@x.org", "type": "home"}])
    result = patch(doc, {"op": "replace", "path": 'emails[type eq "home"].display', "value": "H"})
    assert [e["display"] for e in result.doc["emails"]] == ["H", "H"]


def test_value_path_filter_is_case_insensitive_for_strings() -> None:
    """type eq "WORK" matches the stored "work" (type is not caseExact)."""
    result = patch(
        user(), {"op": "replace", "path": 'emails[type eq "WORK"].value', "value": "z@x.org"}
    )
    assert result.doc["emails"] == [{"value": "z@x.org", "type": "work", "primary": True}]


def test_value_path_and_filter_creates_with_every_eq() -> None:
    """A filter of eq comparisons joined by and describes the created element."""
    path = 'phoneNumbers[type eq "work" and primary eq true].value'
    result = patch(user(), {"op": "add", "path": path, "value": "+1"})
    assert result.doc["phoneNumbers"] == [{"type": "work", "primary": True, "value": "+1"}]


@pytest.mark.parametrize(
    "path",
    [
        'emails[value co "nobody"].type',
        'emails[type ne "work"].value',
        'emails[type eq "home" or type eq "other"].value',
        "emails[display pr].display",
    ],
)
def test_value_path_without_match_or_description_is_no_target(path: str) -> None:
    """Nothing matches and the filter describes no element: noTarget naming the path."""
    e = fails(
        user(emails=[{"value": "a@x.org", "type": "work"}]),
        {"op": "replace", "path": path, "value": "x"},
    )
    check(e, 400, "noTarget", path)


def test_value_path_replace_whole_element() -> None:
    """replace emails[type eq "work"] with an object replaces the matching element."""
    new = {"value": "n@x.org", "type": "work"}
    result = patch(user(), {"op": "replace", "path": 'emails[type eq "work"]', "value": new})
    assert result.doc["emails"] == [new]


def test_value_path_replace_whole_element_creates_when_missing() -> None:
    """replace of a value path without sub-attribute creates the described element if none."""
    result = patch(
        user(), {"op": "replace", "path": 'phoneNumbers[type eq "fax"]', "value": {"value": "9"}}
    )
    assert result.doc["phoneNumbers"] == [{"type": "fax", "value": "9"}]


def test_value_path_add_whole_element_merges() -> None:
    """add of an object through a value path merges it into the matching element."""
    result = patch(
        user(), {"op": "add", "path": 'emails[type eq "work"]', "value": {"display": "W"}}
    )
    assert result.doc["emails"][0]["display"] == "W"
    assert result.doc["emails"][0]["primary"] is True


def test_value_path_primary_true_clears_the_others() -> None:
    """Setting primary true through a value path unsets primary elsewhere."""
    doc = user(
        emails=[
            {"value": "a@x.org", "type": "work", "primary": True},
            {"value": "b@x.org", "type": "home"},
        ]
    )
    result = patch(doc, {"op": "replace", "path": 'emails[type eq "home"].primary', "value": True})
    assert [e.get("primary") for e in result.doc["emails"]] == [False, True]


def test_value_path_primary_true_on_two_matches_rejected() -> None:
    """Marking two matched elements primary is invalidValue."""
    doc = user(emails=[{"value": "a@x.org", "type": "home"}, {"value": "b@x.org", "type": "home"}])
    e = fails(doc, {"op": "replace", "path": 'emails[type eq "home"].primary', "value": True})
    check(e, 400, "invalidValue", "primary")


def test_primary_on_copies_an_earlier_operation_made_is_one_value_marked() -> None:
    """An operation that makes two elements equal, then one marking that value primary:
    applied in order (RFC 7644 §3.5.2), the second names one value (the copies are kept
    once), as it does sent in two PATCHes. It was refused as two values marked primary."""
    doc = user(emails=[{"value": "a@x.org", "type": "work"}, {"value": "b@x.org", "type": "work"}])
    result = patch(
        doc,
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@x.org"},
        {"op": "replace", "path": 'emails[value eq "a@x.org"].primary', "value": True},
    )
    assert result.doc["emails"] == [{"value": "a@x.org", "type": "work", "primary": True}]
    # A third element, primary before, is no longer.
    doc["emails"].append({"value": "c@x.org", "type": "home", "primary": True})
    result = patch(
        doc,
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@x.org"},
        {"op": "add", "path": 'emails[value eq "a@x.org"].primary', "value": True},
    )
    assert [e.get("primary") for e in result.doc["emails"]] == [True, False]


def test_value_path_null_removes_the_sub_attribute() -> None:
    """A null value through a value path unassigns that sub-attribute; no element is created."""
    result = patch(
        user(), {"op": "replace", "path": 'emails[type eq "work"].primary', "value": None}
    )
    assert result.doc["emails"] == [{"value": CREATE_USER["emails"][0]["value"], "type": "work"}]
    none = patch(
        user(), {"op": "replace", "path": 'phoneNumbers[type eq "fax"].value', "value": None}
    )
    assert not none.changed


def test_value_path_value_is_validated() -> None:
    """A value of the wrong type through a value path is invalidValue naming the sub-attribute."""
    e = fails(user(), {"op": "replace", "path": 'emails[type eq "work"].primary', "value": "often"})
    check(e, 400, "invalidValue", "emails.primary")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ('emails[type eq "work"].colour', "colour"),
        ('emails[colour eq "red"].value', "colour"),
        ('userName[value eq "x"]', "userName"),
        ("emails[value gt true].value", "emails"),
    ],
)
def test_value_path_errors_are_invalid_path(path: str, fragment: str) -> None:
    """Unknown sub-attributes and filters on simple attributes are invalidPath."""
    e = fails(user(), {"op": "replace", "path": path, "value": "x"})
    check(e, 400, "invalidPath", fragment)


def test_multi_valued_sub_attribute_without_filter_sets_every_element() -> None:
    """emails.display without a filter sets the sub-attribute of every element."""
    doc = user(emails=[{"value": "a@x.org"}, {"value": "b@x.org"}])
    result = patch(doc, {"op": "replace", "path": "emails.display", "value": "E"})
    assert [e["display"] for e in result.doc["emails"]] == ["E", "E"]
    created = patch(user(), {"op": "add", "path": "phoneNumbers.value", "value": "+1"})
    assert created.doc["phoneNumbers"] == [{"value": "+1"}]


# ---------------------------------------------------------------------------------------------
# remove


def test_remove_without_path_is_no_target() -> None:
    """remove needs a path (RFC 7644 §3.5.2.2): noTarget."""
    check(fails(user(), {"op": "remove"}), 400, "noTarget", "operation 1", "path")
    check(fails(user(), {"op": "Remove", "value": {"title": "x"}}), 400, "noTarget")


def test_remove_whole_attribute() -> None:
    """remove of an attribute deletes it."""
    assert "emails" not in patch(user(), {"op": "remove", "path": "emails"}).doc
    assert "name" not in patch(user(), {"op": "remove", "path": "name"}).doc


def test_remove_sub_attribute_of_complex() -> None:
    """remove name.familyName deletes that sub-attribute only; the last one deletes the parent."""
    result = patch(user(), {"op": "remove", "path": "name.familyName"})
    assert result.doc["name"] == {"formatted": "givenName familyName", "givenName": "givenName"}
    doc = user(name={"givenName": "g"})
    assert "name" not in patch(doc, {"op": "remove", "path": "name.givenName"}).doc


def test_remove_value_path_elements() -> None:
    """remove emails[type eq "home"] deletes the matching elements only."""
    doc = user(emails=[{"value": "a@x.org", "type": "work"}, {"value": "b@x.org", "type": "home"}])
    result = patch(doc, {"op": "remove", "path": 'emails[type eq "home"]'})
    assert result.doc["emails"] == [{"value": "a@x.org", "type": "work"}]


def test_remove_last_matching_element_unassigns_attribute() -> None:
    """Removing the only element leaves the attribute unassigned."""
    assert "emails" not in patch(user(), {"op": "remove", "path": 'emails[type eq "work"]'}).doc


def test_remove_value_path_sub_attribute() -> None:
    """remove addresses[type eq "work"].locality deletes the sub-attribute on matches."""
    doc = user(
        addresses=[
            {"type": "work", "locality": "L", "country": "CO"},
            {"type": "home", "locality": "H"},
        ]
    )
    result = patch(doc, {"op": "remove", "path": 'addresses[type eq "work"].locality'})
    assert result.doc["addresses"] == [
        {"type": "work", "country": "CO"},
        {"type": "home", "locality": "H"},
    ]


def test_remove_sub_attribute_of_every_element() -> None:
    """remove emails.primary without filter deletes it from every element."""
    doc = user(
        emails=[{"value": "a@x.org", "primary": True}, {"value": "b@x.org", "primary": False}]
    )
    result = patch(doc, {"op": "remove", "path": "emails.primary"})
    assert result.doc["emails"] == [{"value": "a@x.org"}, {"value": "b@x.org"}]


def test_remove_with_value_removes_only_listed_values() -> None:
    """remove emails with a value removes only the listed values (facts §4.9)."""
    doc = user(
        emails=[
            {"value": "a@x.org", "type": "work"},
            {"value": "b@x.org", "type": "home"},
            {"value": "c@x.org", "type": "other"},
        ]
    )
    result = patch(
        doc, {"op": "Remove", "path": "emails", "value": [{"value": "B@X.ORG"}, "c@x.org"]}
    )
    assert result.doc["emails"] == [{"value": "a@x.org", "type": "work"}]


def test_remove_with_object_value_matches_all_given_sub_attributes() -> None:
    """A remove value object selects the elements holding all its sub-attribute values."""
    doc = user(roles=[{"value": "a", "type": "x"}, {"value": "a", "type": "y"}])
    result = patch(doc, {"op": "remove", "path": "roles", "value": [{"value": "a", "type": "y"}]})
    assert result.doc["roles"] == [{"value": "a", "type": "x"}]


def test_remove_with_value_of_absent_value_changes_nothing() -> None:
    """Removing a value that is not there succeeds with changed False."""
    result = patch(user(), {"op": "remove", "path": "emails", "value": [{"value": "nobody@x.org"}]})
    assert not result.changed


def test_remove_with_value_on_single_valued_target_ignores_the_value() -> None:
    """remove with a value on a single-valued attribute removes the attribute (facts §4.9)."""
    result = patch(user(displayName="D"), {"op": "remove", "path": "displayName", "value": "other"})
    assert "displayName" not in result.doc


def test_remove_with_old_value_on_value_path_sub_attribute() -> None:
    """Entra's remove of emails[type eq "work"].value carrying the old value never sets it."""
    result = patch(
        user(),
        {"op": "Remove", "path": 'emails[type eq "work"].value', "value": "updated@example.org"},
    )
    assert "emails" not in result.doc  # the element went with its value (see below)
    assert "updated@example.org" not in str(result.doc)


def test_remove_unmatched_value_path_changes_nothing() -> None:
    """remove through a value path that matches nothing is a successful no-op."""
    result = patch(user(), {"op": "remove", "path": 'emails[type eq "home"]'})
    assert not result.changed
    assert not patch(user(), {"op": "remove", "path": "nickName"}).changed


@pytest.mark.parametrize(
    ("rt", "doc", "op", "name"),
    [
        (USERS, user(), {"op": "remove", "path": "userName"}, "userName"),
        (USERS, user(), {"op": "replace", "path": "userName", "value": None}, "userName"),
        (USERS, user(), {"op": "replace", "value": {"userName": None}}, "userName"),
        (USERS, user(), {"op": "replace", "path": "userName", "value": ""}, "userName"),
        (GROUPS, group(), {"op": "Remove", "path": "displayName"}, "displayName"),
    ],
)
def test_removing_a_required_attribute_is_mutability(
    rt: S.ResourceType, doc: dict[str, Any], op: dict[str, Any], name: str
) -> None:
    """Leaving userName or a group displayName unassigned is a 400 ``mutability`` naming it
    (RFC 7644 §3.5.2.2: "...defined as a required attribute or a read-only attribute, the
    server SHALL return ... mutability"); it was invalidValue."""
    check(fails(doc, op, rt=rt), 400, "mutability", name, "required")


def test_remove_whole_extension() -> None:
    """remove of an extension URN deletes all its attributes."""
    doc = user(**{ENT: {"department": "D"}})
    assert ENT not in patch(doc, {"op": "remove", "path": ENT}).doc


def test_core_schema_urn_alone_is_not_a_path() -> None:
    """The core schema URN alone names no attribute: invalidPath."""
    check(fails(user(), {"op": "remove", "path": S.USER_SCHEMA}), 400, "invalidPath")


# ---------------------------------------------------------------------------------------------
# Null values (Entra's SCIM_Null_Update_Test)


def test_null_update_unassigns_attributes() -> None:
    """PATCH with empty strings then nulls: attributes read back empty, then absent (§3.2)."""
    doc = user(title="T", displayName="D", **{ENT: {"department": "X"}})
    paths = ["title", "displayName", f"{ENT}:department", "name.givenName"]
    empty = patch(doc, *({"op": "replace", "path": p, "value": ""} for p in paths)).doc
    assert (empty["title"], empty["displayName"], empty[ENT]["department"]) == ("", "", "")
    nulled = patch(empty, *({"op": "replace", "path": p, "value": None} for p in paths)).doc
    assert "title" not in nulled
    assert "displayName" not in nulled
    assert ENT not in nulled
    assert "givenName" not in nulled["name"]


TYPED = {"Age": "42", "Decimal": "1.5", "Boolean": "True", "DateTime": "2020-01-02T03:04:05Z"}
TYPED["Date"] = "1990-05-06"


@pytest.mark.parametrize("name", sorted(TYPED))
def test_an_empty_string_unassigns_a_property_that_cannot_be_empty(name: str) -> None:
    """Entra forwards an emptied source attribute as "" (and the Null_Update test sends "");
    a number, boolean, dateTime or date has no empty value, so "" clears it as null does, in
    each form Entra sends, and leaves the other changes of the request applied."""
    doc = user(**{PROPS: {**TYPED, "IdentificationNumber": "X"}})
    path = f"{PROPS}:{name}"
    for op in ("replace", "Add"):
        assert name not in patch(doc, {"op": op, "path": path, "value": ""}).doc[PROPS]
    pathless = patch(doc, {"op": "replace", "value": {path: "", "displayName": "New"}}).doc
    assert name not in pathless[PROPS] and pathless["displayName"] == "New"
    nested = patch(doc, {"op": "replace", "path": PROPS, "value": {name: ""}}).doc
    assert name not in nested[PROPS]
    created = user(**{PROPS: {name: "", "IdentificationNumber": ""}})
    assert created[PROPS] == {"IdentificationNumber": ""}  # a string keeps ""


def test_an_empty_manager_unassigns_it() -> None:
    """Microsoft's manager test "Replace with empty": "" (or []) clears the manager."""
    doc = user(**{ENT: {"manager": MANAGER_ID, "department": "D"}})
    for value in ("", []):
        assert patch(doc, {"op": "replace", "path": MANAGER, "value": value}).doc[ENT] == {
            "department": "D"
        }
    assert ENT not in user(**{ENT: {"manager": ""}})


def test_a_second_copy_of_an_element_is_not_kept() -> None:
    """RFC 7643 §2.4: a service provider SHOULD NOT return the same value twice; a second
    copy, sent or made by a value-path write, adds nothing and is dropped."""
    work = {"type": "work", "value": "a@x.com"}
    assert user(emails=[work, dict(work)])["emails"] == [work]
    doc = user(roles=[{"type": "t", "value": "1"}, {"type": "t", "value": "2"}])
    result = patch(doc, {"op": "replace", "path": 'roles[type eq "t"].value', "value": "1"})
    assert result.doc["roles"] == [{"type": "t", "value": "1"}]
    again = patch(result.doc, {"op": "replace", "path": 'roles[type eq "t"].value', "value": "1"})
    assert not again.changed


def test_a_qualified_key_holding_only_read_only_parts_leaves_no_empty_extension() -> None:
    """``"...:enterprise:2.0:User:manager": {"displayName": "Boss"}`` stores nothing: no
    ``{}`` extension that a later identical PUT would differ from."""
    assert ENT not in user(**{MANAGER: {"displayName": "Boss"}})


def test_add_null_unassigns() -> None:
    """add with a null value unassigns the target."""
    assert "title" not in patch(user(title="T"), {"op": "add", "path": "title", "value": None}).doc
    assert "emails" not in patch(user(), {"op": "add", "path": "emails", "value": None}).doc


# ---------------------------------------------------------------------------------------------
# Enterprise manager (facts §3, §4.8)


def test_manager_add_as_string() -> None:
    """manager as a bare id string (SCIM-SDK #686) becomes {"value": id}."""
    result = patch(user(), {"op": "add", "path": MANAGER, "value": MANAGER_ID})
    assert result.doc[ENT] == {"manager": {"value": MANAGER_ID}}


def test_manager_add_as_object() -> None:
    """The SCIM Validator's {"value": {"value": id}} sets the manager."""
    result = patch(user(), {"op": "add", "path": MANAGER, "value": {"value": MANAGER_ID}})
    assert result.doc[ENT] == {"manager": {"value": MANAGER_ID}}


def test_manager_add_as_array_doc_example() -> None:
    """Microsoft's example 5: path "manager" and a one-element array with $ref (facts §1.4)."""
    ref = f"http://localhost/scim/Users/{MANAGER_ID}"
    result = patch(
        user(), {"op": "Add", "path": "manager", "value": [{"$ref": ref, "value": MANAGER_ID}]}
    )
    assert result.doc[ENT] == {"manager": {"$ref": ref, "value": MANAGER_ID}}


def test_a_list_of_several_values_for_a_single_valued_attribute_is_refused() -> None:
    """Only a one-element list means its element (Entra's manager): two titles or two managers
    are a 400, in POST and PATCH, never silently cut to the first one sent."""
    for op in (
        {"op": "replace", "path": "title", "value": ["CEO", "CTO"]},
        {"op": "add", "path": MANAGER, "value": [{"value": "a"}, {"value": "b"}]},
        {"op": "replace", "value": {"displayName": ["Ada", "Ada L."]}},
    ):
        check(fails(user(), op), 400, "invalidValue")
    for extra in (
        {"displayName": ["Ada", "Ada L."]},
        {ENT: {"manager": [{"value": "a"}, {"value": "b"}]}},
    ):
        with pytest.raises(ScimError) as refused:
            user(**extra)
        assert (refused.value.status, refused.value.scim_type) == (400, "invalidValue")


def test_manager_change_drops_the_previous_reference() -> None:
    """A new manager id replaces the manager object, so the old $ref is not kept."""
    doc = user(**{ENT: {"manager": {"value": "old", "$ref": "../Users/old"}}})
    result = patch(doc, {"op": "replace", "path": MANAGER, "value": "new"})
    assert result.doc[ENT] == {"manager": {"value": "new"}}


def test_manager_same_id_merges() -> None:
    """Re-sending the same manager id keeps its $ref and reports no change."""
    doc = user(**{ENT: {"manager": {"value": MANAGER_ID, "$ref": "../Users/m"}}})
    result = patch(doc, {"op": "add", "path": MANAGER, "value": MANAGER_ID})
    assert not result.changed


def test_manager_remove_by_urn_path() -> None:
    """The SCIM Validator's remove of the full-URN manager path."""
    doc = user(**{ENT: {"manager": MANAGER_ID, "department": "D"}})
    assert patch(doc, {"op": "remove", "path": MANAGER}).doc[ENT] == {"department": "D"}
    assert ENT not in patch(user(**{ENT: {"manager": "m"}}), {"op": "remove", "path": MANAGER}).doc


def test_manager_remove_by_value_filter() -> None:
    """remove manager[value eq "id"] removes only a matching manager (scim-patch #453)."""
    doc = user(**{ENT: {"manager": MANAGER_ID}})
    path = f'manager[value eq "{MANAGER_ID}"]'
    assert ENT not in patch(doc, {"op": "remove", "path": path}).doc
    other = patch(doc, {"op": "remove", "path": 'manager[value eq "someone-else"]'})
    assert not other.changed


def test_manager_filter_on_other_manager_is_no_target_for_replace() -> None:
    """A value filter on manager that does not match is noTarget for replace."""
    doc = user(**{ENT: {"manager": MANAGER_ID}})
    e = fails(doc, {"op": "replace", "path": 'manager[value eq "x"].value', "value": "y"})
    check(e, 400, "noTarget")


def test_manager_display_name_is_read_only() -> None:
    """manager.displayName is read-only: mutability."""
    e = fails(user(), {"op": "replace", "path": f"{MANAGER}.displayName", "value": "Boss"})
    check(e, 400, "mutability", "displayName")


def test_manager_sub_attribute_value() -> None:
    """manager.value sets the manager id."""
    result = patch(user(), {"op": "replace", "path": f"{MANAGER}.value", "value": MANAGER_ID})
    assert result.doc[ENT] == {"manager": {"value": MANAGER_ID}}


# ---------------------------------------------------------------------------------------------
# Custom properties and unknown paths


@pytest.mark.parametrize("op", ["Add", "replace"])
def test_custom_property_full_urn_path(op: str) -> None:
    """The Bizagi UserProperties attribute by full-URN path (replay, legacy dialect)."""
    result = patch(user(), {"op": op, "path": ID_NUMBER, "value": "1234567890"})
    assert result.doc[PROPS] == {"IdentificationNumber": "1234567890"}


def test_custom_property_name_is_case_insensitive() -> None:
    """The custom property name in a path resolves whatever its case."""
    result = patch(user(), {"op": "add", "path": f"{PROPS}:identificationnumber", "value": "1"})
    assert result.doc[PROPS] == {"IdentificationNumber": "1"}


def test_unknown_custom_property_path() -> None:
    """An undefined custom property path is invalidPath naming it."""
    e = fails(user(), {"op": "add", "path": f"{PROPS}:ShoeSize", "value": "42"})
    check(e, 400, "invalidPath", "ShoeSize")


@pytest.mark.parametrize(
    "path",
    ["favouriteColour", "name.nickname", "urn:example:unknown:2.0:User:attr", f"{ENT}:badge"],
)
def test_unknown_attribute_path_is_invalid_path(path: str) -> None:
    """A path naming no attribute is invalidPath naming the path."""
    tail = path.rpartition(":")[2].rpartition(".")[2]
    e = fails(user(), {"op": "replace", "path": path, "value": "x"})
    check(e, 400, "invalidPath", tail)


# ---------------------------------------------------------------------------------------------
# Mutability


@pytest.mark.parametrize(
    ("op", "path", "value"),
    [
        ("replace", "id", "x"),
        ("remove", "id", None),
        ("replace", "meta", {"resourceType": "User"}),
        ("replace", "meta.created", "2020-01-01T00:00:00Z"),
        ("add", "groups", [{"value": "g"}]),
        ("remove", 'groups[value eq "g"]', None),
    ],
)
def test_read_only_targets_are_mutability_errors(op: str, path: str, value: Any) -> None:
    """Operations on id, meta and groups are mutability errors naming the attribute."""
    e = fails(user(), {"op": op, "path": path, "value": value})
    check(e, 400, "mutability", path.split("[")[0].split(".")[0])


def test_pathless_read_only_attribute_is_a_mutability_error() -> None:
    """groups named in a path-less value is a mutability error."""
    e = fails(user(), {"op": "add", "value": {"groups": [{"value": "g"}]}})
    check(e, 400, "mutability", "groups")


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": 'members[value eq "a"].display', "value": "x"},
        {"op": "remove", "path": 'members[value eq "a"].display'},
    ],
)
def test_member_display_is_read_only(op: dict[str, Any]) -> None:
    """members.display is read-only: mutability."""
    check(fails(group(), op, rt=GROUPS), 400, "mutability", "display")


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": 'members[value eq "a"].value', "value": "b"},
        {"op": "replace", "path": 'members[value eq "a"]', "value": {"value": "b"}},
        {"op": "remove", "path": 'members[value eq "a"].type'},
    ],
)
def test_member_values_are_immutable(op: dict[str, Any]) -> None:
    """An existing member's value/type cannot change: mutability."""
    check(fails(group(), op, rt=GROUPS), 400, "mutability", "immutable")


# ---------------------------------------------------------------------------------------------
# Group members (set-based member ops)


def test_group_rename_doc_example() -> None:
    """Microsoft's Update Group [non-member attributes] example renames the group."""
    new = "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    result = patch(group(), {"op": "Replace", "path": "displayName", "value": new}, rt=GROUPS)
    assert result.doc["displayName"] == new
    assert result.member_ops == []


def test_member_add_with_null_ref_doc_example() -> None:
    """Microsoft's Add Members example ($ref null) is one add member op; doc unchanged."""
    doc = group()
    result = patch(
        doc,
        {
            "op": "Add",
            "path": "members",
            "value": [{"$ref": None, "value": "f648f8d5ea4e4cd38e9c"}],
        },
        rt=GROUPS,
    )
    assert result.member_ops == [MemberOp("add", [{"value": "f648f8d5ea4e4cd38e9c"}])]
    assert result.doc == doc
    assert result.changed


def test_member_add_several_with_types() -> None:
    """Several members in one add; type is canonicalised, duplicates collapse."""
    value = [
        {"value": "u1", "type": "user"},
        {"value": "g1", "type": "Group", "display": "ignored"},
        {"value": "u1", "type": "User"},
        {"value": "u2", "$ref": "https://h/scim/v2/Users/u2"},
    ]
    result = patch(group(), {"op": "add", "path": "members", "value": value}, rt=GROUPS)
    assert result.member_ops == [
        MemberOp(
            "add",
            [{"value": "u1", "type": "User"}, {"value": "g1", "type": "Group"}, {"value": "u2"}],
        )
    ]


def test_member_remove_with_value_doc_example() -> None:
    """Microsoft's Remove Members example removes only the listed member (facts §1.5)."""
    result = patch(
        group(),
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": "f648f8d5ea4e4cd38e9c"}],
        },
        rt=GROUPS,
    )
    assert result.member_ops == [MemberOp("remove", [{"value": "f648f8d5ea4e4cd38e9c"}])]


def test_member_remove_legacy_without_ref() -> None:
    """The legacy dialect's remove with [{"value": id}] removes that member (facts §2.4)."""
    result = patch(
        group(), {"op": "Remove", "path": "members", "value": [{"value": "u1091"}]}, rt=GROUPS
    )
    assert result.member_ops == [MemberOp("remove", [{"value": "u1091"}])]


def test_member_remove_by_value_filter_flag_example() -> None:
    """The flag dialect's members[value eq "id"] remove needs no member list (facts §2.4)."""
    member = "7f4bc1a3-285e-48ae-8202-5accb43efb0e"

    def no_load() -> list[dict[str, Any]]:
        raise AssertionError("members must not be loaded for an id filter")

    result = apply_patch(
        GROUPS,
        group(),
        body({"op": "remove", "path": f'members[value eq "{member}"]'}),
        load_members=no_load,
    )
    assert result.member_ops == [MemberOp("remove", [{"value": member}])]


def test_member_remove_by_or_of_ids() -> None:
    """members[value eq "a" or value eq "b"] removes both without loading members."""
    result = patch(
        group(), {"op": "remove", "path": 'members[value eq "a" or value eq "b"]'}, rt=GROUPS
    )
    assert result.member_ops == [MemberOp("remove", [{"value": "a"}, {"value": "b"}])]


def test_member_remove_without_value_removes_all() -> None:
    """remove members without a value removes every member."""
    result = patch(group(), {"op": "remove", "path": "members"}, rt=GROUPS)
    assert result.member_ops == [MemberOp("remove_all")]


def test_member_replace() -> None:
    """replace members is one replace op; [] replaces with no members."""
    result = patch(
        group(), {"op": "replace", "path": "members", "value": [{"value": "a"}]}, rt=GROUPS
    )
    assert result.member_ops == [MemberOp("replace", [{"value": "a"}])]
    empty = patch(group(), {"op": "replace", "path": "members", "value": []}, rt=GROUPS)
    assert empty.member_ops == [MemberOp("replace", [])]


def test_member_null_value_removes_all() -> None:
    """A null members value on add/replace removes every member."""
    result = patch(group(), {"op": "replace", "path": "members", "value": None}, rt=GROUPS)
    assert result.member_ops == [MemberOp("remove_all")]


def test_member_filter_on_type_loads_members_once() -> None:
    """members[type eq "Group"] loads the members once and removes the matching ids."""
    calls: list[int] = []

    def load() -> list[dict[str, Any]]:
        calls.append(1)
        return [
            {"value": "u1", "type": "User"},
            {"value": "g1", "type": "Group"},
            {"value": "g2", "type": "Group"},
        ]

    result = apply_patch(
        GROUPS,
        group(),
        body(
            {"op": "add", "path": "members", "value": [{"value": "g3", "type": "Group"}]},
            {"op": "remove", "path": "members", "value": [{"value": "g2"}]},
            {"op": "remove", "path": 'members[type eq "Group"]'},
            {"op": "remove", "path": 'members[type eq "Group"]'},
        ),
        load_members=load,
    )
    assert calls == [1]
    # The net effect: g3, added then removed, is removed (it was no member: nothing to do).
    assert result.member_ops == [
        MemberOp("remove", [{"value": "g2"}, {"value": "g1"}, {"value": "g3"}]),
    ]


def test_a_patch_going_through_too_many_values_is_refused() -> None:
    """Each filtered operation goes through all of a group's members, on the event loop:
    1,000 of them on a group of 50,000 members stopped every other request for a minute."""
    from scimd.scim.patch import MAX_VISITS

    members = [{"value": f"u{i}", "type": "User"} for i in range(20_000)]
    per_op = 'members[type eq "Group"]'
    ops = [{"op": "remove", "path": per_op}] * (MAX_VISITS // len(members) + 1)
    with pytest.raises(ScimError) as refused:
        apply_patch(GROUPS, group(), body(*ops), load_members=lambda: members)
    check(refused.value, 400, "tooMany", "fewer operations per request")
    fine = apply_patch(GROUPS, group(), body(*ops[:10]), load_members=lambda: members)
    assert fine.member_ops == []  # no Group members: nothing to remove
    emails = [{"value": f"e{i}@x.com", "type": "other"} for i in range(5_000)]
    marks = [
        {"op": "add", "path": "emails", "value": [{"value": f"n{i}@x.com", "primary": True}]}
        for i in range(MAX_VISITS // len(emails) + 1)
    ]
    e = fails(user(emails=emails), *marks)
    check(e, 400, "tooMany", "marking a value primary")


def test_many_adds_to_a_long_list_are_each_one_lookup() -> None:
    """Each add rebuilt the identities of all the elements: 1,000 adds to a user of 5,000
    emails took 12 s. They are built once, and still make each value one copy."""
    emails = [{"value": f"e{i}@x.com", "type": "other"} for i in range(5_000)]
    adds = [
        {"op": "add", "path": "emails", "value": [{"value": f"N{i % 500}@x.com", "type": "home"}]}
        for i in range(1_000)
    ]
    result = patch(user(emails=emails), *adds)
    added = [e["value"] for e in result.doc["emails"][5_000:]]
    assert added == [f"N{i}@x.com" for i in range(500)]
    again = patch(
        result.doc,
        {"op": "add", "path": "emails", "value": [{"value": "e7@X.COM", "type": "other"}]},
    )
    assert len(again.doc["emails"]) == len(result.doc["emails"])  # one copy, case aside


def test_member_filter_without_loader_is_a_server_error() -> None:
    """A member filter that needs the member list fails loudly when no loader is given."""
    e = fails(group(), {"op": "remove", "path": 'members[type eq "User"]'}, rt=GROUPS)
    assert e.status == 500


def test_pathless_members() -> None:
    """A path-less value with members adds them with the other attributes."""
    result = patch(
        group(),
        {"op": "add", "value": {"displayName": "New", "members": [{"value": "a"}]}},
        rt=GROUPS,
    )
    assert result.doc["displayName"] == "New"
    assert result.member_ops == [MemberOp("add", [{"value": "a"}])]


@pytest.mark.parametrize(
    "value",
    [
        ["u1"],
        [{"$ref": None}],
        [{"value": 12}],
        [{"value": ""}],
        [{"value": "u1", "type": "Robot"}],
        [{"value": "u1", "colour": "red"}],
        [{"value": "u1"}, {"value": "u\x002"}],
        [{"Value": "u\x002"}],
        "u1",
    ],
)
def test_invalid_member_values(value: Any) -> None:
    """Member values must be objects with a non-empty string value: invalidValue."""
    e = fails(group(), {"op": "add", "path": "members", "value": value}, rt=GROUPS)
    check(e, 400, "invalidValue", "members")


@pytest.mark.parametrize("value", ["u1", [1], [{"display": "x"}], {"type": "User"}])
def test_invalid_member_remove_values(value: Any) -> None:
    """A remove value that does not list member ids is invalidValue."""
    e = fails(group(), {"op": "remove", "path": "members", "value": value}, rt=GROUPS)
    check(e, 400, "invalidValue", "members")


@pytest.mark.parametrize(
    "value", [[{"value": "u1", "foo": 1}], [{"value": "u1", "type": "Banana"}], [{"value": ""}]]
)
def test_a_member_remove_checks_its_members_as_an_add_does(value: Any) -> None:
    """Entra's remove-with-value read only each object's "value": an unknown key, an unknown
    type or an empty id was removed or ignored without a word, where an add names it."""
    added = fails(group(), {"op": "add", "path": "members", "value": value}, rt=GROUPS)
    removed = fails(group(), {"op": "remove", "path": "members", "value": value}, rt=GROUPS)
    check(removed, 400, "invalidValue", "members")
    assert removed.detail == added.detail.replace("(add 'members')", "(remove 'members')")


def test_a_member_remove_reads_names_in_any_case() -> None:
    """`[{"Value": id}]` was refused in a remove though an add takes it (names are
    case-insensitive, RFC 7643 §2.1)."""
    result = patch(
        group(), {"op": "Remove", "path": "members", "value": [{"Value": "u1"}]}, rt=GROUPS
    )
    assert [(m.kind, m.members) for m in result.member_ops] == [("remove", [{"value": "u1"}])]


def test_member_remove_with_empty_value_changes_nothing() -> None:
    """remove members with value [] removes nobody."""
    result = patch(group(), {"op": "remove", "path": "members", "value": []}, rt=GROUPS)
    assert result.member_ops == []
    assert not result.changed


# ---------------------------------------------------------------------------------------------
# Atomicity and the result object


def test_failure_in_a_later_operation_leaves_nothing() -> None:
    """One failing operation fails the whole PATCH; the input is untouched."""
    doc = user()
    e = fails(
        doc,
        {"op": "replace", "path": "displayName", "value": "changed"},
        {"op": "remove", "path": "emails"},
        {"op": "replace", "path": "bogus", "value": 1},
    )
    check(e, 400, "invalidPath", "operation 3", "bogus")


def test_result_is_a_new_object() -> None:
    """The result document shares no mutable part with the input."""
    doc = user(**{ENT: {"department": "D"}})
    result = patch(doc, {"op": "replace", "path": "title", "value": "T"})
    result.doc["emails"][0]["value"] = "mutated"
    result.doc[ENT]["department"] = "mutated"
    assert doc == user(**{ENT: {"department": "D"}})


def test_result_is_canonical() -> None:
    """The patched document is what normalise returns for it (no re-validation needed)."""
    result = patch(
        user(),
        {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+57"},
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "replace", "value": {"NAME.GIVENNAME": "k", f"{PROPS}:age": "7"}},
    )
    assert R.normalise(USERS, result.doc) == result.doc


# ---------------------------------------------------------------------------------------------
# Every PATCH body of the compatibility article (facts §2.4), both dialects


FLAG_REPLACE_MULTIPLE = body(
    {
        "op": "replace",
        "path": 'emails[type eq "work"].value',
        "value": "TestMhvaes@test.microsoft.com",
    },
    {
        "op": "replace",
        "value": {
            "displayName": "Bjfe",
            "name.givenName": "Kkom",
            "name.familyName": "Unua",
            f"{ENT}:employeeNumber": "Aklq",
        },
    },
)
LEGACY_REPLACE_MULTIPLE = body(
    {"op": "Replace", "path": "displayName", "value": "Bjfe"},
    {
        "op": "Replace",
        "path": 'emails[type eq "work"].value',
        "value": "TestMhvaes@test.microsoft.com",
    },
    {"op": "Replace", "path": "name.givenName", "value": "Kkom"},
    {"op": "Replace", "path": "name.familyName", "value": "Unua"},
    {"op": "Replace", "path": "externalId", "value": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"},
    {"op": "Replace", "path": f"{ENT}:employeeNumber", "value": "Aklq"},
)


def test_legacy_and_flag_replace_multiple_agree() -> None:
    """The two dialects of "replace multiple attributes" give the same user (facts §2.4)."""
    legacy = apply_patch(USERS, user(), LEGACY_REPLACE_MULTIPLE)
    flag = apply_patch(USERS, user(), FLAG_REPLACE_MULTIPLE)
    assert legacy.doc == flag.doc
    assert flag.doc[ENT] == {"employeeNumber": "Aklq"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body({"op": "Replace", "path": "active", "value": "False"}), {"active": False}),
        (body({"op": "replace", "path": "active", "value": False}), {"active": False}),
        (body({"op": "Add", "path": "nickName", "value": "Babs"}), {"nickName": "Babs"}),
        (body({"op": "add", "path": "nickName", "value": "Babs"}), {"nickName": "Babs"}),
        (
            body({"op": "add", "path": f"{ENT}:department", "value": "Tech Infrastructure"}),
            {ENT: {"department": "Tech Infrastructure"}},
        ),
        (
            body(
                {"op": "replace", "path": 'emails[type eq "work"].primary', "value": True},
                {"op": "replace", "value": {"active": False, "userName": "someone"}},
            ),
            {"active": False, "userName": "someone"},
        ),
    ],
    ids=[
        "legacy-disable",
        "flag-disable",
        "legacy-add",
        "flag-add",
        "preview-ext",
        "preview-mixed",
    ],
)
def test_compatibility_article_user_bodies(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each user body of the compatibility article (and its 2020 preview) applies as documented."""
    doc = apply_patch(USERS, user(), raw).doc
    for key, value in expected.items():
        assert doc[key] == value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            body({"op": "Remove", "path": "members", "value": [{"value": "u1091"}]}),
            [MemberOp("remove", [{"value": "u1091"}])],
        ),
        (
            body(
                {"op": "remove", "path": 'members[value eq "7f4bc1a3-285e-48ae-8202-5accb43efb0e"]'}
            ),
            [MemberOp("remove", [{"value": "7f4bc1a3-285e-48ae-8202-5accb43efb0e"}])],
        ),
        (
            body(
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": "10263a6910a84ef9a581dd9b8dcc0eae"}],
                }
            ),
            [MemberOp("add", [{"value": "10263a6910a84ef9a581dd9b8dcc0eae"}])],
        ),
    ],
    ids=["legacy-remove", "flag-remove", "preview-add"],
)
def test_compatibility_article_group_bodies(raw: dict[str, Any], expected: list[MemberOp]) -> None:
    """Each group-member body of the compatibility article becomes the documented member op."""
    assert apply_patch(GROUPS, group(), raw).member_ops == expected


# ---------------------------------------------------------------------------------------------
# The Entra replay sequence (replay.json), run offline against apply_patch


class OfflineServer:
    """Just enough of a SCIM server to replay Entra's steps: normalise, patch, render."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[S.ResourceType, dict[str, Any]]] = {}
        self.members: dict[str, dict[str, dict[str, str]]] = {}
        self.patched: list[str] = []
        self.verified: list[str] = []

    def create(self, rt: S.ResourceType, payload: dict[str, Any]) -> str:
        """Store a created resource; return its id."""
        new_id = f"{rt.name.lower()}-{len(self.docs) + 1}"
        self.docs[new_id] = (rt, R.normalise(rt, payload))
        if rt is GROUPS:
            self.members[new_id] = {}
            for m in payload.get("members") or []:
                self.members[new_id][m["value"]] = {"value": m["value"], "type": "User"}
        return new_id

    def patch(self, resource_id: str, payload: dict[str, Any]) -> None:
        """Apply a PATCH and its member ops like the storage layer would."""
        rt, doc = self.docs[resource_id]
        members = self.members.get(resource_id, {})
        result = apply_patch(rt, doc, payload, load_members=lambda: list(members.values()))
        self.docs[resource_id] = (rt, result.doc)
        for mop in result.member_ops:
            if mop.kind in ("remove_all", "replace"):
                members.clear()
            for m in mop.members:
                if mop.kind == "remove":
                    members.pop(m["value"], None)
                else:
                    members.setdefault(m["value"], {"type": "User", **m})

    def render(self, resource_id: str, exclude_members: bool) -> dict[str, Any]:
        """The resource as GET returns it."""
        rt, doc = self.docs[resource_id]
        out = {"schemas": R.schemas_of(rt, doc), "id": resource_id, **copy.deepcopy(doc)}
        if rt is GROUPS and not exclude_members and self.members[resource_id]:
            out["members"] = list(self.members[resource_id].values())
        return out


def run_offline_replay() -> OfflineServer:
    """Run the replay's POST/PATCH steps and check the GET-by-id expectations after them."""
    steps = load_steps(replay_path())
    variables = generate_variables(variable_specs(steps), {"token": "token"})
    server = OfflineServer()
    for step in steps:
        method, path = step["method"], substitute(step["path"], variables)
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        if segments[0] not in ("Users", "Groups"):
            continue
        rt = USERS if segments[0] == "Users" else GROUPS
        if method == "POST" and not {200, 201}.isdisjoint(step["expect_status"]):
            new_id = server.create(rt, substitute(step["body"], variables))
            for name in step.get("capture") or {}:
                variables[name] = new_id
        elif method == "PATCH":
            server.patch(segments[1], substitute(step["body"], variables))
            server.patched.append(step["name"])
        elif method == "DELETE" and len(segments) == 2:
            server.docs.pop(segments[1], None)
        elif method == "GET" and len(segments) == 2 and segments[1] in server.docs:
            doc = server.render(segments[1], "excludedAttributes=members" in parts.query)
            problems = [
                problem
                for selector, expected in (step.get("expect") or {}).items()
                if (problem := check_expectation(doc, selector, expected, variables))
            ]
            assert not problems, (step["name"], problems, doc)
            server.verified.append(step["name"])
    return server


def test_entra_replay_patch_steps_offline() -> None:
    """Every PATCH of replay.json applies, and the GET after it reads back what Entra expects."""
    server = run_offline_replay()
    steps = load_steps(replay_path())
    patch_steps = [s["name"] for s in steps if s["method"] == "PATCH"]
    assert server.patched == patch_steps
    assert len(server.verified) >= 15


def _replay_patch_bodies() -> list[Any]:
    steps = load_steps(replay_path())
    return [pytest.param(s, id=s["name"]) for s in steps if s["method"] == "PATCH"]


@pytest.mark.parametrize("step", _replay_patch_bodies())
def test_each_replay_patch_body_applies_alone(step: dict[str, Any]) -> None:
    """Each replay PATCH body applies on its own to a fresh user or group, and again unchanged."""
    variables = generate_variables(variable_specs(load_steps(replay_path())), {"token": "t"})
    variables.update(userId="u1", user2Id="u2", groupId="g1")
    payload = substitute(step["body"], variables)
    is_group = step["path"].startswith("/Groups")
    rt, doc = (GROUPS, group()) if is_group else (USERS, user())
    members: list[dict[str, Any]] = [
        {"value": "u1", "type": "User"},
        {"value": "u2", "type": "User"},
    ]
    load: Callable[[], list[dict[str, Any]]] = lambda: members  # noqa: E731
    first = apply_patch(rt, doc, payload, load_members=load)
    assert first.changed or step["name"].startswith("enable_user")
    second = apply_patch(rt, first.doc, payload, load_members=load)
    assert second.doc == first.doc
    assert second.changed == bool(second.member_ops)


def test_an_unqualified_enterprise_name_is_the_enterprise_attribute_beside_a_property() -> None:
    """A database from before such names were refused may hold a custom property named like
    an enterprise attribute: Entra's unqualified ``manager`` still means the enterprise one,
    and the property is reached by its full URN, as Entra sends properties."""
    rt = S.user_type([S.PropertyDef("manager", "String", "")])
    assert rt.resolve("manager").schema == S.ENTERPRISE_SCHEMA
    result = patch(
        {"userName": "a"},
        {"op": "Add", "path": "manager", "value": "boss-id"},
        {"op": "Add", "path": f"{S.USER_PROPERTIES_SCHEMA}:manager", "value": "text"},
        rt=rt,
    )
    assert result.doc[S.ENTERPRISE_SCHEMA]["manager"] == {"value": "boss-id"}
    assert result.doc[S.USER_PROPERTIES_SCHEMA]["manager"] == "text"


def test_an_element_that_loses_its_value_goes() -> None:
    """Entra clears a work email with ``remove emails[type eq "work"].value`` (carrying the
    old address); the element stayed as ``{"type": "work", "primary": true}``, an email of no
    address. A null through the same path does the same; other sub-attributes leave the
    element, and single-valued complex attributes keep what remains."""
    doc = user(
        emails=[
            {"value": "w@x.com", "type": "work", "primary": True},
            {"value": "h@x.com", "type": "home"},
        ],
        phoneNumbers=[{"value": "+1 555", "type": "mobile"}],
    )
    removed = patch(
        doc,
        {"op": "Remove", "path": 'emails[type eq "work"].value', "value": "w@x.com"},
        {"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": None},
    ).doc
    assert removed["emails"] == [{"value": "h@x.com", "type": "home"}]
    assert "phoneNumbers" not in removed
    typed = patch(doc, {"op": "remove", "path": 'emails[type eq "home"].type'}).doc
    assert {"value": "h@x.com"} in typed["emails"] and len(typed["emails"]) == 2
    named = patch(doc, {"op": "remove", "path": "name.givenName"}).doc
    assert named["name"] == {k: v for k, v in doc["name"].items() if k != "givenName"}


def test_an_element_differing_only_in_primary_is_the_same_value() -> None:
    """``primary`` marks a value, it is not part of it (RFC 7643 §2.4: a (type, value) once
    per attribute). A demoted element (``primary: false``) added again stays one element; an
    element added again with ``primary: true`` becomes the primary one; both made copies."""
    doc = user(emails=[{"value": "a@x.com", "type": "work", "primary": True}])
    home = {"value": "c@x.com", "type": "home", "primary": True}
    step = patch(doc, {"op": "add", "path": "emails", "value": [home]}).doc
    assert step["emails"] == [{"value": "a@x.com", "type": "work", "primary": False}, home]
    again = patch(
        step, {"op": "add", "path": "emails", "value": [{"value": "a@x.com", "type": "work"}]}
    )
    assert not again.changed
    made = patch(
        step,
        {"op": "add", "value": {"emails": [{"value": "A@x.com", "type": "work", "primary": True}]}},
    )
    assert made.doc["emails"] == [
        {"value": "a@x.com", "type": "work", "primary": True},
        {"value": "c@x.com", "type": "home", "primary": False},
    ]
    twice = [
        {"value": "b@x.com", "type": "home", "primary": True},
        {"value": "B@X.com", "type": "home", "primary": True},
    ]
    emails = patch(user(), {"op": "add", "path": "emails", "value": twice}).doc["emails"]
    assert emails[1:] == [twice[0]] and emails[0]["primary"] is False


def test_copies_in_a_body_are_one_element_primary_if_any_copy_was() -> None:
    doc = R.normalise(
        USERS,
        {
            "userName": "u",
            "emails": [
                {"value": "b@x.com", "type": "home", "primary": False},
                {"value": "b@x.com", "type": "home", "primary": True},
                {"value": "b@x.com", "type": "home"},
            ],
        },
    )
    assert doc["emails"] == [{"value": "b@x.com", "type": "home", "primary": True}]


def test_a_member_filter_joining_ids_with_and_removes_nobody() -> None:
    """``members[value eq "a" and value eq "b"]`` matches no member (none has both values,
    RFC 7644 §3.5.2.2): read as an ``or`` (the mutation audit of 2026-11-30 found no test
    telling the two apart) it removed both."""
    doc = R.normalise(GROUPS, {"displayName": "g"})
    result = apply_patch(
        GROUPS,
        doc,
        {
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [{"op": "remove", "path": 'members[value eq "a" and value eq "b"]'}],
        },
        load_members=lambda: [{"value": "a", "type": "User"}, {"value": "b", "type": "User"}],
    )
    assert result.member_ops == [] and not result.changed


def test_the_passwords_of_a_patch_are_found_whatever_the_case_of_operations() -> None:
    """Attribute names are case-insensitive, "operations" included: a password sent under
    a lower-cased key was left to the write, which hashes it with a new salt, so the same
    password sent again still made a new version of the user."""
    from scimd.scim import passwords

    raw = {
        "schemas": [PATCH_OP_SCHEMA],
        "operations": [{"op": "replace", "path": "password", "value": "pw1"}],
    }
    assert passwords.plaintexts(raw, patch=True) == ["pw1"]
    digest = passwords.Hashed("scrypt$00$00")
    new = passwords.substituted(raw, {"pw1": digest}, patch=True)
    assert new["operations"][0]["value"] == digest


# ---------------------------------------------------------------------------------------------
# The second mutation audit of patch.py: value paths, member ops, remove semantics and error
# types that no test told apart from a small bug.


def test_a_blank_path_names_the_resource_like_an_absent_one() -> None:
    """A path of only spaces is no path: the value's keys are the attributes to set, as
    without a path (a client building the path from an empty field sends one), not a 400."""
    result = patch(user(), {"op": "replace", "path": "  ", "value": {"title": "Boss"}})
    assert result.doc["title"] == "Boss" and result.changed


def test_replace_without_a_value_is_refused_and_unassigns_nothing() -> None:
    """RFC 7644 §3.5.2.3: replace needs a value. Taken as given, a replace whose value was
    lost on the way would write something no client sent; it is a 400 naming the omission."""
    doc = user(title="Boss")
    check(fails(doc, {"op": "replace", "path": "title"}), 400, "invalidValue", "no 'value'")
    check(fails(doc, {"op": "Replace", "path": "title"}), 400, "invalidValue", "no 'value'")


def test_a_value_filter_contradicting_itself_creates_nothing() -> None:
    """``emails[type eq "work" and type eq "home"]`` describes no element: adding through it
    is noTarget, not a new home email the client never described."""
    e = fails(
        user(),
        {"op": "add", "path": 'emails[type eq "work" and type eq "home"].value', "value": "h@x"},
    )
    check(e, 400, "noTarget")


def test_adding_no_members_is_no_change() -> None:
    """``add members []`` changes nothing: counted as a change it gave the group a new
    version, and a client holding its ETag a needless 412."""
    result = patch(group(), {"op": "add", "path": "members", "value": []}, rt=GROUPS)
    assert result.member_ops == [] and not result.changed


def test_an_element_created_primary_through_a_value_path_demotes_the_old_primary() -> None:
    """RFC 7644 §3.5.2: one value at most is primary. A home email created primary through
    ``emails[type eq "home" and value eq ...].primary`` makes the work email no longer so."""
    path = 'emails[type eq "home" and value eq "h@x.com"].primary'
    result = patch(user(), {"op": "add", "path": path, "value": True})
    primaries = [e for e in result.doc["emails"] if e.get("primary") is True]
    assert primaries == [{"type": "home", "value": "h@x.com", "primary": True}]
    assert work_email(result.doc)["primary"] is False


# --------------------------------------------------------------------------------------------
# A primary mark on an element that never gets a value


HOME_PRIMARY = {"op": "add", "path": 'emails[type eq "home"].primary', "value": True}


def test_a_primary_mark_on_an_email_never_given_an_address_takes_nothing_away() -> None:
    """``add emails[type eq "home"].primary true`` on a user with no home email created
    ``{"type": "home", "primary": true}``, which took primary from the work email, and then
    was dropped as no email (it has no address): the PATCH succeeded, added nothing, and left
    the user without a primary email. The work email stays primary and nothing changes."""
    doc = user()
    assert work_email(doc)["primary"] is True
    for op in (
        HOME_PRIMARY,
        {"op": "add", "path": 'emails[type eq "home"]', "value": {"primary": True}},
    ):
        result = patch(doc, op)
        assert result.doc["emails"] == doc["emails"] and not result.changed, op


def test_a_primary_mark_on_an_email_given_its_address_later_in_the_patch_holds() -> None:
    """The same mark followed by the home email's address makes a home email, and it is the
    primary one: the work email's demotion stands."""
    address = {"op": "add", "path": 'emails[type eq "home"].value', "value": "h@x.com"}
    result = patch(user(), HOME_PRIMARY, address)
    primaries = [e for e in result.doc["emails"] if e.get("primary") is True]
    assert primaries == [{"type": "home", "primary": True, "value": "h@x.com"}]
    assert work_email(result.doc)["primary"] is False


def test_a_primary_the_client_set_after_an_unfinished_mark_is_kept() -> None:
    """What an operation wrote after the mark is the client's: the work email set not
    primary stays so, and a work email changed in another way gets primary back."""
    work = 'emails[type eq "work"]'
    demoted = {"op": "replace", "path": f"{work}.primary", "value": False}
    result = patch(user(), HOME_PRIMARY, demoted)
    assert work_email(result.doc)["primary"] is False and len(result.doc["emails"]) == 1
    shown = {"op": "replace", "path": f"{work}.display", "value": "Work"}
    result = patch(user(), HOME_PRIMARY, shown)
    assert work_email(result.doc)["primary"] is True and work_email(result.doc)["display"] == "Work"
