"""The agent's tools, as OpenAI function tools, and how each runs in the sandbox.

Only tools touch the sandbox; the model and its provider keys stay in the gateway.
An observation is stored whole up to `STORE_CAP` and shown to the model cut to
`MODEL_CAP` (head and tail, since errors are usually at the end).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandboxes import Sandbox, SandboxError

log = logging.getLogger(__name__)

MODEL_CAP = 16 * 1024
STORE_CAP = 256 * 1024
DEFAULT_COMMAND_TIMEOUT_S = 300.0
MAX_COMMAND_TIMEOUT_S = 3600.0


def _function(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def tool_definitions(outputs_schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tools offered to the model; `finish.result` carries the outputs schema when declared."""
    result_schema: dict[str, Any] = dict(outputs_schema) if outputs_schema else {"type": "object"}
    result_schema.setdefault("description", "The run's structured result.")
    return [
        _function(
            "bash",
            "Run a shell command in the sandbox (cwd /app). Returns exit code, stdout and stderr.",
            {
                "command": {"type": "string", "description": "The command, run with /bin/sh -c."},
                "timeout_s": {
                    "type": "number",
                    "description": "Wall-clock limit in seconds (default 300).",
                },
            },
            ["command"],
        ),
        _function(
            "read_file",
            "Read a text file from the sandbox.",
            {"path": {"type": "string"}},
            ["path"],
        ),
        _function(
            "write_file",
            "Write a text file in the sandbox (parent directories are created).",
            {"path": {"type": "string"}, "content": {"type": "string"}},
            ["path", "content"],
        ),
        _function(
            "list_files",
            "List a directory in the sandbox.",
            {"path": {"type": "string", "description": "Directory (default /app)."}},
            [],
        ),
        _function(
            "finish",
            "Call once the runbook is done, with its result. Deliverables must already be in /app/results.",
            {"result": result_schema},
            ["result"],
        ),
    ]


def cut(text: str, cap: int) -> tuple[str, bool]:
    """`text` within `cap` characters, keeping head and tail; (text, truncated)."""
    if len(text) <= cap:
        return text, False
    half = cap // 2
    return f"{text[:half]}\n…[{len(text) - cap} characters cut]…\n{text[-half:]}", True


@dataclass(slots=True)
class Observation:
    """A tool's outcome: `data` is stored (capped), `for_model` is what the model reads."""

    data: dict[str, Any]
    for_model: str
    is_error: bool = False


def _error(message: str) -> Observation:
    return Observation(data={"error": message}, for_model=f"error: {message}", is_error=True)


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool arguments as an object; raises ValueError with a message for the model."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("arguments must be a JSON object")
    return parsed


async def run_tool(
    sandbox: Sandbox, name: str, args: dict[str, Any], env: Mapping[str, str]
) -> Observation:
    """Run one tool (not `finish`) in the sandbox; failures become error observations."""
    try:
        if name == "bash":
            return await _bash(sandbox, args, env)
        if name == "read_file":
            path = _path_arg(args)
            data = await sandbox.read_file(path)
            text = data.decode("utf-8", errors="replace")
            stored, truncated = cut(text, STORE_CAP)
            shown, _ = cut(text, MODEL_CAP)
            return Observation(
                data={"path": path, "content": stored, "bytes": len(data), "truncated": truncated},
                for_model=shown,
            )
        if name == "write_file":
            path = _path_arg(args)
            content = args.get("content")
            if not isinstance(content, str):
                return _error("`content` must be a string")
            await sandbox.write_file(path, content.encode("utf-8"))
            return Observation(
                data={"path": path, "bytes": len(content.encode())}, for_model=f"wrote {path}"
            )
        if name == "list_files":
            path = args.get("path") or "/app"
            if not isinstance(path, str):
                return _error("`path` must be a string")
            entries = await sandbox.list_files(path)
            listing = [{"path": e.path, "size": e.size, "is_dir": e.is_dir} for e in entries[:1000]]
            lines = "\n".join(
                f"{e['path']}{'/' if e['is_dir'] else ''}\t{e['size']}" for e in listing
            )
            shown, _ = cut(lines or "(empty)", MODEL_CAP)
            return Observation(data={"path": path, "entries": listing}, for_model=shown)
    except SandboxError as exc:
        return _error(str(exc))
    except ValueError as exc:
        return _error(str(exc))
    return _error(f"unknown tool {name!r}; use bash, read_file, write_file, list_files or finish")


def _path_arg(args: dict[str, Any]) -> str:
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("`path` must be a non-empty string")
    return path


async def _bash(sandbox: Sandbox, args: dict[str, Any], env: Mapping[str, str]) -> Observation:
    command = args.get("command", args.get("cmd"))
    if not isinstance(command, str) or not command.strip():
        return _error("`command` must be a non-empty string")
    timeout = args.get("timeout_s")
    timeout_s = DEFAULT_COMMAND_TIMEOUT_S
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        timeout_s = min(float(timeout), MAX_COMMAND_TIMEOUT_S)
    started = time.monotonic()
    result = await sandbox.exec(command, timeout_s=timeout_s, env=dict(env), workdir="/app")
    stdout, stderr = result.stdout_text, result.stderr_text
    stored_out, cut_out = cut(stdout, STORE_CAP)
    stored_err, cut_err = cut(stderr, STORE_CAP)
    data = {
        "exit_code": result.exit_code,
        "stdout": stored_out,
        "stderr": stored_err,
        "truncated": result.truncated or cut_out or cut_err,
        "timed_out": result.timed_out,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if result.warning:
        data["warning"] = result.warning
    shown_out, _ = cut(stdout, MODEL_CAP)
    shown_err, _ = cut(stderr, MODEL_CAP // 2)
    status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
    text = f"{status}\n--- stdout\n{shown_out}"
    if stderr:
        text += f"\n--- stderr\n{shown_err}"
    return Observation(data=data, for_model=text, is_error=not result.ok)
