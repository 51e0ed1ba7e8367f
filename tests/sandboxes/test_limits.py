"""Resource limits: memory, processes, sandbox lifetime."""

from __future__ import annotations

import time

import anyio
import pytest

from sandboxes import SandboxBackend, SandboxClosed, SandboxSpec

from .conftest import new_run_id

pytestmark = pytest.mark.anyio

HOG = ["python3", "-c", "x = bytearray(1536 * 1024 * 1024); print('survived')"]


async def test_memory_hog_is_stopped(backend: SandboxBackend, backend_name: str) -> None:
    sandbox = await backend.create(SandboxSpec(memory_mb=128), run_id=new_run_id())
    try:
        result = await sandbox.exec(HOG, timeout_s=60)
        assert result.exit_code != 0 and b"survived" not in result.stdout
        if backend_name == "docker":
            assert result.oom_killed and result.exit_code == 137
        assert (await sandbox.exec("echo alive")).stdout == b"alive\n"
    finally:
        await sandbox.destroy()


async def test_fork_bomb_is_contained_and_killed_at_timeout(backend: SandboxBackend, backend_name: str) -> None:
    sandbox = await backend.create(SandboxSpec(pids_limit=64), run_id=new_run_id())
    try:
        started = time.monotonic()
        bomb = await sandbox.exec(["bash", "-c", ":(){ :|:& };:; sleep 60"], timeout_s=3)
        assert bomb.timed_out
        assert time.monotonic() - started < 20
        assert (await sandbox.exec("echo alive")).stdout == b"alive\n"
        count = await sandbox.exec("ls /proc | grep -c '^[0-9]'")
        assert int(count.stdout_text.strip()) < 10  # the bomb is gone, not just paused
        if backend_name == "docker":
            limit = await sandbox.exec("cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null")
            assert limit.stdout_text.split() == ["64"]
    finally:
        await sandbox.destroy()


async def test_sandbox_is_destroyed_when_its_lifetime_ends(backend: SandboxBackend) -> None:
    sandbox = await backend.create(SandboxSpec(timeout_s=1.0), run_id=new_run_id())
    try:
        sandbox.arm_lifetime()  # type: ignore[attr-defined]
        with anyio.fail_after(10):
            while sandbox.is_alive:
                await anyio.sleep(0.05)
        with pytest.raises(SandboxClosed, match="lifetime"):
            await sandbox.exec("true")
    finally:
        await sandbox.destroy()
