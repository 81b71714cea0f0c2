"""Every attribute /Schemas describes has a description (RFC 7643 §7: "When applicable, service
providers MUST specify the description"), in the words of RFC 7643 §8.7.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scimd.auth import apps
from scimd.settings import Settings
from scimd.store import audit
from scimd.store.engine import create_engine
from scimd.web.app import create_app

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"


@pytest.fixture
def schemas(tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """The /Schemas answer of a fresh SQLite-backed app, by schema id."""
    engine = create_engine(f"sqlite:///{tmp_path / 'schemas.db'}")
    app = create_app(Settings(), engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
    with TestClient(app) as client:
        r = client.get("/scim/v2/Schemas", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        yield {s["id"]: s for s in r.json()["Resources"]}
    engine.dispose()


def _attributes(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every attribute and sub-attribute of a schema document, with its dotted path."""
    for attr in schema["attributes"]:
        yield attr["name"], attr
        for sub in attr.get("subAttributes", ()):
            yield f"{attr['name']}.{sub['name']}", sub


def test_every_core_attribute_has_a_description(schemas: dict[str, dict[str, Any]]) -> None:
    """User, Group and EnterpriseUser: no attribute or sub-attribute without a description."""
    missing = []
    counted = 0
    for urn in (USER, GROUP, ENTERPRISE):
        for path, attr in _attributes(schemas[urn]):
            counted += 1
            if not (isinstance(attr.get("description"), str) and attr["description"].strip()):
                missing.append(f"{schemas[urn]['name']}:{path}")
    assert not missing, f"attributes without a description: {missing}"
    assert counted >= 80  # the walk did reach the sub-attributes

    user = dict(_attributes(schemas[USER]))
    assert user["userName"]["description"] == (
        "Unique identifier for the User, typically used by the user to directly authenticate"
        " to the service provider. Each User MUST include a non-empty userName value.  This"
        " identifier MUST be unique across the service provider's entire set of Users."
        " REQUIRED."
    )
    group = dict(_attributes(schemas[GROUP]))
    assert group["members"]["description"] == "A list of members of the Group."
    assert group["members.value"]["description"] == "Identifier of the member of this Group."


# --------------------------------------------------------------------------------------------
# The other discovery documents: what they state must be what the server does


@pytest.fixture(scope="module")
def discovery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """ServiceProviderConfig, ResourceTypes and Schemas of an app with non-default limits and
    two custom properties (one described, one not), and a GET of every location they name."""
    from scimd.store import properties as props

    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('discovery') / 'd.db'}")
    settings = Settings(max_results=40, default_count=9, max_payload=4096, max_bulk_operations=7)
    app = create_app(settings, engine)
    with engine.begin() as conn:
        _, token = apps.create_app(conn, "t", "bearer", ["API", "USER SYNC"], audit.CLI)
        props.add_property(conn, "HiredOn", "Date", "", audit.CLI)
        props.add_property(conn, "Level", "Integer", "", audit.CLI)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        docs = {
            name: client.get(f"/scim/v2/{name}", headers=headers).json()
            for name in ("ServiceProviderConfig", "ResourceTypes", "Schemas")
        }
        listed = docs["ResourceTypes"]["Resources"] + docs["Schemas"]["Resources"]
        located = [docs["ServiceProviderConfig"], *listed]
        docs["located"] = {
            d["meta"]["location"]: client.get(d["meta"]["location"], headers=headers).json()
            for d in located
        }
        yield docs
    engine.dispose()


def test_the_service_provider_config_states_the_limits_configured(
    discovery: dict[str, Any],
) -> None:
    """Clients size their pages and Bulk requests by these numbers (RFC 7643 §5, RFC 9865 §4):
    one that differs from the setting makes a client send requests the server refuses."""
    spc = discovery["ServiceProviderConfig"]
    assert spc["bulk"] == {"supported": True, "maxOperations": 7, "maxPayloadSize": 4096}
    assert spc["filter"] == {"supported": True, "maxResults": 40}
    pagination = spc["pagination"]
    assert (pagination["defaultPageSize"], pagination["maxPageSize"]) == (9, 40)
    assert pagination["cursorTimeout"] == 3600  # scim/cursor.py's TIMEOUT
    for feature in ("patch", "changePassword", "sort", "etag"):
        assert spc[feature] == {"supported": True}, feature


def test_every_discovery_document_is_served_at_the_location_it_states(
    discovery: dict[str, Any],
) -> None:
    """meta.location is where a client reads the document again (RFC 7644 §4): each one
    names its own URL, and a GET there answers that document."""
    assert discovery["located"]
    for location, doc in discovery["located"].items():
        assert location.startswith("http://127.0.0.1/scim/v2/"), location
        assert doc["meta"]["location"] == location
    spc = discovery["ServiceProviderConfig"]["meta"]["location"]
    assert spc == "http://127.0.0.1/scim/v2/ServiceProviderConfig"
    types = {r["name"]: r["meta"]["location"] for r in discovery["ResourceTypes"]["Resources"]}
    assert types == {
        "User": "http://127.0.0.1/scim/v2/ResourceTypes/User",
        "Group": "http://127.0.0.1/scim/v2/ResourceTypes/Group",
    }


def test_discovery_lists_are_complete_pages_starting_at_one(discovery: dict[str, Any]) -> None:
    """A client pages a ListResponse by startIndex (1-based, RFC 7644 §3.4.2.4): a list
    starting at 0 asked it for a page that does not exist."""
    for name in ("ResourceTypes", "Schemas"):
        listed = discovery[name]
        assert listed["startIndex"] == 1, name
        assert listed["totalResults"] == listed["itemsPerPage"] == len(listed["Resources"])


def test_only_advertised_schemas_are_listed_and_extensions_are_optional(
    discovery: dict[str, Any],
) -> None:
    """Okta's group extension is accepted but not advertised (its "1.0" breaks strict path
    parsers), and no extension is required: a client told one is would refuse to create
    users without it."""
    ids = {s["id"] for s in discovery["Schemas"]["Resources"]}
    assert ids == {USER, GROUP, ENTERPRISE, PROPS}
    types = {r["name"]: r for r in discovery["ResourceTypes"]["Resources"]}
    assert types["User"]["schemaExtensions"] == [
        {"schema": ENTERPRISE, "required": False},
        {"schema": PROPS, "required": False},
    ]
    assert types["Group"]["schemaExtensions"] == []


def test_the_custom_extension_is_listed_only_once_it_has_a_property(
    schemas: dict[str, dict[str, Any]],
) -> None:
    """An empty schema would only invite clients to send an object nothing can be stored
    in (the ``schemas`` fixture's app has no custom property)."""
    assert set(schemas) == {USER, GROUP, ENTERPRISE}


def test_attribute_characteristics_are_described_as_the_server_applies_them(
    discovery: dict[str, Any],
) -> None:
    """Clients (Entra's attribute mapping, scim2-tester) read multiValued, canonicalValues,
    referenceTypes, returned and uniqueness to decide what to send and what to expect back."""
    by_id = {s["id"]: s for s in discovery["Schemas"]["Resources"]}
    user = dict(_attributes(by_id[USER]))
    assert user["emails"]["multiValued"] is True and user["userName"]["multiValued"] is False
    assert user["emails.type"]["canonicalValues"] == ["work", "home", "other"]
    assert user["password"]["returned"] == "never"
    assert user["password"]["mutability"] == "writeOnly"
    assert user["userName"]["uniqueness"] == "server" and user["userName"]["required"] is True
    assert "uniqueness" not in user["name"] and "caseExact" not in user["name"]
    assert user["profileUrl"]["caseExact"] is True  # a reference (RFC 7643 §2.3.7)
    manager = dict(_attributes(by_id[ENTERPRISE]))["manager.$ref"]
    assert manager["referenceTypes"] == ["User"] and manager["caseExact"] is True


def test_custom_properties_are_described_with_their_type(discovery: dict[str, Any]) -> None:
    """A property defined without a description still tells a client its type, and a Date
    property (a string in SCIM) the form it takes."""
    by_id = {s["id"]: s for s in discovery["Schemas"]["Resources"]}
    custom = {a["name"]: a for a in by_id[PROPS]["attributes"]}
    assert custom["HiredOn"]["type"] == "string"
    assert custom["HiredOn"]["description"] == (
        "Custom user property (Date). ISO 8601 date (YYYY-MM-DD)."
    )
    assert custom["Level"]["description"] == "Custom user property (Integer)."
