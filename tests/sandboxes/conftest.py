"""Fixtures for sandbox tests: real Docker engine, real bubblewrap, no mocks.

Every sandbox a test creates carries this worker's instance prefix, so the
session-end check can prove nothing leaked, even from a test that failed halfway.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_SANDBOX_IMAGE, Settings
from sandboxes import SandboxBackend, SandboxSpec, make_backend

IMAGE = os.environ.get("JETTY_SANDBOX_IMAGE", DEFAULT_SANDBOX_IMAGE)
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SESSION_PREFIX = f"pytest-{WORKER}-{secrets.token_hex(3)}"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def new_instance() -> str:
    return f"{SESSION_PREFIX}-{secrets.token_hex(3)}"


def new_run_id() -> str:
    return f"run_test{secrets.token_hex(6)}"


def _docker_ok() -> str | None:
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else result.stderr.decode(errors="replace").strip()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Fail in CI, skip elsewhere, when no Docker engine answers."""
    reason = _docker_ok()
    if reason is not None:
        message = f"Docker engine unavailable: {reason}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox_image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default image, built once (workers serialise on an fcntl lock; the loser finds it built)."""
    from sandboxes._image import build_image

    lock_path = tmp_path_factory.getbasetemp().parent / "jetty-sandbox-image.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            build_image(IMAGE)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return IMAGE


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jetty-data")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, sandbox_image=IMAGE, sandbox_pool_size=0, sandbox_reap_interval_s=3600)


@pytest.fixture(scope="session", autouse=True)
def nothing_leaks(data_dir: Path) -> Iterator[None]:
    """After the session, no container or work directory of this worker may remain."""
    yield
    leaked: list[str] = []
    if _docker_ok() is None:
        rows = subprocess.run(
            ["docker", "ps", "-a", "--filter", "label=jetty.sandbox=1", "--format", "{{.ID}} {{.Label \"jetty.instance\"}}"],
            capture_output=True, text=True, timeout=30,
        ).stdout.split("\n")
        ids = [row.split()[0] for row in rows if row.strip() and SESSION_PREFIX in row]
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)
            leaked += [f"container {i}" for i in ids]
    base = data_dir / "sandboxes"
    if base.is_dir():
        for root in base.iterdir():
            meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").exists() else {}
            if str(meta.get("instance", "")).startswith(SESSION_PREFIX):
                leaked.append(f"workdir {root}")
    assert not leaked, f"sandboxes leaked after the test session: {leaked}"


@pytest.fixture(params=["docker", "local"])
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        request.getfixturevalue("sandbox_image")
    return request.param


@pytest.fixture
async def backend(backend_name: str, settings: Settings) -> AsyncIterator[SandboxBackend]:
    chosen = make_backend(backend_name, settings, new_instance())
    await chosen.check()
    yield chosen
    await chosen.close()


@pytest.fixture
async def sandbox(backend: SandboxBackend) -> AsyncIterator[object]:
    """A fresh sandbox for one test, destroyed whatever the test did."""
    created = await backend.create(SandboxSpec(memory_mb=256, pids_limit=128), run_id=new_run_id())
    try:
        yield created
    finally:
        await created.destroy()
