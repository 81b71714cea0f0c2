"""A Bulk request is authorised operation by operation, as other writes are."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from scimd.auth import apps
from scimd.store import audit
from scimd.store.engine import create_engine, write_transaction
from support.live_server import create_app, provisioned_server

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def test_operations_after_a_revocation_are_refused(postgres_url: str, tmp_path: Path) -> None:
    """Revoking an application (from another process) while its long Bulk runs refuses the
    operations after it: each is a 401, and none of them is written or audited. (On SQLite
    the server's writes keep the lock, so another process's revocation lands only after the
    Bulk; ``test_api`` revokes in the server there.)"""
    with provisioned_server(postgres_url, log_dir=tmp_path) as server:
        bulk_app = create_app(server.database_url, "bulk")
        ops = [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": f"b{i}",
                "data": {"schemas": [USER], "userName": f"bulk{i}@x.com"},
            }
            for i in range(1000)
        ]
        answer: dict[str, Any] = {}

        def send() -> None:
            r = httpx.post(
                f"{server.base_url}/Bulk",
                json={"schemas": [BULK], "Operations": ops},
                headers={"Authorization": f"Bearer {bulk_app.client_secret}"},
                timeout=120,
            )
            answer["status"], answer["body"] = r.status_code, r.json()

        engine = create_engine(server.database_url)
        try:
            sender = threading.Thread(target=send)
            sender.start()
            count = sa.text("SELECT count(*) FROM users WHERE user_name LIKE 'bulk%'")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # revoke once the Bulk has started writing
                with engine.connect() as conn:
                    if conn.execute(count).scalar_one() >= 5:
                        break
                time.sleep(0.002)
            with write_transaction(engine) as conn:
                apps.revoke_app(conn, bulk_app.client_id, audit.Actor("cli", "test"))
            sender.join(120)
            with engine.connect() as conn:
                created = conn.execute(count).scalar_one()
                audited = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM audit WHERE actor = :cid AND operation = 'create'"
                    ),
                    {"cid": bulk_app.client_id},
                ).scalar_one()
        finally:
            engine.dispose()

    assert answer["status"] == 200
    statuses = [r["status"] for r in answer["body"]["Operations"]]
    done = statuses.count("201")
    assert 5 <= done < len(ops), "the revocation should land while the Bulk runs"
    assert statuses == ["201"] * done + ["401"] * (len(ops) - done)
    assert created == audited == done
