"""Collections (write-only secrets, encrypted at rest) and the OpenAI-compatible Files API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import psycopg

from tests.support.gateway import GatewayProcess


def _rows(gateway: GatewayProcess, sql: str) -> str:
    url = gateway.env.get("JETTY_DATABASE_URL")
    if url:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            return repr(conn.execute(sql).fetchall())
    with sqlite3.connect(Path(gateway.data_dir) / "jetty.db") as conn:
        return repr(conn.execute(sql).fetchall())


def test_collection_secrets_are_write_only_and_encrypted_at_rest(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        created = admin.put(
            "/v1/collections/team-a",
            json={
                "secrets": {"API_TOKEN": "tok-very-secret-123"},
                "defaults": {"model": "gpt-4o-mini", "sandbox": {"memory": "2g"}},
            },
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["secrets"] == ["API_TOKEN"] and body["defaults"]["model"] == "gpt-4o-mini"
        assert "tok-very-secret-123" not in created.text
        # A PUT without `secrets` keeps them; the answer never carries values.
        updated = admin.put("/v1/collections/team-a", json={"defaults": {"model": "m2"}})
        assert updated.status_code == 200 and updated.json()["secrets"] == ["API_TOKEN"]
        read = admin.get("/v1/collections/team-a")
        assert read.json()["defaults"] == {"model": "m2"} and "tok-very-secret-123" not in read.text
        assert admin.get("/v1/collections/nope").status_code == 404
        bad = admin.put("/v1/collections/bad name!", json={})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_collection_name"
        bad_secret = admin.put("/v1/collections/team-b", json={"secrets": {"bad-name": "x"}})
        assert (
            bad_secret.status_code == 400
            and bad_secret.json()["error"]["param"] == "secrets.bad-name"
        )
    assert "tok-very-secret-123" not in _rows(gateway, "SELECT * FROM runbook_collections")


def test_collection_scope_is_enforced(gateway: GatewayProcess) -> None:
    key = gateway.create_key(scopes={"collections": ["mine-*"]})["key"]
    with gateway.client(key) as client:
        assert client.put("/v1/collections/mine-1", json={}).status_code == 201
        denied = client.put("/v1/collections/other", json={})
        assert (
            denied.status_code == 403 and denied.json()["error"]["code"] == "collection_not_allowed"
        )
        assert [c["name"] for c in client.get("/v1/collections").json()["data"]] == ["mine-1"]


def test_openai_sdk_uploads_lists_reads_and_deletes_files(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    key = gateway.create_key()["key"]
    client = openai.OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0)
    path = tmp_path / "data.csv"
    path.write_bytes(b"city,temp\nOslo,3\n")
    created = client.files.create(file=path.open("rb"), purpose="user_data")
    assert created.id.startswith("file-")
    assert created.object == "file" and created.bytes == 17 and created.filename == "data.csv"
    assert isinstance(created.created_at, int) and created.purpose == "user_data"
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == b"city,temp\nOslo,3\n"
    assert created.id in [f.id for f in client.files.list()]
    # Another key cannot see it.
    other = openai.OpenAI(
        api_key=gateway.create_key()["key"], base_url=f"{gateway.url}/v1", max_retries=0
    )
    assert created.id not in [f.id for f in other.files.list()]
    try:
        other.files.retrieve(created.id)
        raise AssertionError("another key read the file")
    except openai.NotFoundError:
        pass
    deleted = client.files.delete(created.id)
    assert deleted.deleted is True
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as raw:
        assert raw.get(f"/v1/files/{created.id}").status_code == 404
        bad = raw.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "nonsense"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
