"""Runbook-mode speed: gateway overhead per agent step, a 5-step run's wall time, 20 at once.

A real gateway process, a scripted OpenAI-compatible upstream on loopback (answers in
~1 ms), real sandboxes. Overhead of step i = time between two model answers minus the
next model call's latency minus the commands' own time: what the gateway adds
(recording, routing, tool dispatch, sandbox round trip bookkeeping).

Run: .venv/bin/python bench/runbooks.py [local|docker ...]   (figures: bench/README.md "## Runbooks")
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.runbooks.conftest import docker_available, run_gateway_env  # noqa: E402
from tests.runbooks.scripted import ScriptedModel, bash, finish, tool_turn  # noqa: E402
from tests.support.gateway import GatewayProcess  # noqa: E402
from tests.support.upstream import UpstreamServer  # noqa: E402

RUNS, CONCURRENT = 10, 20


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _t(raw: str) -> float:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000


def step_overheads(trajectory: dict[str, Any]) -> list[float]:
    steps = trajectory["steps"]
    llm = [i for i, s in enumerate(steps) if s["type"] == "llm_call"]
    out = []
    for a, b in zip(llm, llm[1:], strict=False):
        gap = _t(steps[b]["created_at"]) - _t(steps[a]["created_at"])
        command = sum(s["data"].get("duration_ms", 0) for s in steps[a:b] if s["type"] == "observation")
        out.append(gap - steps[b]["data"]["latency_ms"] - command)
    return out


def run_once(client: httpx.Client, marker: str) -> tuple[float, dict[str, Any]]:
    book = f"---\nversion: '1.0.0'\n---\n# Bench {marker}\nRun the steps.\n"
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json={"model": "scripted", "messages": [], "jetty": {"collection": "bench", "runbook": book}})
    wall = (time.perf_counter() - started) * 1000
    body = response.json()
    assert response.status_code == 200 and body["jetty"]["status"] == "succeeded", body
    return wall, body


def bench(backend: str, upstream: UpstreamServer, model: ScriptedModel) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"jetty-bench-{backend}-"))
    env = run_gateway_env(tmp, upstream, backend, JETTY_SANDBOX_POOL_SIZE="4" if backend == "docker" else "0", JETTY_LOG_LEVEL="WARNING")
    gateway = GatewayProcess(env=env).start()
    marker = model.script(f"bench-{backend}", *[tool_turn(bash("true")) for _ in range(4)], tool_turn(finish({"ok": True})))
    rows = []
    try:
        with gateway.admin(timeout=300) as client:
            run_once(client, marker)  # warm-up: imports, price table, first sandbox
            walls, overheads = [], []
            for _ in range(RUNS):
                if backend == "docker":
                    time.sleep(1.0)  # let the warm pool refill, as between real requests
                wall, body = run_once(client, marker)
                walls.append(wall)
                trajectory = client.get(f"/v1/trajectories/{body['jetty']['trajectory_id']}").json()
                overheads += step_overheads(trajectory)
            started = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENT) as pool:
                results = list(pool.map(lambda _: run_once(client, marker)[0], range(CONCURRENT)))
            together = (time.perf_counter() - started) * 1000
        rows.append(f"| {backend}: gateway overhead per agent step | {pct(overheads, 0.5):.1f} | {pct(overheads, 0.95):.1f} | {len(overheads)} | < 20 |")
        rows.append(f"| {backend}: 5-step scripted run, wall | {pct(walls, 0.5):.0f} | {pct(walls, 0.95):.0f} | {len(walls)} | |")
        rows.append(f"| {backend}: {CONCURRENT} concurrent runs, all succeeded, total wall | {together:.0f} | (slowest run {max(results):.0f}) | {CONCURRENT} | no error |")
    finally:
        gateway.stop()
    return rows


def main() -> None:
    backends = sys.argv[1:] or ["local", *(["docker"] if docker_available() else [])]
    rows = ["| measure | p50 ms | p95 ms | n | aim |", "| --- | --- | --- | --- | --- |"]
    with UpstreamServer() as upstream:
        model = ScriptedModel(upstream)
        for backend in backends:
            rows += bench(backend, upstream, model)
    print("\n".join(rows))
    print(json.dumps({"backends": backends}))


if __name__ == "__main__":
    main()
