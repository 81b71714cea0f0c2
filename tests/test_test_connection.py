"""Entra ID "Test Connection": a userName probe with a random GUID, and token rejection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.entra_replay import build_url
from support.live_server import LiveServer, create_app, provisioned_server, revoke_app

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PROBE_PATH = '/Users?filter=userName eq "{probe}"'


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """An HTTP client with a short timeout, closed after the test."""
    with httpx.Client(timeout=10.0) as http_client:
        yield http_client


def probe(client: httpx.Client, server: LiveServer, token: str) -> httpx.Response:
    """Send Entra's Test Connection request: a userName filter on a fresh random GUID."""
    url = build_url(server.base_url, PROBE_PATH, {"probe": str(uuid.uuid4())})
    return client.get(url, headers={"Authorization": f"Bearer {token}"})


def test_probe_with_valid_token_returns_empty_list(
    live_server: LiveServer, client: httpx.Client
) -> None:
    """The probe with the valid bearer token answers 200 with an empty ListResponse."""
    response = probe(client, live_server, live_server.token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert LIST_RESPONSE in body["schemas"]
    assert body["totalResults"] == 0
    assert body["Resources"] == []


def test_probe_response_is_scim_json(live_server: LiveServer, client: httpx.Client) -> None:
    """The probe's response carries Content-Type application/scim+json."""
    response = probe(client, live_server, live_server.token)
    assert response.headers["content-type"].startswith("application/scim+json")


def test_probe_with_bad_token_is_401_scim_error(
    live_server: LiveServer, client: httpx.Client
) -> None:
    """A bad token gets 401, a SCIM Error body with status "401" and a Bearer challenge."""
    response = probe(client, live_server, "invalid-" + uuid.uuid4().hex)
    assert response.status_code == 401, response.text
    body = response.json()
    assert ERROR in body["schemas"]
    assert body["status"] == "401"
    assert response.headers.get("www-authenticate", "").startswith("Bearer")


def test_probe_with_revoked_token_is_401(live_server: LiveServer, client: httpx.Client) -> None:
    """A token that worked is refused with 401 once its application is revoked."""
    app_name = f"entra-revoked-{uuid.uuid4().hex[:8]}"
    credentials = create_app(live_server.database_url, app_name)
    before = probe(client, live_server, credentials.client_secret)
    assert before.status_code == 200, before.text
    revoke_app(live_server.database_url, credentials.client_id)
    after = probe(client, live_server, credentials.client_secret)
    assert after.status_code == 401, after.text


def test_revocation_stops_a_cached_token_at_once_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL the probes of concurrent requests share one statement, which also reads
    the counter a revocation bumps: a token verified (and cached) before the revocation is
    refused by the very next probes, all of them, while another application's still works."""
    import asyncio

    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        doomed = create_app(server.database_url, "entra-doomed")

        async def probes(token: str, n: int) -> set[int]:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(headers=headers, timeout=30) as c:
                urls = [
                    build_url(server.base_url, PROBE_PATH, {"probe": str(uuid.uuid4())})
                    for _ in range(n)
                ]
                return {r.status_code for r in await asyncio.gather(*(c.get(u) for u in urls))}

        assert asyncio.run(probes(doomed.client_secret, 16)) == {200}
        revoke_app(server.database_url, doomed.client_id)
        assert asyncio.run(probes(doomed.client_secret, 16)) == {401}
        assert asyncio.run(probes(server.token, 16)) == {200}
