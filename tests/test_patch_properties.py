"""Properties of PATCH that must hold for every document and every request (hypothesis)."""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scimd.scim import resource as R
from scimd.scim import schema as S
from scimd.scim.errors import ScimError
from scimd.scim.patch import PATCH_OP_SCHEMA, MemberOp, apply_patch

USERS = S.user_type(
    [S.PropertyDef("IdentificationNumber", "String"), S.PropertyDef("Age", "Integer")]
)
GROUPS = S.GROUP_TYPE
ENT = S.ENTERPRISE_SCHEMA
PROPS = S.USER_PROPERTIES_SCHEMA
TYPES = ("work", "home", "other")

# Short words without "-" so that values made with a "new-" prefix never collide with them.
words = st.text(alphabet="abcAB 1@.", min_size=1, max_size=5)
op_names = st.sampled_from(["add", "Add", "ADD", "replace", "Replace", "remove", "Remove"])


def fix_primary(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep at most one value marked primary (RFC 7643 §2.4)."""
    seen = False
    out = []
    for v in values:
        if v.get("primary") is True:
            if seen:
                v = {**v, "primary": False}
            seen = True
        out.append(v)
    return out


def multi(**subs: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of value/type/primary elements with the given extra sub-attributes."""
    element = st.fixed_dictionaries(
        {"value": words},
        optional={"type": st.sampled_from(TYPES), "primary": st.booleans(), **subs},
    )
    return st.lists(element, max_size=4).map(fix_primary)


@st.composite
def users(draw: st.DrawFn) -> dict[str, Any]:
    """Stored user documents, built through normalise like a POST would."""
    payload: dict[str, Any] = {"userName": draw(words.filter(str.strip))}  # not blank
    optional: dict[str, st.SearchStrategy[Any]] = {
        "displayName": words,
        "title": words,
        "active": st.booleans(),
        "name": st.fixed_dictionaries({}, optional={"givenName": words, "familyName": words}),
        "emails": multi(display=words),
        "phoneNumbers": multi(),
        "roles": multi(),
        ENT: st.fixed_dictionaries(
            {}, optional={"department": words, "manager": words.map(lambda w: {"value": w})}
        ),
        PROPS: st.fixed_dictionaries(
            {}, optional={"IdentificationNumber": words, "Age": st.integers(-5, 99)}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            payload[key] = draw(strategy)
    return R.normalise(USERS, payload)


SIMPLE_PATHS = [
    "displayName",
    "title",
    "nickName",
    "userName",
    "active",
    "name.givenName",
    "NAME.familyName",
    f"{ENT}:department",
    f"{ENT}:manager",
    f"{PROPS}:IdentificationNumber",
    f"{PROPS}:Age",
]
scalar_values = st.one_of(
    words,
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["True", "False", "42", ""]),
)
value_path = st.builds(
    lambda attr, t, sub: f'{attr}[type eq "{t}"]{sub}',
    st.sampled_from(["emails", "phoneNumbers", "roles"]),
    st.sampled_from(TYPES),
    st.sampled_from(["", ".value", ".display", ".primary"]),
)


def op(name: str, path: str | None = None, **value: Any) -> dict[str, Any]:
    """One operation object."""
    out: dict[str, Any] = {"op": name}
    if path is not None:
        out["path"] = path
    out.update(value)
    return out


any_op = st.one_of(
    st.builds(
        lambda n, p, v: op(n, p, value=v), op_names, st.sampled_from(SIMPLE_PATHS), scalar_values
    ),
    st.builds(
        lambda n, p, v: op(n, p, value=v), op_names, value_path, st.one_of(words, st.booleans())
    ),
    st.builds(lambda n, v: op(n, "emails", value=v), op_names, multi()),
    st.builds(lambda p: op("remove", p), st.sampled_from([*SIMPLE_PATHS, "emails", "roles"])),
    st.builds(lambda p: op("remove", p), value_path),
    st.builds(
        lambda n, d: op(n, value=d),
        st.sampled_from(["add", "replace"]),
        st.dictionaries(st.sampled_from(SIMPLE_PATHS), scalar_values, max_size=4),
    ),
    # Operations that always fail, for the atomicity property.
    st.builds(lambda v: op("replace", "noSuchAttribute", value=v), words),
    st.builds(lambda: op("remove")),
)


def patch_body(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A PatchOp request body."""
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": ops}


def mutable_ids(value: Any) -> set[int]:
    """The ids of every dict and list inside a JSON value."""
    if isinstance(value, dict):
        return {id(value)}.union(*(mutable_ids(v) for v in value.values()))
    if isinstance(value, list):
        return {id(value)}.union(*(mutable_ids(v) for v in value))
    return set()


@settings(max_examples=300, deadline=None)
@given(users(), st.lists(any_op, min_size=1, max_size=6))
def test_input_is_never_mutated_and_failures_leave_nothing(
    doc: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    """Success or failure, the input is untouched; success yields a separate canonical document."""
    before = copy.deepcopy(doc)
    request = patch_body(ops)
    request_before = copy.deepcopy(request)
    try:
        result = apply_patch(USERS, doc, request)
    except ScimError as e:
        assert e.status == 400
        assert e.scim_type
    else:
        assert R.normalise(USERS, result.doc) == result.doc
        assert not mutable_ids(result.doc) & mutable_ids(doc)
        assert result.changed == (result.doc != doc)
    assert doc == before
    assert request == request_before


@settings(max_examples=150, deadline=None)
@given(users(), st.lists(any_op, max_size=5))
def test_a_failing_operation_fails_the_whole_patch(
    doc: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    """Any operations followed by a failing one raise, and nothing is returned."""
    before = copy.deepcopy(doc)
    bad = op("replace", "noSuchAttribute", value="x")
    try:
        apply_patch(USERS, doc, patch_body([*ops, bad]))
    except ScimError as e:
        assert e.status == 400
    else:
        raise AssertionError("a PATCH with a failing operation succeeded")
    assert doc == before


replace_op = st.one_of(
    st.builds(lambda p, v: op("Replace", p, value=v), st.sampled_from(SIMPLE_PATHS), scalar_values),
    st.builds(lambda p, v: op("replace", p, value=v), value_path, st.one_of(words, st.booleans())),
    st.builds(lambda v: op("replace", "emails", value=v), multi()),
    st.builds(
        lambda d: op("replace", value=d),
        st.dictionaries(st.sampled_from(SIMPLE_PATHS), scalar_values, max_size=4),
    ),
)


def _attributes(o: dict[str, Any]) -> list[str]:
    """The top-level attributes an operation writes."""
    paths = [o["path"]] if "path" in o else list(o["value"])
    return [re.split(r"[\[.]", path, maxsplit=1)[0].lower() for path in paths]


@settings(max_examples=300, deadline=None)
@given(users(), st.lists(replace_op, min_size=1, max_size=4))
def test_replace_then_same_replace_changes_nothing(
    doc: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    """Re-sending the same replace operations (as Entra does) gives changed False.

    Each attribute is written by one operation, as Entra sends them: when a later operation
    rewrites what an earlier one targeted (a primary set through a value path, then a list
    with two elements of that type), the earlier one means something else the second time,
    and may rightly fail (two primaries)."""
    targets = [t for o in ops for t in _attributes(o)]
    assume(len(targets) == len(set(targets)))
    try:
        first = apply_patch(USERS, doc, patch_body(ops))
    except ScimError:
        return
    second = apply_patch(USERS, first.doc, patch_body(ops))
    assert not second.changed
    assert second.doc == first.doc


new_element = st.fixed_dictionaries(
    {"value": words.map(lambda w: f"new-{w}")},
    optional={"type": st.sampled_from(TYPES), "primary": st.just(False), "display": words},
)


@settings(max_examples=200, deadline=None)
@given(
    users(),
    st.sampled_from(["emails", "phoneNumbers", "roles"]),
    new_element,
    st.sampled_from(["value", "filter"]),
)
def test_add_then_remove_restores_the_document(
    doc: dict[str, Any], attr: str, element: dict[str, Any], how: str
) -> None:
    """Adding a new value to a multi-valued attribute, then removing it, restores the original."""
    if attr != "emails":
        element.pop("display", None)
    if how == "value":
        remove = op("Remove", attr, value=[copy.deepcopy(element)])
    else:
        remove = op("remove", f'{attr}[value eq "{element["value"]}"]')
    add = op("Add", attr, value=[element])
    added = apply_patch(USERS, doc, patch_body([add]))
    assert added.changed
    restored = apply_patch(USERS, added.doc, patch_body([remove]))
    assert restored.doc == doc
    both = apply_patch(USERS, doc, patch_body([add, remove]))
    assert both.doc == doc
    assert not both.changed


# ---------------------------------------------------------------------------------------------
# Group members: the member ops, applied in order to a set, give the expected membership

member_ids = st.sampled_from(["u1", "u2", "u3", "g1", "g2"])


def kind_of(member_id: str) -> str:
    """Ids starting with "g" are groups in these tests."""
    return "Group" if member_id.startswith("g") else "User"


@st.composite
def member_requests(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """One member operation and its meaning as a function on the model {id: type or None}."""
    ids = draw(st.lists(member_ids, min_size=1, max_size=3))
    typed = draw(st.booleans())
    values = [{"value": i, **({"type": kind_of(i)} if typed else {})} for i in ids]
    choice = draw(st.integers(0, 6))
    if choice == 0:
        request = op(
            draw(st.sampled_from(["add", "Add"])),
            "members",
            value=[{"$ref": None, **v} for v in values],
        )

        def effect(m: dict[str, str | None]) -> None:
            for v in values:  # a member is of its resource's type, whatever was sent
                m.setdefault(v["value"], kind_of(v["value"]))

    elif choice == 1:
        request = op("Remove", "members", value=[{"value": i} for i in ids])

        def effect(m: dict[str, str | None]) -> None:
            for i in ids:
                m.pop(i, None)

    elif choice == 2:
        request = op("remove", "members[" + " or ".join(f'value eq "{i}"' for i in ids) + "]")

        def effect(m: dict[str, str | None]) -> None:
            for i in ids:
                m.pop(i, None)

    elif choice == 3:
        request = op("remove", "members")

        def effect(m: dict[str, str | None]) -> None:
            m.clear()

    elif choice == 4:
        request = op("replace", "members", value=values)

        def effect(m: dict[str, str | None]) -> None:
            m.clear()
            for v in values:
                m.setdefault(v["value"], kind_of(v["value"]))

    else:
        kind = draw(st.sampled_from(["User", "Group"]))
        request = op("remove", f'members[type eq "{kind}"]')

        def effect(m: dict[str, str | None]) -> None:
            for i in [i for i, t in m.items() if t == kind]:
                del m[i]

    return request, effect


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(member_ids, st.just(None)).map(lambda d: {i: kind_of(i) for i in d}),
    st.lists(member_requests(), min_size=1, max_size=8),
)
def test_member_ops_applied_to_a_set_give_the_expected_members(
    initial: dict[str, str | None], requests: list[tuple[dict[str, Any], Any]]
) -> None:
    """Member ops from random add/remove sequences, applied in order, equal set semantics."""
    expected = dict(initial)
    for _, effect in requests:
        effect(expected)
    loads: list[int] = []

    def load() -> list[dict[str, Any]]:
        loads.append(1)
        return [{"value": i, "type": t} for i, t in initial.items()]

    doc = {"displayName": "g"}
    result = apply_patch(
        GROUPS,
        doc,
        patch_body([r for r, _ in requests]),
        load_members=load,
        member_types=lambda ids: {i: kind_of(i) for i in ids},
    )
    assert result.doc == doc
    assert len(loads) <= 1
    actual: dict[str, str | None] = dict(initial)
    for mop in result.member_ops:
        assert isinstance(mop, MemberOp)
        if mop.kind in ("remove_all", "replace"):
            actual.clear()
        for m in mop.members:
            if mop.kind == "remove":
                actual.pop(m["value"], None)
            else:
                actual.setdefault(m["value"], m.get("type"))
    # The same members; a type where both say one (storage takes a member's type from the
    # resource it names: an add folded with an earlier remove of the same id may carry none).
    assert actual.keys() == expected.keys()
    assert all(actual[i] == t for i, t in expected.items() if t and actual[i])


# ---------------------------------------------------------------------------------------------
# Path-less values are their keys as paths

PATHLESS_KEYS = [
    "displayName",
    "userName",
    "active",
    "name.givenName",
    "name.familyName",
    "name.formatted",
    "externalId",
    f"{ENT}:employeeNumber",
    f"{ENT}:manager",
    f"{PROPS}:IdentificationNumber",
    f"{PROPS}:Age",
]


@settings(max_examples=300, deadline=None)
@given(
    users(),
    st.sampled_from(["add", "replace"]),
    st.dictionaries(st.sampled_from(PATHLESS_KEYS), scalar_values, min_size=1, max_size=6),
)
def test_pathless_dotted_keys_equal_the_same_ops_with_paths(
    doc: dict[str, Any], name: str, value: dict[str, Any]
) -> None:
    """A path-less value with dotted/URN keys means the same as one op per key with that path."""
    pathless = patch_body([op(name, value=value)])
    with_paths = patch_body([op(name, k, value=v) for k, v in value.items()])
    outcomes: list[tuple[str, Any]] = []
    for request in (pathless, with_paths):
        try:
            outcomes.append(("ok", apply_patch(USERS, doc, request).doc))
        except ScimError as e:
            outcomes.append(("error", (e.status, e.scim_type)))
    assert outcomes[0] == outcomes[1]
