"""SandboxService: warm pool, acquire/release, and the reaper after a crash."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from gateway.settings import Settings
from sandboxes import SandboxService, SandboxSpec, make_backend

from .conftest import IMAGE, new_instance, new_run_id

pytestmark = pytest.mark.anyio


def _containers(label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return [name for name in out.stdout.split() if name]


async def test_acquire_from_warm_pool_is_fast_and_bound_to_the_run(settings: Settings, backend_name: str) -> None:
    instance = new_instance()
    async def every_run_is_active(run_id: str) -> bool:
        return True  # other tests' sandboxes share this engine; this test is not about reaping

    service = SandboxService(
        settings, backend=backend_name, pool_size=1, instance=instance, is_run_active=every_run_is_active
    )
    await service.start()
    try:
        await service.wait_pool_full()
        assert service.pooled == 1 and service.active == 0
        run_id = new_run_id()
        started = time.perf_counter()
        sandbox = await service.acquire(SandboxSpec(env={"RUN": run_id}), run_id)
        # generous: other suites share this Docker daemon; bench/sandboxes.py has the real figures
        assert time.perf_counter() - started < 3
        assert (service.active, sandbox.run_id) == (1, run_id)
        assert (await sandbox.exec('echo "$RUN"')).stdout_text.strip() == run_id
        records = {r.run_id for r in await service.backend.list_records()}
        assert run_id in records  # durable, so the reaper sees whose sandbox it is
        await service.release(sandbox)
        assert service.active == 0 and not sandbox.is_alive
        await service.wait_pool_full()  # refilled
    finally:
        await service.stop()
    assert [r for r in await make_backend(backend_name, settings, "x").list_records() if r.instance == instance] == []


async def test_reaper_removes_sandboxes_of_finished_and_crashed_runs(settings: Settings, backend_name: str) -> None:
    crashed = make_backend(backend_name, settings, new_instance())  # a gateway that then "crashed"
    await crashed.check()
    alive_run, dead_run = new_run_id(), new_run_id()
    keep = await crashed.create(SandboxSpec(), run_id=alive_run)
    dead_sandbox = await crashed.create(SandboxSpec(), run_id=dead_run)
    instance = crashed.instance  # type: ignore[attr-defined]
    if backend_name == "docker":
        # Left by a crash mid-creation, and a dead pool container (made without our code).
        for verb, labels in (("create", [f"jetty.run={dead_run}"]), ("run", ["jetty.pool=1"])):
            scope = f"jetty.scope={crashed.scope}"  # type: ignore[attr-defined]
            args = [arg for label in [*labels, "jetty.sandbox=1", scope, f"jetty.instance={instance}"] for arg in ("--label", label)]
            # `run ... true` leaves an exited container: a pool whose owner is gone.
            subprocess.run(["docker", verb, *args, IMAGE, "true"], capture_output=True, timeout=30, check=True)
    else:
        # The work directory of a pool sandbox whose process died with its gateway.
        dead = settings.data_dir / "sandboxes" / "0badc0ffee00"
        (dead / "app").mkdir(parents=True)
        (dead / "meta.json").write_text(json.dumps({"run_id": None, "instance": instance, "pid": 1, "created": 0}))

    async def is_run_active(run_id: str) -> bool:
        # Other tests run in parallel on the same engine: only our dead run is over.
        return run_id != dead_run

    service = SandboxService(settings, backend=backend_name, pool_size=0, is_run_active=is_run_active)
    await service.start()  # reaps at start
    try:
        left = [r for r in await service.backend.list_records() if r.instance == instance]
        assert [r.run_id for r in left] == [alive_run]
        assert (await keep.exec("echo still-here")).stdout == b"still-here\n"
    finally:
        await service.stop()
        await keep.destroy()
    if backend_name == "local":
        assert not any(
            json.loads((p / "meta.json").read_text()).get("run_id") == dead_run
            for p in (settings.data_dir / "sandboxes").iterdir()
        )
        cgroups = crashed.cgroups  # type: ignore[attr-defined]
        if cgroups is not None:
            assert not any((parent / dead_sandbox.id).exists() for parent in cgroups.parents.values())
