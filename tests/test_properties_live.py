"""Custom user properties defined while servers run appear at once in every server process."""

from __future__ import annotations

from pathlib import Path

import httpx

from support.live_server import add_user_property, provisioned_server, start_server

PROPS = "urn:ietf:params:scim:schemas:extension:bizagi:2.0:UserProperties"


def _attribute_names(base: str, token: str) -> set[str]:
    r = httpx.get(f"{base}/Schemas", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    schema = next((s for s in r.json()["Resources"] if s["id"] == PROPS), None)
    return {a["name"] for a in schema["attributes"]} if schema else set()


def test_property_added_by_cli_appears_in_two_running_servers(tmp_path: Path) -> None:
    """Two processes on one database both serve a property added after they started."""
    with provisioned_server(f"sqlite:///{tmp_path / 'p.db'}", log_dir=tmp_path) as one:
        second_logs = tmp_path / "second"
        second_logs.mkdir()
        with start_server(one.database_url, log_dir=second_logs) as two:
            base_two = two.scim_url
            assert "Badge" not in _attribute_names(base_two, one.token)
            add_user_property(one.database_url, "Badge", type_="Integer")
            assert "Badge" in _attribute_names(one.base_url, one.token)
            assert "Badge" in _attribute_names(base_two, one.token)
            body = {"userName": "live@x.com", PROPS: {"Badge": "7"}}
            h = {"Authorization": f"Bearer {one.token}"}
            r = httpx.post(f"{base_two}/Users", json=body, headers=h, timeout=10)
            assert r.status_code == 201, r.text
            assert r.json()[PROPS]["Badge"] == 7
            bad = {"userName": "live2@x.com", PROPS: {"Badge": "seven"}}
            r = httpx.post(f"{one.base_url}/Users", json=bad, headers=h, timeout=10)
            assert r.status_code == 400 and "Badge" in r.json()["detail"]
