"""What an upstream answered, the same shape whether relayed or translated.

The passthrough writes a reply to the client without knowing which path produced
it: a status, the headers worth forwarding, then the body in one piece or as the
chunks arrive. `close()` is always called; on a reply not fully read it drops the
upstream connection, which is how a client disconnect reaches the provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from gateway.errors import ApiError, UpstreamError
from gateway.providers._deployments import Deployment

JSON_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class UpstreamReply:
    """A successful (status < 400) upstream answer, not yet read."""

    deployment: Deployment
    attempts: int
    status: int
    headers: list[tuple[bytes, bytes]]
    is_stream: bool

    async def read(self) -> bytes:
        """The whole body (non-streamed replies)."""
        raise NotImplementedError

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (streamed replies): SSE bytes, `data: [DONE]` included."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the upstream; drops the connection if the body was not fully read."""
        raise NotImplementedError


class AttemptFailed(Exception):
    """One attempt failed; `retryable` says whether the next deployment may be tried."""

    def __init__(self, error: ApiError, *, retryable: bool, upstream_status: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.upstream_status = upstream_status


def error_from_upstream(status: int, body: bytes, headers: dict[str, str] | None = None) -> ApiError:
    """The client-facing error for an upstream error answer: its status, message, code and param."""
    message = code = param = None
    try:
        decoded: Any = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        param = error.get("param")
    elif isinstance(error, str):
        message = error
    elif isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        message = decoded["message"]
    if not message:
        text = body[:300].decode("utf-8", "replace").strip()
        message = f"Upstream answered HTTP {status}" + (f": {text}" if text else "")
    forwarded = {}
    if headers and status == 429 and headers.get("Retry-After"):
        forwarded["Retry-After"] = headers["Retry-After"]
    return UpstreamError(
        str(message),
        status=status if 400 <= status <= 599 else 502,
        code=str(code) if code else "upstream_error",
        param=str(param) if isinstance(param, str) else None,
        details={"upstream_status": status},
        headers=forwarded,
    )


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500
