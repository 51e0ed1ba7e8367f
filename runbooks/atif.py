"""Export a runbook run in ATIF v1.4, the Agent Trajectory Interchange Format used by Harbor.

Spec: https://github.com/laude-institute/harbor/blob/main/docs/rfcs/0001-trajectory-format.md
One ATIF agent step per `llm_call`, carrying its tool calls and their observations.
"""

from __future__ import annotations

import json
from typing import Any

from gateway import __version__
from gateway.errors import Unprocessable

SCHEMA_VERSION = "ATIF-v1.4"


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _observation_text(data: dict[str, Any]) -> str:
    if "exit_code" in data:
        text = f"exit code {data['exit_code']}\n{data.get('stdout', '')}"
        return text + (f"\n--- stderr\n{data['stderr']}" if data.get("stderr") else "")
    if "content" in data:
        return _text(data["content"])
    shown = {k: v for k, v in data.items() if k not in ("tool_call_id", "name")}
    return _text(shown)


def to_atif(trajectory: dict[str, Any]) -> dict[str, Any]:
    """The trajectory (API shape, with steps) as an ATIF document."""
    steps: list[dict[str, Any]] = []
    by_call: dict[str, dict[str, Any]] = {}
    first_input_done = False
    for step in trajectory.get("steps") or []:
        data, kind, at = step.get("data") or {}, step.get("type"), step.get("created_at")
        if kind == "llm_call":
            if not first_input_done:
                for message in data.get("input") or []:
                    role = message.get("role")
                    if role in ("system", "user", "developer"):
                        source = "system" if role in ("system", "developer") else "user"
                        steps.append(
                            {
                                "step_id": len(steps) + 1,
                                "timestamp": at,
                                "source": source,
                                "message": _text(message.get("content")),
                            }
                        )
                first_input_done = True
            output = data.get("output") or {}
            usage = data.get("usage") or {}
            agent_step: dict[str, Any] = {
                "step_id": len(steps) + 1,
                "timestamp": at,
                "source": "agent",
                "model_name": data.get("model"),
                "message": _text(output.get("content")),
                "metrics": {
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens": usage.get("completion_tokens"),
                    "cost_usd": data.get("cost_usd"),
                    "extra": {"latency_ms": data.get("latency_ms")},
                },
            }
            calls = []
            for call in output.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except (TypeError, ValueError):
                    args = {"raw": function.get("arguments")}
                calls.append(
                    {
                        "tool_call_id": call.get("id"),
                        "function_name": function.get("name"),
                        "arguments": args,
                    }
                )
                by_call[call.get("id") or ""] = agent_step
            if calls:
                agent_step["tool_calls"] = calls
                agent_step["observation"] = {"results": []}
            steps.append(agent_step)
        elif kind == "observation":
            owner = by_call.get(data.get("tool_call_id") or "")
            if owner is not None:
                owner["observation"]["results"].append(
                    {"source_call_id": data.get("tool_call_id"), "content": _observation_text(data)}
                )
        elif kind in ("error", "lifecycle"):
            steps.append(
                {
                    "step_id": len(steps) + 1,
                    "timestamp": at,
                    "source": "system",
                    "message": data.get("message") or data.get("event") or kind,
                    "extra": {"type": kind, **data},
                }
            )
    usage = trajectory.get("usage") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "session_id": trajectory["id"],
        "agent": {"name": "jetty", "version": __version__, "model_name": trajectory.get("model")},
        "steps": steps,
        "final_metrics": {
            "total_prompt_tokens": usage.get("prompt_tokens"),
            "total_completion_tokens": usage.get("completion_tokens"),
            "total_cost_usd": trajectory.get("cost_usd"),
            "total_steps": len(steps),
        },
        "extra": {
            "status": trajectory.get("status"),
            "outputs": trajectory.get("outputs"),
            "runbook": trajectory.get("runbook"),
        },
    }


def export_trajectory(body: dict[str, Any], format: str) -> dict[str, Any]:
    """`GET /v1/trajectories/{id}?format=…` exporter the trajectories slice calls."""
    if format == "atif":
        return to_atif(body)
    raise Unprocessable(
        f"Unknown format {format!r} (use jetty or atif)", code="unknown_format", param="format"
    )
