"""Reading and checking a chat completion request body.

Only what the gateway itself needs is checked (`model`, `messages`, `stream`,
`metadata`); everything else goes upstream untouched, where the provider judges it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.types import Receive, ReceiveMessage, Scope

from gateway.errors import BadRequest, PayloadTooLarge

_decode = msgspec.json.Decoder().decode


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The raw request body; 413 past `limit` bytes, before reading it all when the length says so."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    raise _too_large(limit)
            except ValueError:
                raise BadRequest("Invalid Content-Length header", code="invalid_request") from None
            break
    message = await receive()
    body: bytes = message.get("body", b"")  # type: ignore[assignment]
    if not message.get("more_body"):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts: list[bytes] = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The decoded body; 400 naming the field when `model`, `messages` or their types are wrong."""
    if not raw:
        raise BadRequest("Request body is empty: send a JSON chat completion request", code="invalid_json")
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object", code="invalid_body")
    if "jetty" in body:
        return body  # runbook mode checks its own body
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("`model` is required and must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("`messages` is required and must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid(f"`messages[{index}]` must be an object with a string `role`", f"messages[{index}].role")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("`stream` must be a boolean", "stream")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("`metadata` must be an object", "metadata")
    return body


def _invalid(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_body", param=param)


def replay_body(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that hands out the already read body once, then defers to the server."""
    is_replayed = False

    async def replay_receive() -> ReceiveMessage:
        nonlocal is_replayed
        if not is_replayed:
            is_replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay_receive
