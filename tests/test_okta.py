"""Okta's documented SCIM 2.0 requests, sent to a live ``scimd serve`` as Okta sends them.

The source is Okta's "Okta and SCIM Version 2.0" reference
(https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20, formerly
/docs/reference/scim/scim-20/): every request it shows, in its order, with its bodies, query
strings and ``User-Agent: Okta SCIM Client 1.0.0``, the example ids replaced by the ids the
server gave. Each test follows one section of the reference and checks what Okta reads from the
answer (status, ``id``, ``totalResults``, ``Resources``, ``members``, ``active`` ...). The
"spec test" ones follow the assertions of Okta's "Okta SCIM 2.0 SPEC Test" (the Runscope suite
Okta's "Test your SCIM API" guide has integrators run).

The tests may run on different xdist workers in any order, so none depends on another: each
does the earlier steps it needs (assign a user, push a group) itself, with unique names.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from support.live_server import LiveServer, provisioned_server, sqlite_url

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

OKTA_USER_AGENT = "Okta SCIM Client 1.0.0"
SCIM_JSON = "application/scim+json"
BODY_CONTENT_TYPE = "application/scim+json; charset=utf-8"
REQUEST_TIMEOUT_SECONDS = 10.0

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------
# The server and Okta's client
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def okta_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of this module's own, on a fresh SQLite file, with an application for Okta."""
    workdir = tmp_path_factory.mktemp("okta")
    with provisioned_server(
        sqlite_url(workdir / "okta.db"), log_dir=workdir, app_name="okta", user_properties={}
    ) as server:
        yield server


class Okta:
    """Sends requests the way Okta's SCIM client does: its User-Agent, a bearer token ("HTTP
    Header" authorization) and JSON bodies as ``application/scim+json``."""

    def __init__(self, client: httpx.Client, server: LiveServer) -> None:
        self.client = client
        self.server = server

    def send(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        authorization: str | None = None,
    ) -> httpx.Response:
        """Send ``METHOD {base}/path``; ``path`` carries its query string already encoded."""
        headers = {
            "User-Agent": OKTA_USER_AGENT,
            "Authorization": authorization or f"Bearer {self.server.token}",
        }
        kwargs: dict[str, Any] = {}
        if body is not None:
            headers["Content-Type"] = BODY_CONTENT_TYPE
            kwargs["json"] = body
        return self.client.request(method, self.server.base_url + path, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def okta(okta_server: LiveServer) -> Iterator[Okta]:
    """Okta's SCIM client, pointed at this module's server."""
    with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS) as client:
        yield Okta(client, okta_server)


# --------------------------------------------------------------------------------------------
# Okta's requests (the bodies of the reference, as data)
# --------------------------------------------------------------------------------------------


def query(**params: str | int) -> str:
    """A query string encoded as Okta encodes it: ``%20`` for spaces, ``%22``, ``%40``."""
    return "?" + urlencode(params, quote_via=quote)


def user_name_filter(user_name: str) -> str:
    """The existence check of "Determine if the User already exists"."""
    return "/Users" + query(filter=f'userName eq "{user_name}"', startIndex=1, count=100)


def group_name_filter(display_name: str) -> str:
    """The existence check of "Retrieve Groups" (``displayName eq``)."""
    return "/Groups" + query(filter=f'displayName eq "{display_name}"', startIndex=1, count=100)


def new_user_name() -> str:
    return f"test.user.{uuid.uuid4().hex[:12]}@okta.local"


def create_user_body(user_name: str, *, with_external_id: bool = True) -> Json:
    """The body of "Create the User": the user's application profile, with the password Okta
    sends as a placeholder even without password sync, and an empty ``groups``.

    Without the externalId it is the body of the reference's custom-attributes example."""
    external_id = {"externalId": "00ujl29u0le5T6Aj10h7"} if with_external_id else {}
    return {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        **external_id,
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }


def put_user_body(user_id: str, user_name: str) -> Json:
    """The body of "Update the User": the user as read, with the changed attribute (a middle
    name), its id, empty groups and meta."""
    return {
        "schemas": [USER],
        "id": user_id,
        "userName": user_name,
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work", "display": user_name}],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }


def replace_value_patch(value: Json) -> Json:
    """A PatchOp of one path-less ``replace`` whose value is an object, as Okta sends them."""
    return {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": value}]}


def create_group_body(display_name: str) -> Json:
    """The body of "Create Groups": the pushed group, without members."""
    return {"schemas": [GROUP], "displayName": display_name, "members": []}


def group_name_patch(group_id: str, display_name: str) -> Json:
    """The body of "Update a specific Group name": a path-less replace whose value holds the
    group's id and name."""
    return replace_value_patch({"id": group_id, "displayName": display_name})


def add_member_patch(user_id: str, user_name: str) -> Json:
    """The ``add`` operation of "Update specific Group membership", alone."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [
            {
                "op": "add",
                "path": "members",
                "value": [{"value": user_id, "display": user_name}],
            }
        ],
    }


def membership_patch(removed_id: str, added_id: str, added_user_name: str) -> Json:
    """The PATCH of "Update specific Group membership": remove one member by a value filter,
    add another."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [
            {"op": "remove", "path": f'members[value eq "{removed_id}"]'},
            {
                "op": "add",
                "path": "members",
                "value": [{"value": added_id, "display": added_user_name}],
            },
        ],
    }


def replace_members_patch(*members: tuple[str, str]) -> Json:
    """The full push of a group's membership with ``replace`` on ``members``."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [
            {
                "op": "replace",
                "path": "members",
                "value": [{"value": value, "display": display} for value, display in members],
            }
        ],
    }


def put_group_body(display_name: str, user_id: str, user_name: str) -> Json:
    """The PUT of "Update specific Group membership", as custom (AIW) integrations send it."""
    return {
        "schemas": [GROUP],
        "displayName": display_name,
        "members": [{"value": user_id, "display": user_name}],
    }


# --------------------------------------------------------------------------------------------
# Checks of the answers
# --------------------------------------------------------------------------------------------


def json_of(response: httpx.Response, status: int) -> Json:
    """The JSON body of a response that must have ``status`` and a SCIM media type."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} "
        f"{response.text[:2000]}"
    )
    assert response.headers.get("content-type", "").startswith(SCIM_JSON), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    return body


def list_response(response: httpx.Response) -> Json:
    """A 200 ListResponse whose paging numbers are integers, as Okta requires."""
    body = json_of(response, 200)
    assert LIST_RESPONSE in body["schemas"], body
    for key in ("totalResults", "startIndex", "itemsPerPage"):
        assert type(body[key]) is int, f"{key} must be an integer: {body!r}"
    return body


def empty_list(response: httpx.Response) -> None:
    """The answer Okta reads as "no such user (or group)": 200, totalResults 0, no Resources."""
    body = list_response(response)
    assert body["totalResults"] == 0, body
    assert body["itemsPerPage"] == 0, body
    assert body["startIndex"] == 1, body
    assert body.get("Resources", []) == [], body


def scim_error(response: httpx.Response, status: int) -> Json:
    """A SCIM error: the Error schema, a detail, and the status (RFC 7644 writes it as a string;
    Okta's examples show a number, and its spec test compares the text)."""
    body = json_of(response, status)
    assert ERROR in body["schemas"], body
    assert str(body["status"]) == str(status), body
    assert body.get("detail"), body
    return body


def patched(response: httpx.Response) -> Json | None:
    """Okta takes 200 with the resource or 204 without a body for a PATCH."""
    assert response.status_code in (200, 204), (
        f"PATCH {response.request.url}: {response.status_code} {response.text[:2000]}"
    )
    if response.status_code == 204:
        assert response.content == b"", response.text
        return None
    return json_of(response, 200)


def member_ids(group: Json) -> set[str]:
    return {member["value"] for member in group.get("members") or []}


def group_ids(user: Json) -> set[str]:
    return {group["value"] for group in user.get("groups") or []}


def assert_user(body: Json, user_id: str, user_name: str) -> None:
    """What Okta reads from a User: its id, userName, name, active and primary email; never
    the password."""
    assert USER in body["schemas"], body
    assert body["id"] == user_id, body
    assert body["userName"] == user_name, body
    assert body["name"]["givenName"], body
    assert body["name"]["familyName"], body
    assert isinstance(body["active"], bool), body
    assert body["emails"][0]["value"] == user_name, body
    assert "password" not in body, body
    assert body["meta"]["resourceType"] == "User", body


# --------------------------------------------------------------------------------------------
# Steps several tests share
# --------------------------------------------------------------------------------------------


def assign_user(okta: Okta, user_name: str | None = None) -> Json:
    """Okta's "Create Users" flow: the userName existence check finds nothing, then the POST.

    Returns the created user, checked."""
    user_name = user_name or new_user_name()
    empty_list(okta.send("GET", user_name_filter(user_name)))
    created = json_of(okta.send("POST", "/Users", create_user_body(user_name)), 201)
    assert_user(created, created["id"], user_name)
    return created


def push_group(okta: Okta, display_name: str | None = None) -> Json:
    """Okta's group push: the displayName existence check finds nothing, then the POST."""
    display_name = display_name or f"Test SCIMv2 {uuid.uuid4().hex[:8]}"
    empty_list(okta.send("GET", group_name_filter(display_name)))
    created = json_of(okta.send("POST", "/Groups", create_group_body(display_name)), 201)
    assert GROUP in created["schemas"], created
    assert created["id"], created
    assert created["displayName"] == display_name, created
    assert created.get("members", []) == [], created
    assert created["meta"]["resourceType"] == "Group", created
    return created


def read_group(okta: Okta, group_id: str) -> Json:
    return json_of(okta.send("GET", f"/Groups/{group_id}"), 200)


def read_user(okta: Okta, user_id: str) -> Json:
    return json_of(okta.send("GET", f"/Users/{user_id}"), 200)


def add_member(okta: Okta, group_id: str, user: Json) -> None:
    """Okta adds an assigned user to a pushed group (the ``add`` of "Update specific Group
    membership", alone)."""
    patch = add_member_patch(user["id"], user["userName"])
    patched(okta.send("PATCH", f"/Groups/{group_id}", patch))


# --------------------------------------------------------------------------------------------
# SCIM User operations
# --------------------------------------------------------------------------------------------


def test_create_users_checks_existence_then_posts_the_profile(okta: Okta) -> None:
    """Create Users > Determine if the User already exists, then Create the User: the
    userName filter (startIndex=1, count=100) is an empty ListResponse, and the POST of the
    application profile (password and empty groups included) answers 201 with the user."""
    user_name = new_user_name()

    empty_list(okta.send("GET", user_name_filter(user_name)))

    response = okta.send("POST", "/Users", create_user_body(user_name))
    created = json_of(response, 201)
    assert_user(created, created["id"], user_name)
    assert created["id"], created
    assert created["name"]["givenName"] == "Test", created
    assert created["name"]["familyName"] == "User", created
    assert created["emails"][0]["primary"] is True, created
    assert created["emails"][0]["type"] == "work", created
    assert created["displayName"] == "Test User", created
    assert created["locale"] == "en-US", created
    assert created["externalId"] == "00ujl29u0le5T6Aj10h7", created
    assert created["active"] is True, created
    assert response.headers["location"].endswith(f"/Users/{created['id']}"), response.headers


def test_create_users_existence_check_finds_an_assigned_user(okta: Okta) -> None:
    """Create Users > Determine if the User already exists: once the user exists, the same
    filter returns it, and its id is what Okta stores as the user's externalId."""
    created = assign_user(okta)

    body = list_response(okta.send("GET", user_name_filter(created["userName"])))
    assert body["totalResults"] == 1, body
    assert body["itemsPerPage"] == 1, body
    assert [resource["id"] for resource in body["Resources"]] == [created["id"]], body
    assert_user(body["Resources"][0], created["id"], created["userName"])


def test_create_users_with_custom_attributes_example(okta: Okta) -> None:
    """Create Users > Create the User, custom-attributes example: the same profile without
    an externalId is created too (201, a new id)."""
    user_name = new_user_name()
    empty_list(okta.send("GET", user_name_filter(user_name)))

    created = json_of(
        okta.send("POST", "/Users", create_user_body(user_name, with_external_id=False)), 201
    )

    assert_user(created, created["id"], user_name)
    assert created["active"] is True, created
    assert "externalId" not in created, created


def test_create_users_of_an_existing_user_is_409(okta: Okta) -> None:
    """Create Users > Create the User: when the user already exists the server answers 409
    with the SCIM error schema, which stops Okta's provisioning job."""
    created = assign_user(okta)

    response = okta.send("POST", "/Users", create_user_body(created["userName"]))

    scim_error(response, 409)
    listed = list_response(okta.send("GET", user_name_filter(created["userName"])))
    assert [resource["id"] for resource in listed["Resources"]] == [created["id"]], listed


def pages_in_order(okta: Okta, path: str, ours: list[str]) -> list[Json]:
    """The first page of 100 (``ours`` on it), checked against the same list read by Okta's
    paging: startIndex moved on by count until totalResults, in the same order."""
    first = list_response(okta.send("GET", path + query(startIndex=1, count=100)))
    total = first["totalResults"]
    assert total >= len(ours), first
    assert first["startIndex"] == 1, first
    assert first["itemsPerPage"] == len(first["Resources"]) == min(total, 100), first
    listed = [resource["id"] for resource in first["Resources"]]
    assert set(ours) <= set(listed), (ours, listed)
    paged: list[str] = []
    start = 1
    while start <= total:
        page = list_response(okta.send("GET", path + query(startIndex=start, count=2)))
        assert page["startIndex"] == start, page
        assert page["totalResults"] == total, page
        assert page["itemsPerPage"] == len(page["Resources"]) <= 2, page
        paged += [resource["id"] for resource in page["Resources"]]
        start += 2
    assert paged == listed, (paged, listed)
    resources: list[Json] = first["Resources"]
    return resources


def test_retrieve_users_pages_by_start_index_and_count(okta: Okta) -> None:
    """Retrieve Users: ``GET /Users?startIndex=1&count=100`` lists the users with integer
    paging numbers, and paging by startIndex/count returns them in the same order."""
    ours = [assign_user(okta)["id"] for _ in range(3)]

    for resource in pages_in_order(okta, "/Users", ours):
        assert_user(resource, resource["id"], resource["userName"])


def test_retrieve_a_specific_user(okta: Okta) -> None:
    """Retrieve a specific User: ``GET /Users/{id}`` answers 200 with the user Okta created,
    active, with its primary work email, and no password."""
    created = assign_user(okta)

    user = read_user(okta, created["id"])

    assert_user(user, created["id"], created["userName"])
    assert user["active"] is True, user
    assert user["name"]["givenName"] == "Test", user
    assert user["name"]["familyName"] == "User", user
    assert len(user["emails"]) == 1, user
    assert user["emails"][0]["primary"] is True, user
    assert user["emails"][0]["type"] == "work", user
    assert user.get("groups", []) == [], user


def test_update_a_specific_user_with_put(okta: Okta) -> None:
    """Update a specific User (PUT): Okta reads the user, then PUTs it back with the changed
    attribute (a middle name); the answer is the updated user, and a later read shows it."""
    created = assign_user(okta)
    user_id, user_name = created["id"], created["userName"]
    read_user(okta, user_id)

    response = okta.send("PUT", f"/Users/{user_id}", put_user_body(user_id, user_name))

    updated = json_of(response, 200)
    assert_user(updated, user_id, user_name)
    assert updated["name"]["givenName"] == "Another", updated
    assert updated["name"]["middleName"] == "Excited", updated
    assert updated["name"]["familyName"] == "User", updated
    assert updated["emails"][0]["value"] == user_name, updated
    assert updated["active"] is True, updated
    again = read_user(okta, user_id)
    assert again["name"]["middleName"] == "Excited", again
    assert again["name"]["givenName"] == "Another", again
    assert again["active"] is True, again


def test_update_a_specific_user_with_patch_deactivates(okta: Okta) -> None:
    """Update a specific User (PATCH), deactivation: a path-less replace of
    ``{"active": false}`` answers the user with active false (or 204); the user is not
    deleted (Delete Users: Okta never deletes) and still found by its userName."""
    created = assign_user(okta)
    user_id = created["id"]

    answer = patched(
        okta.send("PATCH", f"/Users/{user_id}", replace_value_patch({"active": False}))
    )

    if answer is not None:
        assert_user(answer, user_id, created["userName"])
        assert answer["active"] is False, answer
    user = read_user(okta, user_id)
    assert user["active"] is False, user
    assert user["name"]["givenName"] == "Test", user
    found = list_response(okta.send("GET", user_name_filter(created["userName"])))
    assert [resource["id"] for resource in found["Resources"]] == [user_id], found
    assert found["Resources"][0]["active"] is False, found


def test_update_a_specific_user_with_patch_reactivates(okta: Okta) -> None:
    """Update a specific User (PATCH), "Activating a user": after a deactivation the same
    replace with ``{"active": true}`` makes the user active again. (The reference lists the
    operation; its body is the deactivation's with true, as Okta sends it.)"""
    created = assign_user(okta)
    user_id = created["id"]
    patched(okta.send("PATCH", f"/Users/{user_id}", replace_value_patch({"active": False})))
    assert read_user(okta, user_id)["active"] is False

    answer = patched(okta.send("PATCH", f"/Users/{user_id}", replace_value_patch({"active": True})))

    if answer is not None:
        assert answer["active"] is True, answer
    user = read_user(okta, user_id)
    assert user["active"] is True, user
    assert user["userName"] == created["userName"], user


def test_update_a_specific_user_with_patch_syncs_the_password(okta: Okta) -> None:
    """Update a specific User (PATCH), "Syncing the user password": a replace of
    ``{"password": ...}`` is accepted (200 or 204), stored (the user's version changes) and
    never returned; sending the same password again changes nothing. (The reference lists the
    operation without a body; this is the deactivation's form with the password.)"""
    created = assign_user(okta)
    user_id = created["id"]
    before = read_user(okta, user_id)["meta"]["version"]
    new_password = "N3w-" + uuid.uuid4().hex[:12]

    answer = patched(
        okta.send("PATCH", f"/Users/{user_id}", replace_value_patch({"password": new_password}))
    )

    if answer is not None:
        assert_user(answer, user_id, created["userName"])
    after = read_user(okta, user_id)
    assert "password" not in after, after
    assert after["active"] is True, after
    assert after["meta"]["version"] != before, (before, after)
    patched(
        okta.send("PATCH", f"/Users/{user_id}", replace_value_patch({"password": new_password}))
    )
    assert read_user(okta, user_id)["meta"]["version"] == after["meta"]["version"]


# --------------------------------------------------------------------------------------------
# Okta's SCIM 2.0 spec test
# --------------------------------------------------------------------------------------------


def test_spec_users_endpoint_lists_complete_users(okta: Okta) -> None:
    """Spec test "Test Users endpoint" and "Get Users/{{id}}": ``/Users?count=1&startIndex=1``
    is a ListResponse whose first user has an id, a name, a userName, active and an email, and
    that id reads back as the same user."""
    assign_user(okta)

    body = list_response(okta.send("GET", "/Users" + query(count=1, startIndex=1)))

    assert body["itemsPerPage"] == 1, body
    first = body["Resources"][0]
    assert_user(first, first["id"], first["userName"])
    again = read_user(okta, first["id"])
    assert again["id"] == first["id"], again


def test_spec_random_user_name_is_an_empty_list(okta: Okta) -> None:
    """Spec test "Make sure random user doesn't exist" (and "Test invalid User by
    username"): a userName filter that matches nothing is 200 with totalResults 0."""
    empty_list(okta.send("GET", user_name_filter(f"{uuid.uuid4().hex}@example.com")))
    body = list_response(
        okta.send("GET", "/Users" + query(filter=f'userName eq "{uuid.uuid4()}@example.com"'))
    )
    assert body["totalResults"] == 0, body


def test_spec_random_id_is_404_scim_error(okta: Okta) -> None:
    """Spec test "Test invalid User by ID" and "Check status 404": an id that names no user (a
    random UUID, and the suite's ``00919288221112222``) is 404 with the Error schema, a detail
    and status 404."""
    for missing_id in (str(uuid.uuid4()), "00919288221112222"):
        scim_error(okta.send("GET", f"/Users/{missing_id}"), 404)


def test_spec_user_name_filter_ignores_case(okta: Okta) -> None:
    """Spec test "Username Case Sensitivity Check": the userName filter in capitals answers
    200 and finds the user (userName is caseExact false, RFC 7643 §4.1.1)."""
    created = assign_user(okta)

    body = list_response(okta.send("GET", user_name_filter(created["userName"].upper())))

    assert [resource["id"] for resource in body["Resources"]] == [created["id"]], body


def test_spec_recreating_a_user_with_same_values_is_409(okta: Okta) -> None:
    """Spec test "Create Okta user with realistic values", "Verify that user was created" and
    "Expect failure when recreating user with same values": 201, the user reads back, then the
    same POST (sent as ``application/json``, as the suite does) is 409."""
    user_name = new_user_name()
    body = {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Given Family",
        "active": True,
    }
    headers = {
        "Authorization": f"Bearer {okta.server.token}",
        "Content-Type": "application/json",
        "Accept": "application/scim+json; charset=utf-8",
    }
    url = okta.server.base_url + "/Users"

    created = json_of(okta.client.post(url, json=body, headers=headers), 201)
    assert created["active"] is True, created
    assert created["name"]["familyName"] == "Family", created
    assert created["name"]["givenName"] == "Given", created
    assert created["userName"] == user_name, created
    assert read_user(okta, created["id"])["userName"] == user_name

    scim_error(okta.client.post(url, json=body, headers=headers), 409)


def test_spec_groups_endpoint_answers(okta: Okta) -> None:
    """Spec test "Verify Groups endpoint": ``GET /Groups`` is 200 with a ListResponse whose
    Resources is a list holding the groups."""
    pushed = push_group(okta)

    body = list_response(okta.send("GET", "/Groups"))

    assert body["totalResults"] >= 1, body
    assert isinstance(body["Resources"], list), body
    assert pushed["id"] in {resource["id"] for resource in body["Resources"]}, body


def test_spec_bad_credentials_are_401_scim_error(okta: Okta) -> None:
    """Spec test "Check status 401": an Authorization header that holds no valid token is 401
    with the Error schema, a detail and status 401."""
    response = okta.send(
        "GET", user_name_filter(new_user_name().upper()), authorization="non-token"
    )
    scim_error(response, 401)


def test_basic_auth_option_is_accepted(okta: Okta) -> None:
    """Okta's "Basic Auth" authorization option (the reference's ``Authorization:
    <Authorization credentials>``): the existence check with the client id and secret over
    HTTP Basic is answered like the bearer token's; a wrong secret is 401."""
    server = okta.server
    good = base64.b64encode(f"{server.client_id}:{server.token}".encode()).decode()
    bad = base64.b64encode(f"{server.client_id}:wrong-{uuid.uuid4().hex}".encode()).decode()

    empty_list(okta.send("GET", user_name_filter(new_user_name()), authorization=f"Basic {good}"))
    scim_error(
        okta.send("GET", user_name_filter(new_user_name()), authorization=f"Basic {bad}"), 401
    )


# --------------------------------------------------------------------------------------------
# SCIM Group operations
# --------------------------------------------------------------------------------------------


def test_create_groups_pushes_a_group(okta: Okta) -> None:
    """Create Groups (with Retrieve Groups' ``displayName eq`` existence check): the filter
    finds nothing, the POST with empty members answers 201 with the group, which the same
    filter then finds."""
    display_name = f"Test SCIMv2 {uuid.uuid4().hex[:8]}"

    empty_list(okta.send("GET", group_name_filter(display_name)))
    response = okta.send("POST", "/Groups", create_group_body(display_name))

    created = json_of(response, 201)
    assert GROUP in created["schemas"], created
    assert created["id"], created
    assert created["displayName"] == display_name, created
    assert created.get("members", []) == [], created
    assert created["meta"]["resourceType"] == "Group", created
    assert response.headers["location"].endswith(f"/Groups/{created['id']}"), response.headers
    found = list_response(okta.send("GET", group_name_filter(display_name)))
    assert found["totalResults"] == 1, found
    assert [resource["id"] for resource in found["Resources"]] == [created["id"]], found
    assert found["Resources"][0]["displayName"] == display_name, found


def test_retrieve_groups_pages_by_start_index_and_count(okta: Okta) -> None:
    """Retrieve Groups: ``GET /Groups?startIndex=1&count=100`` lists the groups with integer
    paging numbers, and paging by startIndex/count keeps the same order."""
    ours = [push_group(okta)["id"] for _ in range(3)]

    for resource in pages_in_order(okta, "/Groups", ours):
        assert GROUP in resource["schemas"], resource
        assert resource["displayName"], resource


def test_retrieve_specific_groups(okta: Okta) -> None:
    """Retrieve specific Groups: ``GET /Groups/{id}`` answers the group with its members
    (``value`` the user's id). The same read with ``excludedAttributes=members`` (RFC 7644
    §3.4.2.5; the reference's own example has no query) answers the group without them."""
    user = assign_user(okta)
    group = push_group(okta)
    add_member(okta, group["id"], user)

    full = read_group(okta, group["id"])
    assert GROUP in full["schemas"], full
    assert full["id"] == group["id"], full
    assert full["displayName"] == group["displayName"], full
    assert member_ids(full) == {user["id"]}, full
    assert full["meta"]["resourceType"] == "Group", full

    lean = json_of(
        okta.send("GET", f"/Groups/{group['id']}" + query(excludedAttributes="members")), 200
    )
    assert lean["id"] == group["id"], lean
    assert lean["displayName"] == group["displayName"], lean
    assert "members" not in lean, lean


def test_retrieve_specific_groups_of_an_unknown_id_is_404(okta: Okta) -> None:
    """Retrieve specific Groups, "to see if the Group object still exists": an id that names
    no group is 404 with the SCIM error schema."""
    scim_error(okta.send("GET", f"/Groups/{uuid.uuid4()}"), 404)


def test_update_a_specific_group_name(okta: Okta) -> None:
    """Update a specific Group name: a path-less replace whose value holds the group's id and
    new displayName answers 200 with the group (or 204); the name changes, and the members,
    which the request does not name, stay (Okta sends it with every membership update)."""
    user = assign_user(okta)
    group = push_group(okta)
    group_id = group["id"]
    add_member(okta, group_id, user)
    new_name = f"Test SCIMv20 {uuid.uuid4().hex[:8]}"

    answer = patched(
        okta.send("PATCH", f"/Groups/{group_id}", group_name_patch(group_id, new_name))
    )

    if answer is not None:
        assert answer["id"] == group_id, answer
        assert answer["displayName"] == new_name, answer
    renamed = read_group(okta, group_id)
    assert renamed["displayName"] == new_name, renamed
    assert member_ids(renamed) == {user["id"]}, renamed
    found = list_response(okta.send("GET", group_name_filter(new_name)))
    assert [resource["id"] for resource in found["Resources"]] == [group_id], found
    empty_list(okta.send("GET", group_name_filter(group["displayName"])))

    # Okta sends the name update again with each membership update: the same name is no error.
    patched(okta.send("PATCH", f"/Groups/{group_id}", group_name_patch(group_id, new_name)))
    assert read_group(okta, group_id)["displayName"] == new_name


def test_update_specific_group_membership_with_patch(okta: Okta) -> None:
    """Update specific Group membership (PATCH): one request removes a member with the path
    ``members[value eq "..."]`` and adds another with ``add`` on ``members``; the group then
    holds only the added user, and the users' ``groups`` say so."""
    leaving = assign_user(okta)
    joining = assign_user(okta)
    group = push_group(okta)
    group_id = group["id"]
    add_member(okta, group_id, leaving)
    assert member_ids(read_group(okta, group_id)) == {leaving["id"]}

    answer = patched(
        okta.send(
            "PATCH",
            f"/Groups/{group_id}",
            membership_patch(leaving["id"], joining["id"], joining["userName"]),
        )
    )

    if answer is not None:
        assert answer["id"] == group_id, answer
        assert answer["displayName"] == group["displayName"], answer
    after = read_group(okta, group_id)
    assert member_ids(after) == {joining["id"]}, after
    assert after["displayName"] == group["displayName"], after
    assert group_id in group_ids(read_user(okta, joining["id"]))
    assert group_id not in group_ids(read_user(okta, leaving["id"]))


def test_update_specific_group_membership_replaces_all_members(okta: Okta) -> None:
    """Update specific Group membership, the full push: ``replace`` on ``members`` with two
    users makes them the group's only members."""
    first = assign_user(okta)
    second = assign_user(okta)
    other = assign_user(okta)
    group = push_group(okta)
    group_id = group["id"]
    add_member(okta, group_id, other)

    patched(
        okta.send(
            "PATCH",
            f"/Groups/{group_id}",
            replace_members_patch(
                (first["id"], first["userName"]), (second["id"], second["userName"])
            ),
        )
    )

    after = read_group(okta, group_id)
    assert member_ids(after) == {first["id"], second["id"]}, after
    assert after["displayName"] == group["displayName"], after
    assert group_id not in group_ids(read_user(okta, other["id"]))


def test_update_specific_group_membership_with_put(okta: Okta) -> None:
    """Update specific Group membership as custom (AIW) integrations send it: a PUT of the
    group with its displayName and one member answers 200 with the updated group."""
    user = assign_user(okta)
    group = push_group(okta)
    group_id = group["id"]

    response = okta.send(
        "PUT",
        f"/Groups/{group_id}",
        put_group_body(group["displayName"], user["id"], user["userName"]),
    )

    updated = json_of(response, 200)
    assert GROUP in updated["schemas"], updated
    assert updated["id"] == group_id, updated
    assert updated["displayName"] == group["displayName"], updated
    assert member_ids(updated) == {user["id"]}, updated
    assert member_ids(read_group(okta, group_id)) == {user["id"]}


def test_delete_a_specific_group(okta: Okta) -> None:
    """Delete a specific Group ("Delete the group in the target app"): the DELETE answers 204
    without a body; the group is gone (404), its members are not (they only leave it)."""
    user = assign_user(okta)
    group = push_group(okta)
    group_id = group["id"]
    add_member(okta, group_id, user)

    response = okta.send("DELETE", f"/Groups/{group_id}")

    assert response.status_code == 204, response.text
    assert response.content == b"", response.text
    scim_error(okta.send("GET", f"/Groups/{group_id}"), 404)
    empty_list(okta.send("GET", group_name_filter(group["displayName"])))
    still = read_user(okta, user["id"])
    assert still["active"] is True, still
    assert group_id not in group_ids(still), still
