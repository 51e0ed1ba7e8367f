"""The answers of runbook mode: a `chat.completion` with a `jetty` object, or a 202 to poll.

The official `openai` SDK parses these: extra fields (`jetty`) are kept on the model.
"""

from __future__ import annotations

import json
from typing import Any

from runbooks.models import RunGrade
from runbooks.results import grade_to_api

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def completion_body(
    run_id: str, model: str, created: int, content: str, usage: dict[str, int]
) -> dict[str, Any]:
    """The stored chat.completion of a finished run (the `jetty` object is added when answering)."""
    return {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def _duration_s(trajectory: dict[str, Any]) -> float | None:
    latency = (trajectory.get("timings") or {}).get("latency_ms")
    return round(latency / 1000, 3) if latency is not None else None


def jetty_block(
    trajectory: dict[str, Any], grades: list[RunGrade], files: list[dict[str, Any]]
) -> dict[str, Any]:
    run_id = trajectory["id"]
    return {
        "trajectory_id": run_id,
        "status": trajectory["status"],
        "outputs": trajectory.get("outputs"),
        "files": files,
        "grades": [grade_to_api(g) for g in grades],
        "cost_usd": trajectory.get("cost_usd"),
        "duration_s": _duration_s(trajectory),
        "error": trajectory.get("error"),
        "replay_of": trajectory.get("replay_of"),
        "poll_url": f"/v1/trajectories/{run_id}",
    }


def final_answer(
    trajectory: dict[str, Any], grades: list[RunGrade], files: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat.completion a client gets for a finished run."""
    body = trajectory.get("response")
    if not isinstance(body, dict) or "choices" not in body:
        error = trajectory.get("error") or {}
        content = error.get("message") or json.dumps(trajectory.get("outputs"))
        created = 0
        body = completion_body(
            trajectory["id"],
            trajectory.get("model") or "",
            created,
            content,
            trajectory.get("usage") or {},
        )
    return {**body, "jetty": jetty_block(trajectory, grades, files)}


def pending_answer(run_id: str, status: str) -> dict[str, Any]:
    """The 202 body: where to poll."""
    return {
        "object": "runbook.run",
        "trajectory_id": run_id,
        "status": status,
        "poll_url": f"/v1/trajectories/{run_id}",
        "events_url": f"/v1/trajectories/{run_id}/events",
    }


def chunk(
    run_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    jetty: Any = None,
    usage: Any = None,
) -> bytes:
    """One `chat.completion.chunk` SSE event; `jetty` carries the run event."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    if jetty is not None:
        body["jetty"] = jetty
    return b"data: " + json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n\n"
