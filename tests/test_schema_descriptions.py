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
