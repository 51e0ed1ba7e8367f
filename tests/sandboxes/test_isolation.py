"""Isolation and clear errors: no egress by default, missing image, no engine, no bwrap."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from sandboxes import ImageMissing, SandboxBackend, SandboxSpec, SandboxUnavailable, make_backend

from .conftest import new_instance, new_run_id

pytestmark = pytest.mark.anyio


def _bridge_gateway_ip() -> str:
    out = subprocess.run(["docker", "network", "inspect", "bridge"], capture_output=True, text=True, timeout=20, check=True)
    config = json.loads(out.stdout)[0]["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@pytest.fixture
def host_server(backend_name: str) -> Iterator[tuple[str, int]]:
    """A TCP server on the host, where a sandbox with egress could reach it."""
    host = _bridge_gateway_ip() if backend_name == "docker" else "127.0.0.1"
    server = socket.create_server((host, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.sendall(b"hello\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield host, server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


CONNECT = "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.recv(10))"


async def test_default_network_reaches_nothing_but_egress_spec_does(
    backend: SandboxBackend, backend_name: str, host_server: tuple[str, int]
) -> None:
    host, port = host_server
    argv = ["python3", "-c", CONNECT, host, str(port)]
    closed = await backend.create(SandboxSpec(), run_id=new_run_id())
    try:
        blocked = await closed.exec(argv, timeout_s=20)
        assert blocked.exit_code != 0 and b"hello" not in blocked.stdout
    finally:
        await closed.destroy()
    # control: the same connection works when the spec allows egress
    network = "bridge" if backend_name == "docker" else "host"
    open_ = await backend.create(SandboxSpec(network=network), run_id=new_run_id())
    try:
        reached = await open_.exec(argv, timeout_s=20)
        assert reached.exit_code == 0, reached.stderr_text
        assert b"hello" in reached.stdout
    finally:
        await open_.destroy()


async def test_missing_image_says_how_to_build_it(settings: Settings, sandbox_image: str) -> None:
    backend = make_backend("docker", settings, new_instance())
    with pytest.raises(ImageMissing, match="jetty sandbox build-image"):
        await backend.create(SandboxSpec(image="jetty-sandbox:does-not-exist"), run_id=new_run_id())


async def test_unreachable_engine_is_reported(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    backend = make_backend("docker", settings, new_instance())
    with pytest.raises(SandboxUnavailable, match="Docker engine unreachable"):
        await backend.check()


async def test_local_without_bwrap_refuses_unless_unisolated_is_allowed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    refusing = make_backend("local", settings, new_instance())
    with pytest.raises(SandboxUnavailable, match="JETTY_SANDBOX_ALLOW_UNISOLATED"):
        await refusing.check()
    allowed = make_backend("local", dataclasses.replace(settings, sandbox_allow_unisolated=True), new_instance())
    sandbox = await allowed.create(SandboxSpec(), run_id=new_run_id())
    try:
        result = await sandbox.exec(["/bin/echo", "hi"])
        assert result.stdout == b"hi\n"
        assert result.isolated is False and result.warning and "NOT isolated" in result.warning
    finally:
        await sandbox.destroy()
