"""API keys over HTTP: create once, hashed at rest, scopes, expiry, rate limits, revoke."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import psycopg

from tests.support.gateway import GatewayProcess
from tests.support.net import wait_for


def test_created_key_is_shown_once_and_authenticates(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="ci")
    assert created["key"].startswith("jty_") and len(created["key"]) >= 4 + 43
    assert created["id"].startswith("key_")
    assert created["prefix"] == created["key"][:8]

    with gateway.admin() as admin:
        listed = admin.get("/v1/keys").json()
        one = admin.get(f"/v1/keys/{created['id']}").json()
    assert listed["object"] == "list"
    shown = next(k for k in listed["data"] if k["id"] == created["id"])
    assert "key" not in shown and "key" not in one
    assert one["label"] == "ci"

    with gateway.client(created["key"]) as client:
        # A regular key authenticates (403 on an admin route, not 401).
        assert client.get("/v1/keys").status_code == 403


def test_only_the_sha256_of_a_key_is_stored(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="hashed")
    raw = created["key"]
    url = gateway.env.get("JETTY_DATABASE_URL")
    if url:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            rows = conn.execute("SELECT * FROM api_keys WHERE id = %s", (created["id"],)).fetchall()
    else:
        with sqlite3.connect(Path(gateway.data_dir) / "jetty.db") as conn:
            rows = conn.execute("SELECT * FROM api_keys WHERE id = ?", (created["id"],)).fetchall()
    dumped = repr(rows)
    assert raw not in dumped
    assert hashlib.sha256(raw.encode()).hexdigest() in dumped


def test_revoked_key_is_rejected_at_once(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="to-revoke")
    with gateway.client(created["key"]) as client:
        assert client.get("/v1/keys").status_code == 403
    with gateway.admin() as admin:
        revoked = admin.delete(f"/v1/keys/{created['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert created["id"] not in [k["id"] for k in admin.get("/v1/keys").json()["data"]]
        with_revoked = admin.get("/v1/keys", params={"include_revoked": "true"}).json()["data"]
        assert created["id"] in [k["id"] for k in with_revoked]
    with gateway.client(created["key"]) as client:
        response = client.get("/v1/keys")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoke_on_one_replica_reaches_another(start_gateway, postgres) -> None:
    """Two replicas on one PostgreSQL: a revoke on A stops the key on B within seconds."""
    url = postgres.create_database()
    a = start_gateway(url)
    b = start_gateway(url)
    created = a.create_key(label="replicated")
    with b.client(created["key"]) as client:
        assert client.get("/v1/keys").status_code == 403  # known to B, and cached there
    with a.admin() as admin:
        assert admin.delete(f"/v1/keys/{created['id']}").status_code == 200
    with b.client(created["key"]) as client:
        wait_for(lambda: client.get("/v1/keys").status_code == 401, timeout_s=10, what="revoke to reach replica B")


def test_unknown_key_id_is_404(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        response = admin.delete("/v1/keys/key_doesnotexist")
    assert response.status_code == 404
    body = response.json()["error"]
    assert body["type"] == "not_found_error" and body["code"] == "key_not_found"


def test_expired_key_is_rejected(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="short", expires_in_s=1)
    with gateway.client(created["key"]) as client:
        wait_for(
            lambda: client.get("/v1/keys").json()["error"]["code"] == "expired_api_key",
            timeout_s=5,
            what="the key to expire",
        )


def test_rate_limited_key_gets_429_with_retry_after(gateway: GatewayProcess) -> None:
    created = gateway.create_key(label="slow", rpm_limit=2)
    with gateway.client(created["key"]) as client:
        statuses = [client.get("/v1/keys") for _ in range(3)]
    assert [r.status_code for r in statuses] == [403, 403, 429]
    limited = statuses[-1]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"


def test_key_list_is_paginated_newest_first(gateway: GatewayProcess) -> None:
    ids = [gateway.create_key(label=f"page-{i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    with gateway.admin() as admin:
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = admin.get("/v1/keys", params=params).json()
            assert len(page["data"]) <= 2
            seen.extend(k["id"] for k in page["data"])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
    ours = [i for i in seen if i in ids]
    assert ours == list(reversed(ids))
    assert seen == sorted(seen, reverse=True)


def test_bad_key_bodies_are_400_naming_the_field(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        wrong_type = admin.post("/v1/keys", json={"label": 5})
        bad_rpm = admin.post("/v1/keys", json={"rpm_limit": 0})
        bad_time = admin.post("/v1/keys", json={"expires_at": "yesterday"})
        bad_scope = admin.post("/v1/keys", json={"scopes": {"models": [""]}})
        bad_limit = admin.get("/v1/keys", params={"limit": 1000})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "label"
    assert bad_rpm.status_code == 400 and bad_rpm.json()["error"]["param"] == "rpm_limit"
    assert bad_time.status_code == 400 and bad_time.json()["error"]["param"] == "expires_at"
    assert bad_scope.status_code == 400 and bad_scope.json()["error"]["param"] == "scopes.models"
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"


def test_unknown_fields_are_ignored(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        response = admin.post("/v1/keys", json={"label": "extra", "colour": "blue"})
    assert response.status_code == 201
