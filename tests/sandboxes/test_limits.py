"""Resource limits: memory, processes, CPU, sandbox lifetime, and cgroup cleanup."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import anyio
import pytest

from gateway.settings import Settings
from sandboxes import (
    Sandbox,
    SandboxBackend,
    SandboxClosed,
    SandboxService,
    SandboxSpec,
    make_backend,
)
from sandboxes._cgroups import SandboxCgroups

from .conftest import IN_CI, new_instance, new_run_id

pytestmark = pytest.mark.anyio

HOG = ["python3", "-c", "x = bytearray(1536 * 1024 * 1024); print('survived')"]
# Every process forks until the pids limit refuses one; the first refused kills the group.
BOMB = """
import os, signal, sys
while True:
    try:
        os.fork()
    except OSError as exc:
        print("fork failed:", exc, file=sys.stderr, flush=True)
        os.killpg(0, signal.SIGKILL)
"""
# Two busy processes for one second of wall clock; prints CPU seconds used per wall second.
BURN = """
import os, time
start = time.monotonic()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while time.monotonic() < start + 1.0:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
t = os.times()
print((t.children_user + t.children_system) / (time.monotonic() - start))
"""


def cgroups_of(backend: SandboxBackend, backend_name: str) -> SandboxCgroups | None:
    """The local backend's cgroups; None for docker (its limits are Docker's) or without cgroups here."""
    if backend_name != "local":
        return None
    cgroups: SandboxCgroups | None = backend.cgroups  # type: ignore[attr-defined]
    if cgroups is None and IN_CI:
        pytest.fail(f"local sandboxes have no cgroups in CI: {backend.cgroups_error}")  # type: ignore[attr-defined]
    return cgroups


def has_strong_limits(backend: SandboxBackend, backend_name: str) -> bool:
    return backend_name == "docker" or cgroups_of(backend, backend_name) is not None


def cgroup_file(cgroups: SandboxCgroups, controller: str, sandbox: Sandbox, name: str) -> Path:
    parent = cgroups.parents["unified" if cgroups.version == 2 else controller]
    return parent / sandbox.id / name


async def process_count(sandbox: Sandbox) -> int:
    return int((await sandbox.exec("ls /proc | grep -c '^[0-9]'")).stdout_text.strip())


async def test_memory_hog_is_oom_killed_and_sandbox_survives(backend: SandboxBackend, backend_name: str) -> None:
    sandbox = await backend.create(SandboxSpec(memory_mb=128), run_id=new_run_id())
    try:
        result = await sandbox.exec(HOG, timeout_s=60)
        assert result.exit_code != 0 and b"survived" not in result.stdout
        if has_strong_limits(backend, backend_name):
            assert result.oom_killed and result.exit_code == 137 and not result.timed_out
            assert result.warning is None
        else:
            assert b"MemoryError" in result.stderr and result.warning and "RLIMIT_AS" in result.warning
        alive = await sandbox.exec("echo alive")
        assert alive.stdout == b"alive\n" and not alive.oom_killed
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
        assert await process_count(sandbox) < 10  # the bomb is gone, not just paused
        if backend_name == "docker":
            limit = await sandbox.exec("cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null")
            assert limit.stdout_text.split() == ["64"]
        elif cgroups := cgroups_of(backend, backend_name):
            assert cgroup_file(cgroups, "pids", sandbox, "pids.max").read_text().split() == ["64"]
    finally:
        await sandbox.destroy()


async def test_fork_bomb_hits_the_pids_limit_and_ends_with_an_error(backend: SandboxBackend, backend_name: str) -> None:
    if not has_strong_limits(backend, backend_name):
        pytest.skip("without cgroups the pids limit is RLIMIT_NPROC, which root does not obey")
    sandbox = await backend.create(SandboxSpec(pids_limit=64), run_id=new_run_id())
    try:
        bomb = await sandbox.exec(["python3", "-c", BOMB], timeout_s=30)
        assert not bomb.timed_out and bomb.duration_s < 10
        assert bomb.exit_code == 137 and "Resource temporarily unavailable" in bomb.stderr_text
        assert (await sandbox.exec("echo alive")).stdout == b"alive\n"
        assert await process_count(sandbox) < 10
        if cgroups := cgroups_of(backend, backend_name):
            # The kernel's own count of forks refused at pids.max: the cgroup stopped it, not an rlimit.
            events = dict(line.split() for line in cgroup_file(cgroups, "pids", sandbox, "pids.events").read_text().splitlines())
            assert int(events["max"]) > 0
    finally:
        await sandbox.destroy()


async def test_cpu_quota_caps_two_busy_processes(backend: SandboxBackend, backend_name: str) -> None:
    if not has_strong_limits(backend, backend_name):
        pytest.skip("without cgroups the CPU is not limited")
    sandbox = await backend.create(SandboxSpec(cpus=0.5), run_id=new_run_id())
    try:
        burn = await sandbox.exec(["python3", "-c", BURN], timeout_s=30)
        assert burn.exit_code == 0, burn.stderr_text
        # Unlimited, two busy processes use up to 2 CPU-seconds per second; the quota holds
        # them near 0.5. The floor is loose: other tests may share the CPUs.
        assert 0.1 < float(burn.stdout_text) < 0.75
        if cgroups := cgroups_of(backend, backend_name):
            stat = cgroup_file(cgroups, "cpu", sandbox, "cpu.stat").read_text().split()
            assert int(stat[stat.index("nr_throttled") + 1]) > 0
    finally:
        await sandbox.destroy()


async def test_destroy_and_reaper_leave_no_local_sandbox_cgroup(settings: Settings) -> None:
    backend = make_backend("local", settings, new_instance())
    await backend.check()
    cgroups = cgroups_of(backend, "local")
    if cgroups is None:
        pytest.skip("this host gives the local backend no cgroups")
    sandbox = await backend.create(SandboxSpec(), run_id=new_run_id())
    dirs = [parent / sandbox.id for parent in cgroups.parents.values()]
    assert all(d.is_dir() for d in dirs) and cgroups.pids(sandbox.id)
    # A command that leaves its session behind is killed with the cgroup all the same.
    await sandbox.exec("setsid sleep 300 > /dev/null 2>&1 &")
    await sandbox.destroy()
    assert not any(d.exists() for d in dirs)

    # Left by a gateway that crashed: an empty cgroup with no work directory, an hour old.
    orphan = secrets.token_hex(6)
    left = [parent / orphan for parent in cgroups.parents.values()]
    for path in left:
        path.mkdir()
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    async def every_run_is_active(run_id: str) -> bool:
        return True  # only the orphan is this test's business

    service = SandboxService(settings, backend="local", pool_size=0, is_run_active=every_run_is_active)
    await service.start()  # reaps at start
    await service.stop()
    assert not any(path.exists() for path in left)


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
