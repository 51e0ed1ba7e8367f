"""Turning a relayed SSE stream back into the `chat.completion` it stands for.

Runs after the last byte went to the client, so the stream itself is never slowed
by it. Follows the OpenAI streaming format
(https://platform.openai.com/docs/api-reference/chat-streaming): content and
tool-call argument deltas concatenate per choice and per tool-call index; the last
chunk may carry `usage` (with `stream_options.include_usage`).
"""

from __future__ import annotations

from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode


def iter_events(data: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of the `data:` lines, `[DONE]` and undecodable lines skipped."""
    events = []
    for line in data.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            event = _decode(payload)
        except msgspec.DecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _merge_tool_calls(target: list[dict[str, Any]], deltas: list[Any]) -> None:
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", len(target))
        while len(target) <= index:
            target.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = target[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


def assemble_completion(data: bytes) -> dict[str, Any] | None:
    """The chat.completion a stream amounts to, or None when it held no chunk."""
    events = iter_events(data)
    if not events:
        return None
    first = events[0]
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for event in events:
        if isinstance(event.get("usage"), dict):
            usage = event["usage"]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            merged = choices.setdefault(
                index, {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            message = merged["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            for text_field in ("content", "refusal", "reasoning_content"):
                if isinstance(delta.get(text_field), str):
                    message[text_field] = (message.get(text_field) or "") + delta[text_field]
            if delta.get("tool_calls"):
                _merge_tool_calls(message.setdefault("tool_calls", []), delta["tool_calls"])
            if delta.get("function_call"):
                legacy = message.setdefault("function_call", {"name": "", "arguments": ""})
                legacy["name"] += delta["function_call"].get("name") or ""
                legacy["arguments"] += delta["function_call"].get("arguments") or ""
            if choice.get("finish_reason"):
                merged["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                merged.setdefault("logprobs", {"content": []})["content"].extend(logprobs["content"])
    completion: dict[str, Any] = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint"):
        completion["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        completion["usage"] = usage
    return completion
