"""Unit tests of the Entra replay engine: variables, substitution, encoding, selectors, runner.

Pure: no server. The runner tests use ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.entra_replay import (
    IN_REPO_REPLAY_PATH,
    REPO_ROOT,
    SIBLING_REPLAY_PATH,
    Filter,
    Index,
    Key,
    ReplayError,
    ReplayRunner,
    SelectorError,
    Step,
    UnknownVariableError,
    build_body,
    build_headers,
    build_path,
    build_url,
    check_expectation,
    check_steps,
    format_report,
    generate_variables,
    json_equal,
    load_steps,
    parse_selector,
    referenced_variables,
    replay_path,
    select,
    substitute,
    variable_specs,
)

GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "u1",
    "userName": "alice@example.com",
    "active": False,
    "nickName": None,
    "title": "",
    "name": {"givenName": "Alice", "familyName": "Liddell"},
    "emails": [
        {"type": "home", "value": "alice@home.example"},
        {"type": "work", "value": "alice@example.com", "primary": True},
        {"type": "work", "value": "second-work@example.com"},
    ],
    "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties": {
        "IdentificationNumber": "1234567890"
    },
}
GROUP: dict[str, Any] = {"id": "g1", "members": [{"value": "u1"}, {"value": "u2"}]}
LIST: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
    "totalResults": 1,
    "Resources": [{"id": "urn:ietf:params:scim:schemas:core:2.0:User", "name": "User"}],
}
SPECS: dict[str, str] = {
    "token": "valid Secret Token (given by the caller)",
    "badToken": "any string that is not a valid token",
    "randomGuid": "fresh lower-case GUID, e.g. cf4d78e8-cc4f-4d5d-b8b9-183561c0104a",
    "userName1": "Test_User_{guid:1}@testuser.com (Bizagi requires userName@domain)",
    "userName1Upper": "upper-case form of {userName1}",
    "externalId3": "jyoung_{guid:1}",
    "groupName": "Test_Group_{guid:2}",
    "groupNameLower": "lower-case form of {groupName}",
}


def counter_guids() -> Callable[[], str]:
    """Return a guid factory yielding predictable, distinct values."""
    count = iter(range(1, 1000))
    return lambda: f"00000000-0000-4000-8000-{next(count):012d}"


# ---- variables -----------------------------------------------------------------------------


def test_same_guid_number_gives_same_value() -> None:
    """{guid:N} resolves to one value per N, shared by every template that uses it."""
    values = generate_variables(SPECS, {"token": "t"})
    guid = values["userName1"].removeprefix("Test_User_").removesuffix("@testuser.com")
    assert GUID_RE.fullmatch(guid)
    assert values["externalId3"] == f"jyoung_{guid}"
    assert values["guid:1"] == guid


def test_different_guid_numbers_differ() -> None:
    """Different N give different GUIDs, and randomGuid is a fresh lower-case uuid4."""
    values = generate_variables(SPECS, {"token": "t"})
    assert values["guid:1"] != values["guid:2"]
    assert GUID_RE.fullmatch(values["randomGuid"])
    assert values["randomGuid"] not in {values["guid:1"], values["guid:2"]}


def test_each_generation_is_fresh() -> None:
    """Two generations share no GUID, so consecutive runs never collide."""
    first = generate_variables(SPECS, {"token": "t"})
    second = generate_variables(SPECS, {"token": "t"})
    for name in ("randomGuid", "userName1", "groupName", "badToken"):
        assert first[name] != second[name]


def test_trailing_parenthesised_comment_is_dropped() -> None:
    """A ' (comment)' after a template is not part of the generated value."""
    values = generate_variables(SPECS, {"token": "t"}, guid_factory=counter_guids())
    assert values["guid:1"].startswith("00000000-0000-4000-8000-")
    assert values["userName1"] == f"Test_User_{values['guid:1']}@testuser.com"


def test_case_forms_transform_the_referenced_variable() -> None:
    """'upper-case form of {x}' and 'lower-case form of {x}' transform x's value."""
    values = generate_variables(SPECS, {"token": "t"})
    assert values["userName1Upper"] == values["userName1"].upper()
    assert values["groupNameLower"] == values["groupName"].lower()
    assert values["userName1Upper"] != values["userName1"]


def test_token_comes_from_caller_and_bad_token_differs() -> None:
    """token is the caller's value; badToken is a random string that is not it."""
    values = generate_variables(SPECS, {"token": "secret"})
    assert values["token"] == "secret"
    assert isinstance(values["badToken"], str)
    assert values["badToken"] != "secret"
    assert len(values["badToken"]) >= 16


def test_underivable_description_is_an_error() -> None:
    """A description matching no rule raises instead of producing a silent guess."""
    with pytest.raises(ReplayError, match="cannot derive"):
        generate_variables({"mystery": "something else entirely"}, {"token": "t"})


def test_cyclic_definitions_are_an_error() -> None:
    """Variables defined in terms of each other raise a cycle error."""
    with pytest.raises(ReplayError, match="cycle"):
        generate_variables({"a": "x{b}", "b": "y{a}"}, {})


# ---- substitution --------------------------------------------------------------------------


def test_exact_placeholder_keeps_value_type() -> None:
    """A string that is exactly '{var}' becomes the variable's value with its own type."""
    variables = {"n": 7, "flag": True, "items": [1, 2]}
    assert substitute("{n}", variables) == 7
    assert substitute("{flag}", variables) is True
    assert substitute("{items}", variables) == [1, 2]


def test_embedded_placeholders_are_interpolated() -> None:
    """Placeholders inside longer strings are replaced by their text."""
    assert substitute('members[value eq "{id}"]', {"id": "u1"}) == 'members[value eq "u1"]'
    assert substitute("{a}-{a}:{b}", {"a": "x", "b": 2}) == "x-x:2"


def test_substitution_recurses_into_objects_arrays_and_keys() -> None:
    """Nested lists, objects and object keys are substituted; other scalars pass through."""
    body = {"Operations": [{"value": [{"$ref": None, "value": "{id}"}]}], "{k}": 1, "b": False}
    assert substitute(body, {"id": "u1", "k": "key"}) == {
        "Operations": [{"value": [{"$ref": None, "value": "u1"}]}],
        "key": 1,
        "b": False,
    }


def test_unknown_placeholder_raises() -> None:
    """A placeholder without a value raises UnknownVariableError naming the variable."""
    with pytest.raises(UnknownVariableError, match=r"\{userId\}"):
        substitute("/Users/{userId}", {})


def test_non_identifier_braces_are_left_alone() -> None:
    """Braces that are not an identifier placeholder (JSON text, empty) stay literal."""
    assert substitute('{"a": 1} {} { x }', {}) == '{"a": 1} {} { x }'


def test_referenced_variables_finds_all_placeholders() -> None:
    """referenced_variables collects placeholders from strings, keys and nested values."""
    found = referenced_variables(["/Users/{userId}", {"{k}": ["{guid:3}", 1, None]}])
    assert found == {"userId", "k", "guid:3"}


# ---- encoding and requests -----------------------------------------------------------------


def test_filter_value_is_percent_encoded() -> None:
    """Spaces become %20 and double quotes %22 in the filter query value."""
    assert build_path('/Users?filter=userName eq "a b"', {}) == (
        "/Users?filter=userName%20eq%20%22a%20b%22"
    )


def test_every_query_value_is_encoded_after_substitution() -> None:
    """Each query item is encoded separately; a substituted '&' or '=' cannot split it."""
    path = '/Groups?excludedAttributes=members&filter=displayName eq "{name}"'
    assert build_path(path, {"name": "R&D=1+2@x"}) == (
        "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22R%26D%3D1%2B2%40x%22"
    )


def test_path_without_query_keeps_slashes() -> None:
    """A plain path is substituted and keeps its slashes."""
    assert build_path("/Users/{id}", {"id": "5d48a0a8"}) == "/Users/5d48a0a8"


def test_url_is_base_plus_path() -> None:
    """build_url joins the SCIM base URL and the path without doubling the slash."""
    assert build_url("http://127.0.0.1:1/scim/v2/", "/Users", {}) == (
        "http://127.0.0.1:1/scim/v2/Users"
    )
    assert build_url("http://127.0.0.1:1/scim/v2", "/Users", {}) == (
        "http://127.0.0.1:1/scim/v2/Users"
    )


def test_default_headers_with_body() -> None:
    """A step with a body gets the bearer token and Content-Type application/scim+json."""
    step: Step = {"body": {"a": 1}}
    assert build_headers(step, {"token": "tok"}) == {
        "Authorization": "Bearer tok",
        "Content-Type": "application/scim+json",
    }


def test_no_content_type_without_body() -> None:
    """A step whose body is null sends no Content-Type and no body."""
    step: Step = {"body": None}
    assert build_headers(step, {"token": "tok"}) == {"Authorization": "Bearer tok"}
    assert build_body(step, {}) is None


def test_step_headers_override_defaults_case_insensitively() -> None:
    """Step headers replace defaults whatever their case, with placeholders substituted."""
    step: Step = {"body": None, "headers": {"authorization": "Bearer {badToken}"}}
    assert build_headers(step, {"token": "tok", "badToken": "bad"}) == {
        "authorization": "Bearer bad"
    }


def test_body_is_substituted_json() -> None:
    """The body is serialised as JSON after substitution."""
    step: Step = {"body": {"userName": "{u}", "active": "{a}"}}
    assert json.loads(build_body(step, {"u": "x@y", "a": True}) or b"") == {
        "userName": "x@y",
        "active": True,
    }


# ---- selectors -----------------------------------------------------------------------------


def test_parse_selector_segments() -> None:
    """Dotted names, indexes, quoted keys and filters parse into segments."""
    assert parse_selector("$.a.b") == (Key("a"), Key("b"))
    assert parse_selector("$.a[0].b") == (Key("a"), Index(0), Key("b"))
    assert parse_selector('$["urn:x:2.0:P"].Prop') == (Key("urn:x:2.0:P"), Key("Prop"))
    assert parse_selector("$.m[?(@.value=='{id}')].value") == (
        Key("m"),
        Filter(("value",), "{id}"),
        Key("value"),
    )
    assert parse_selector("$") == ()


@pytest.mark.parametrize("selector", ["a.b", "$.", "$.a[", "$.a[x]", "$.a[?(@.t='w')]"])
def test_malformed_selector_raises(selector: str) -> None:
    """Selectors outside the supported subset raise SelectorError."""
    with pytest.raises(SelectorError):
        parse_selector(selector)


def test_select_dotted_and_indexed() -> None:
    """$.a.b and $.a[0].b walk objects and arrays."""
    assert select(USER, "$.name.givenName").value == "Alice"
    assert select(USER, "$.schemas[0]").value == "urn:ietf:params:scim:schemas:core:2.0:User"
    assert select(USER, "$.emails[1].value").value == "alice@example.com"
    assert select(USER, "$.emails[-1].value").value == "second-work@example.com"


def test_select_quoted_urn_key() -> None:
    """$["urn:...:UserProperties"].Prop reads an extension attribute."""
    selector = '$["urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"].'
    assert select(USER, selector + "IdentificationNumber").value == "1234567890"


def test_filter_selects_first_match() -> None:
    """$.emails[?(@.type=='work')].value yields the first matching element's value."""
    assert select(USER, "$.emails[?(@.type=='work')].value").value == "alice@example.com"
    assert select(USER, '$.emails[?(@.type=="home")].value').value == "alice@home.example"
    assert select(USER, "$.emails[?(@.primary==true)].value").value == "alice@example.com"


def test_filter_on_resources_by_id() -> None:
    """$.Resources[?(@.id=='urn:...:User')].name finds a schema by its URN id."""
    selector = "$.Resources[?(@.id=='urn:ietf:params:scim:schemas:core:2.0:User')].name"
    assert select(LIST, selector).value == "User"


def test_filter_literal_substitutes_variables() -> None:
    """Placeholders in filter literals are substituted before matching."""
    assert select(GROUP, "$.members[?(@.value=='{id}')].value", {"id": "u2"}).value == "u2"


def test_substituted_value_with_quote_is_safe() -> None:
    """A substituted value containing a quote is matched literally, not re-parsed."""
    document = {"items": [{"v": "it's"}]}
    assert select(document, "$.items[?(@.v=='{x}')].v", {"x": "it's"}).value == "it's"


def test_missing_paths_report_reasons() -> None:
    """Missing keys, short arrays and unmatched filters are not found, with a reason."""
    assert "no member 'nope'" in select(USER, "$.nope").reason
    assert "no [9]" in select(USER, "$.emails[9]").reason
    assert "no element" in select(GROUP, "$.members[?(@.value=='u9')].value").reason
    assert "not an object" in select(None, "$.id").reason
    assert not select(USER, "$.userName[0]").found


# ---- expectations --------------------------------------------------------------------------


def test_absent_accepts_missing_null_and_unmatched_filter() -> None:
    """<absent> holds for a missing key, a null value, and a filter matching no element."""
    for selector in ("$.members", "$.nickName", "$.emails[?(@.type=='other')].value"):
        assert check_expectation(USER, selector, "<absent>", {}) is None
    assert check_expectation(None, "$.members", "<absent>", {}) is None
    assert (
        check_expectation(GROUP, "$.members[?(@.value=='{i}')].value", "<absent>", {"i": "x"})
        is None
    )
    assert check_expectation(GROUP, "$.members[?(@.value=='u9')].value", "<absent>", {}) is None


def test_absent_rejects_empty_list() -> None:
    """<absent> fails on an empty list: excluded attributes must be omitted, not emptied."""
    problem = check_expectation({"members": []}, "$.members", "<absent>", {})
    assert problem is not None and "expected <absent>, got []" in problem


def test_present_requires_non_null() -> None:
    """<present> needs the key to exist with a non-null value (empty string is present)."""
    assert check_expectation(USER, "$.id", "<present>", {}) is None
    assert check_expectation(USER, "$.title", "<present>", {}) is None
    assert check_expectation(USER, "$.nickName", "<present>", {}) is not None
    assert check_expectation(USER, "$.missing", "<present>", {}) is not None


def test_non_empty_rejects_empty_values() -> None:
    """<non-empty> fails on null, '', [] and {}; passes on a real value."""
    document: dict[str, Any] = {"s": "", "l": [], "o": {}, "n": None, "ok": "x", "zero": 0}
    for key in ("s", "l", "o", "n", "missing"):
        assert check_expectation(document, f"$.{key}", "<non-empty>", {}) is not None
    assert check_expectation(document, "$.ok", "<non-empty>", {}) is None
    assert check_expectation(document, "$.zero", "<non-empty>", {}) is None


def test_expected_values_are_substituted() -> None:
    """{var} in expected values is substituted before comparison."""
    assert check_expectation(USER, "$.id", "{userId}", {"userId": "u1"}) is None
    problem = check_expectation(USER, "$.id", "{userId}", {"userId": "u2"})
    assert problem == '$.id: expected "u2", got "u1"'


def test_comparison_is_type_strict() -> None:
    """true is not 1, and the Error status "404" (string) is not 404 (number)."""
    assert not json_equal(True, 1)
    assert not json_equal(1, True)
    assert not json_equal("404", 404)
    assert json_equal(1, 1.0)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
    assert not json_equal({"a": [True]}, {"a": [1]})
    assert check_expectation({"status": 404}, "$.status", "404", {}) is not None
    assert check_expectation({"totalResults": True}, "$.totalResults", 1, {}) is not None


def test_empty_list_expectation() -> None:
    """'$.Resources': [] requires an explicit empty array, not a missing member."""
    assert check_expectation({"Resources": []}, "$.Resources", [], {}) is None
    assert check_expectation({"totalResults": 0}, "$.Resources", [], {}) is not None


# ---- replay file ---------------------------------------------------------------------------


def test_replay_path_prefers_sibling_shared_copy(tmp_path: Path) -> None:
    """replay_path uses ../shared/entra/replay.json when it exists, else the repo copy."""
    repo = tmp_path / "repo"
    (repo / IN_REPO_REPLAY_PATH).parent.mkdir(parents=True)
    (repo / IN_REPO_REPLAY_PATH).write_text("[]")
    assert replay_path(repo) == repo / IN_REPO_REPLAY_PATH
    sibling = repo / SIBLING_REPLAY_PATH
    sibling.parent.mkdir(parents=True)
    sibling.write_text("[]")
    assert replay_path(repo) == sibling.resolve()


def test_replay_file_is_consistent() -> None:
    """The replay file loads, and every placeholder is generated or captured before use."""
    steps = load_steps(replay_path())
    assert len(steps) >= 74
    assert check_steps(steps) == []
    assert set(variable_specs(steps)) >= {"token", "badToken", "randomGuid", "userName1"}


def test_in_repo_copy_matches_shared_file() -> None:
    """tests/data/entra/replay.json is identical to ../shared/entra/replay.json when present."""
    sibling = REPO_ROOT / SIBLING_REPLAY_PATH
    if not sibling.is_file():
        pytest.skip("no ../shared/entra/replay.json beside the repository")
    assert (REPO_ROOT / IN_REPO_REPLAY_PATH).read_bytes() == sibling.read_bytes()


def test_check_steps_reports_use_before_capture() -> None:
    """check_steps flags a placeholder used before the step that captures it."""
    steps: list[Step] = [
        {"name": "a", "method": "GET", "path": "/Users/{userId}", "expect_status": [200]},
        {"name": "b", "method": "POST", "path": "/Users", "expect_status": [201]}
        | {"capture": {"userId": "$.id"}},
    ]
    assert check_steps(steps) == ["step 'a': {userId} is neither generated nor captured earlier"]


def test_load_steps_rejects_malformed_steps(tmp_path: Path) -> None:
    """load_steps raises on a step lacking a required key."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"name": "x", "method": "GET"}]))
    with pytest.raises(ReplayError, match="lacks"):
        load_steps(path)


# ---- runner (mock transport) ---------------------------------------------------------------


def mock_runner(
    handler: Callable[[httpx.Request], httpx.Response], steps: list[Step]
) -> tuple[ReplayRunner, httpx.Client]:
    """Build a runner whose client answers with ``handler`` instead of the network."""
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ReplayRunner("http://scim.test/scim/v2", "tok", client, steps), client


PROBE_STEP: Step = {
    "name": "probe",
    "method": "GET",
    "path": '/Users?filter=userName eq "{randomGuid}"',
    "body": None,
    "expect_status": [200],
    "expect": {"$.totalResults": 0, "$.Resources": []},
    "vars": {"token": "the token", "randomGuid": "fresh GUID"},
}


def test_runner_sends_encoded_request_with_bearer() -> None:
    """The runner sends the percent-encoded URL and the caller's bearer token."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"totalResults": 0, "Resources": []})

    runner, client = mock_runner(handler, [PROBE_STEP])
    with client:
        [result] = runner.run_all()
    assert result.ok and result.status == 200 and result.position == 1
    guid = runner.variables["randomGuid"]
    assert seen[0].url.raw_path == f"/scim/v2/Users?filter=userName%20eq%20%22{guid}%22".encode()
    assert seen[0].headers["authorization"] == "Bearer tok"


def test_runner_captures_and_reuses_values() -> None:
    """A captured value is substituted into later steps' paths and expectations."""
    steps: list[Step] = [
        {"name": "create", "method": "POST", "path": "/Users", "body": {"userName": "x"}}
        | {"expect_status": [201], "expect": {"$.id": "<present>"}, "capture": {"uid": "$.id"}},
        {"name": "get", "method": "GET", "path": "/Users/{uid}", "body": None}
        | {"expect_status": [200], "expect": {"$.id": "{uid}"}},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.headers["content-type"] == "application/scim+json"
            return httpx.Response(201, json={"id": "abc"})
        return httpx.Response(200, json={"id": request.url.path.rsplit("/", 1)[1]})

    runner, client = mock_runner(handler, steps)
    with client:
        results = runner.run_all()
    assert [r.ok for r in results] == [True, True]
    assert runner.variables["uid"] == "abc"


def test_failure_detail_explains_mismatch_and_shows_body() -> None:
    """A failing step's detail names the wrong status, the mismatch and the response body."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "nope", "totalResults": 3})

    runner, client = mock_runner(handler, [PROBE_STEP])
    with client:
        [result] = runner.run_all()
    assert not result.ok and result.failed and not result.warning
    assert "status 404, expected one of [200]" in result.detail
    assert "$.totalResults: expected 0, got 3" in result.detail
    assert "$.Resources: expected [], but $ has no member 'Resources'" in result.detail
    assert '"detail": "nope"' in result.detail or '"detail":"nope"' in result.detail
    assert "FAIL" in format_report([result])


def test_optional_failure_is_a_warning() -> None:
    """A failed step marked optional is a warning, not a failure."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="boom")

    runner, client = mock_runner(handler, [PROBE_STEP | {"optional": True}])
    with client:
        [result] = runner.run_all()
    assert not result.ok and result.warning and not result.failed
    assert "(not JSON)" in result.detail and "boom" in result.detail
    assert "WARN (optional)" in format_report([result])


def test_failed_capture_makes_dependent_steps_fail_cleanly() -> None:
    """When a capture fails, later steps using the variable fail without sending a request."""
    steps: list[Step] = [
        {"name": "create", "method": "POST", "path": "/Users", "body": {}}
        | {"expect_status": [201], "capture": {"uid": "$.id"}},
        {"name": "get", "method": "GET", "path": "/Users/{uid}", "body": None}
        | {"expect_status": [200]},
    ]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(400, json={"detail": "bad"})

    runner, client = mock_runner(handler, steps)
    with client:
        create, get = runner.run_all()
    assert "capture {uid} <- $.id" in create.detail
    assert not get.ok and get.status is None and "{uid} has no value" in get.detail
    assert calls == ["POST"]


def test_transport_error_is_a_step_failure() -> None:
    """A connection error fails the step (status None) instead of aborting the run."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    runner, client = mock_runner(handler, [PROBE_STEP, PROBE_STEP | {"name": "again"}])
    with client:
        results = runner.run_all()
    assert [(r.ok, r.status) for r in results] == [(False, None), (False, None)]
    assert "ConnectError" in results[0].detail


def test_run_all_regenerates_variables() -> None:
    """Each run_all starts from fresh variables, so repeated runs never reuse GUIDs."""
    runner, client = mock_runner(lambda request: httpx.Response(200, json={}), [PROBE_STEP])
    with client:
        runner.run_all()
        first = runner.variables["randomGuid"]
        runner.run_all()
    assert runner.variables["randomGuid"] != first
