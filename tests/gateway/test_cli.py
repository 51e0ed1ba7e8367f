"""The `jetty` command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from tests.support.gateway import REPO_ROOT, GatewayProcess


def jetty(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_version() -> None:
    result = jetty("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JETTY_PORT", "eighty"),
        ("JETTY_SANDBOX_BACKEND", "vm"),
        ("JETTY_DATABASE_URL", "mysql://x/y"),
        ("JETTY_SANDBOX_IMAGES", "py="),
        ("JETTY_SANDBOX_MAX_CPUS", "lots"),
    ],
)
def test_bad_setting_stops_start_with_one_line(name: str, value: str, tmp_path: Path) -> None:
    result = jetty("serve", env={name: value, "JETTY_DATA_DIR": str(tmp_path)}, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]


def test_embedded_defaults_generate_admin_token_0600(start_gateway, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir=data_dir)
    gateway.env.pop("JETTY_ADMIN_TOKEN")
    gateway.start()
    try:
        token_file = data_dir / "admin_token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert data_dir.stat().st_mode & 0o777 == 0o700  # the database is not for other local users
        token = token_file.read_text().strip()
        assert str(token_file) in gateway.logs() and token not in gateway.logs()
        with gateway.client(token) as client:
            assert client.get("/v1/keys").status_code == 200
    finally:
        gateway.stop()


def test_keys_create_list_revoke_through_the_api(gateway: GatewayProcess) -> None:
    env = {"JETTY_BASE_URL": gateway.url, "JETTY_API_KEY": gateway.admin_token}
    created = jetty("keys", "create", "--label", "from-cli", "--model", "gpt-*", env=env)
    assert created.returncode == 0, created.stderr
    assert '"key": "jty_' in created.stdout
    key_id = next(line.split('"')[3] for line in created.stdout.splitlines() if line.strip().startswith('"id"'))

    listed = jetty("keys", "list", env=env)
    assert listed.returncode == 0 and key_id in listed.stdout and "from-cli" in listed.stdout
    assert "jty_" in listed.stdout and '"key"' not in listed.stdout

    revoked = jetty("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0 and key_id in revoked.stdout
    again = jetty("keys", "revoke", "key_nope", env=env)
    assert again.returncode == 1 and "404" in again.stderr


def test_cli_with_bad_token_says_so(gateway: GatewayProcess) -> None:
    result = jetty("keys", "list", env={"JETTY_BASE_URL": gateway.url, "JETTY_API_KEY": "jty_wrong"})
    assert result.returncode == 1
    assert "401" in result.stderr and "invalid_api_key" in result.stderr


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    env = {"JETTY_DATA_DIR": str(tmp_path)}
    first = jetty("db", "upgrade", env=env)
    second = jetty("db", "upgrade", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (tmp_path / "jetty.db").exists()


def test_serve_flags_choose_host_and_port(tmp_path: Path) -> None:
    import httpx

    from tests.support.net import free_port, wait_for

    port = free_port()
    env = {**os.environ, "JETTY_DATA_DIR": str(tmp_path), "JETTY_PORT": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
    )
    try:
        status = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=1).json(),
            timeout_s=30,
            what="jetty serve --port",
        )
        assert status["ok"] is True
        # The embedded default: a SQLite file in WAL mode in the data dir.
        import sqlite3

        with sqlite3.connect(tmp_path / "jetty.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        process.terminate()
        # uvicorn re-raises SIGTERM after a graceful shutdown, hence -15.
        assert process.wait(timeout=30) in (0, -15)
    assert "gateway shutting down" in (tmp_path / "serve.log").read_text()
