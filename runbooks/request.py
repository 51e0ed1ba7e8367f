"""The `jetty` block of a chat completion: what a client may ask of a runbook run.

Unknown fields are ignored (DESIGN.md); a wrong one is a 422 naming the field
(`param` is `jetty.<field>`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Unprocessable
from runbooks.collection_service import check_collection_name
from runbooks.format import parse_duration, parse_memory_mb

AGENTS = ("jetty",)
MAX_INLINE_FILE_BYTES = 10 * 1024 * 1024
MAX_TIMEOUT_S = 24 * 3600.0
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class InlineFile:
    name: str
    content: bytes


@dataclass(slots=True)
class RunRequest:
    """A validated runbook request; `runbook_text` is set for inline runbooks."""

    collection: str
    runbook_url: str | None
    runbook_text: str | None
    model: str | None
    messages: list[dict[str, Any]]
    stream: bool = False
    is_async: bool = False
    task: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    file_ids: list[str] = field(default_factory=list)
    inline_files: list[InlineFile] = field(default_factory=list)
    timeout_s: float | None = None
    sandbox: dict[str, Any] = field(default_factory=dict)
    model_provider: str | None = None
    webhook_url: str | None = None
    max_steps: int | None = None
    max_cost_usd: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    jetty: dict[str, Any] = field(default_factory=dict)  # the block as sent, for replay


def _bad(field_name: str, message: str, code: str = "invalid_jetty_field") -> Unprocessable:
    return Unprocessable(f"jetty.{field_name}: {message}", code=code, param=f"jetty.{field_name}")


def _system_text(messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        if message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return None


def _files(raw: Any) -> tuple[list[str], list[InlineFile]]:
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise _bad("files", "must be a list of file ids or {name, content, encoding} objects")
    ids: list[str] = []
    inline: list[InlineFile] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            ids.append(item)
            continue
        if isinstance(item, dict) and isinstance(item.get("id"), str) and "content" not in item:
            ids.append(item["id"])
            continue
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("content"), str)
        ):
            raise _bad(f"files[{i}]", "must be a file id or {name, content, encoding}")
        encoding = item.get("encoding") or "utf-8"
        if encoding == "base64":
            try:
                content = base64.b64decode(item["content"], validate=True)
            except (binascii.Error, ValueError):
                raise _bad(f"files[{i}].content", "is not valid base64") from None
        elif encoding in ("utf-8", "utf8", "text"):
            content = item["content"].encode("utf-8")
        else:
            raise _bad(f"files[{i}].encoding", "must be utf-8 or base64")
        if len(content) > MAX_INLINE_FILE_BYTES:
            raise _bad(f"files[{i}]", f"is larger than {MAX_INLINE_FILE_BYTES} bytes")
        inline.append(InlineFile(name=item["name"], content=content))
    return ids, inline


def _sandbox(jetty: dict[str, Any]) -> dict[str, Any]:
    raw = jetty.get("sandbox") or {}
    if not isinstance(raw, dict):
        raise _bad("sandbox", "must be an object {image, network, cpu, memory, timeout}")
    out: dict[str, Any] = {}
    try:
        if raw.get("image"):
            out["image"] = str(raw["image"])
        if raw.get("network") is not None:
            out["network"] = str(raw["network"])
        cpus = raw.get("cpu", raw.get("cpus"))
        if cpus is not None:
            out["cpus"] = float(cpus)
        memory = raw.get("memory", raw.get("memory_mb"))
        if memory is not None:
            out["memory_mb"] = parse_memory_mb(memory)
        timeout = raw.get("timeout", raw.get("timeout_s"))
        if timeout is not None:
            out["timeout_s"] = parse_duration(timeout)
    except (TypeError, ValueError) as exc:
        raise _bad("sandbox", str(exc)) from None
    snapshot = jetty.get("snapshot")
    if snapshot is not None:
        if not isinstance(snapshot, str) or not snapshot:
            raise _bad("snapshot", "must name an image")
        out.setdefault("image", snapshot)
    return out


def parse_run_request(body: dict[str, Any]) -> RunRequest:
    """Validate the body of a runbook-mode chat completion."""
    jetty = body.get("jetty")
    if not isinstance(jetty, dict):
        raise Unprocessable("`jetty` must be an object", code="invalid_jetty_field", param="jetty")
    collection = jetty.get("collection")
    if not isinstance(collection, str) or not collection:
        raise _bad("collection", "is required", code="missing_collection")
    check_collection_name(collection)
    agent = jetty.get("agent")
    if agent is not None and agent not in AGENTS:
        raise Unprocessable(
            f"jetty.agent {agent!r} is not run by this gateway; it runs: {', '.join(AGENTS)}",
            code="unsupported_agent",
            param="jetty.agent",
            details={"agents": list(AGENTS)},
        )
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise Unprocessable(
            "`messages` must be a list of message objects", code="invalid_body", param="messages"
        )
    runbook = jetty.get("runbook")
    runbook_url = jetty.get("runbook_url")
    runbook_text: str | None = None
    if runbook is True:
        runbook_text = _system_text(messages)
        if not runbook_text:
            raise _bad(
                "runbook", "is true but the request has no system message holding the runbook"
            )
    elif isinstance(runbook, str) and runbook.strip():
        runbook_text = runbook
    elif runbook not in (None, False):
        raise _bad("runbook", "must be the runbook's text, or true to use the system message")
    if runbook_url is not None and (not isinstance(runbook_url, str) or not runbook_url.strip()):
        raise _bad("runbook_url", "must be a URL")
    if runbook_text is None and runbook_url is None:
        raise _bad(
            "runbook_url",
            "give runbook_url, or the runbook inline as `runbook`",
            code="missing_runbook",
        )
    if runbook_text is not None and runbook_url is not None:
        raise _bad("runbook", "give runbook_url or runbook, not both")
    inputs = jetty.get("inputs", jetty.get("template_variables")) or {}
    if not isinstance(inputs, dict):
        raise _bad("inputs", "must be an object of name: value")
    timeout_s = jetty.get("timeout_s")
    if timeout_s is not None:
        try:
            timeout_s = parse_duration(timeout_s)
        except ValueError as exc:
            raise _bad("timeout_s", str(exc)) from None
        if timeout_s > MAX_TIMEOUT_S:
            raise _bad("timeout_s", f"must be at most {int(MAX_TIMEOUT_S)} seconds")
    max_steps = jetty.get("max_steps")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= 1000
    ):
        raise _bad("max_steps", "must be an integer between 1 and 1000")
    max_cost = jetty.get("max_cost_usd")
    if max_cost is not None and (
        isinstance(max_cost, bool) or not isinstance(max_cost, int | float) or max_cost <= 0
    ):
        raise _bad("max_cost_usd", "must be a positive number")
    task = jetty.get("task")
    if task is not None and (not isinstance(task, str) or not task.strip() or len(task) > 200):
        raise _bad("task", "must be a name of at most 200 characters")
    webhook_url = jetty.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str) or not webhook_url.startswith(("http://", "https://"))
    ):
        raise _bad("webhook_url", "must be an http(s) URL")
    labels = jetty.get("labels") or {}
    if not isinstance(labels, dict):
        raise _bad("labels", "must be an object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise Unprocessable("`model` must be a string", code="invalid_body", param="model")
    file_ids, inline_files = _files(jetty.get("files"))
    return RunRequest(
        collection=collection,
        runbook_url=runbook_url.strip() if isinstance(runbook_url, str) else None,
        runbook_text=runbook_text,
        model=model or None,
        messages=messages,
        stream=bool(body.get("stream")),
        is_async=bool(jetty.get("async")),
        task=task,
        inputs=dict(inputs),
        file_ids=file_ids,
        inline_files=inline_files,
        timeout_s=timeout_s,
        sandbox=_sandbox(jetty),
        model_provider=jetty.get("model_provider")
        if isinstance(jetty.get("model_provider"), str)
        else None,
        webhook_url=webhook_url,
        max_steps=max_steps,
        max_cost_usd=float(max_cost) if max_cost is not None else None,
        labels=labels,
        jetty=jetty,
    )
