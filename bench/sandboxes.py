"""Sandbox speed: acquire (cold and warm pool) and exec round trip, for both backends.

Run: .venv/bin/python bench/sandboxes.py   (figures go in bench/README.md "## Sandboxes")
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.settings import Settings  # noqa: E402
from sandboxes import SandboxError, SandboxService, SandboxSpec  # noqa: E402

COLD, WARM, EXECS = 10, 10, 200


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000


def line(name: str, samples: list[float]) -> str:
    return f"| {name} | {pct(samples, 0.5):.1f} | {pct(samples, 0.95):.1f} | {len(samples)} |"


async def bench(backend: str, data_dir: Path) -> list[str]:
    async def every_run_is_active(run_id: str) -> bool:
        return True

    settings = Settings(data_dir=data_dir, sandbox_reap_interval_s=3600)
    service = SandboxService(settings, backend=backend, pool_size=2, is_run_active=every_run_is_active)
    await service.start()
    rows = []
    try:
        cold = []
        for i in range(COLD):
            started = time.perf_counter()
            sandbox = await service.acquire(SandboxSpec(memory_mb=512), f"bench-cold-{i}")  # not poolable: cold
            cold.append(time.perf_counter() - started)
            await service.release(sandbox)
        warm = []
        for i in range(WARM):
            await service.wait_pool_full(60)
            started = time.perf_counter()
            sandbox = await service.acquire(SandboxSpec(), f"bench-warm-{i}")
            warm.append(time.perf_counter() - started)
            await service.release(sandbox)
        sandbox = await service.acquire(SandboxSpec(), "bench-exec")
        execs = []
        for _ in range(EXECS):
            started = time.perf_counter()
            result = await sandbox.exec(["true"])
            execs.append(time.perf_counter() - started)
            assert result.exit_code == 0
        await service.release(sandbox)
        rows += [
            line(f"{backend}: acquire, cold", cold),
            line(f"{backend}: acquire, warm pool", warm),
            line(f"{backend}: exec `true` round trip", execs),
        ]
    finally:
        await service.stop()
    return rows


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    print("| measure | p50 ms | p95 ms | n |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="jetty-bench-") as tmp:
        for backend in ("docker", "local"):
            try:
                for row in await bench(backend, Path(tmp)):
                    print(row, flush=True)
            except SandboxError as exc:
                print(f"| {backend}: unavailable ({exc}) | | | |")


if __name__ == "__main__":
    asyncio.run(main())
