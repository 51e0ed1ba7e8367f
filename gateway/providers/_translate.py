"""Providers that do not speak the OpenAI format (Anthropic, Gemini, Bedrock, ...), via litellm.

litellm takes seconds to import, so it is imported here only, on first use, in a
worker thread (or preloaded after start when the models file needs it); the CLI and
the OpenAI-compatible hot path never import this module's dependency.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import anyio
import msgspec

from gateway.errors import ApiError, UpstreamError
from gateway.providers._deployments import Deployment
from gateway.providers._relay import timed_out, unreachable
from gateway.providers._reply import (
    JSON_HEADERS,
    SSE_HEADERS,
    AttemptFailed,
    UpstreamReply,
    is_retryable_status,
)

log = logging.getLogger(__name__)

_litellm: ModuleType | None = None
_import_lock = threading.Lock()


def _import_litellm() -> ModuleType:
    global _litellm
    with _import_lock:
        if _litellm is None:
            module: Any = importlib.import_module("litellm")
            module.suppress_debug_info = True
            module.drop_params = True  # an OpenAI param a provider lacks is dropped, not an error
            _litellm = module
    return _litellm


async def load_litellm() -> ModuleType:
    """litellm, imported once in a worker thread so the event loop never stalls on it."""
    if _litellm is not None:
        return _litellm
    return await anyio.to_thread.run_sync(_import_litellm)


def _error_from_exception(deployment: Deployment, exc: Exception, timeout_s: float) -> AttemptFailed:
    litellm = _litellm
    assert litellm is not None
    if isinstance(exc, litellm.exceptions.Timeout | asyncio.TimeoutError):
        return AttemptFailed(timed_out(deployment, timeout_s), retryable=False)
    if isinstance(exc, litellm.exceptions.APIConnectionError):
        return AttemptFailed(unreachable(deployment, exc), retryable=True)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and 400 <= status <= 599 else 502
    message = str(getattr(exc, "message", None) or exc).strip() or f"Upstream answered HTTP {status}"
    # litellm prefixes messages with its class path ("litellm.RateLimitError: ..."); keep the provider's part.
    message = message.split(": ", 1)[1] if message.startswith("litellm.") and ": " in message else message
    message = _provider_message(message)
    if deployment.api_key:
        message = message.replace(deployment.api_key, "***")
    error = UpstreamError(message[:2000], status=status, code="upstream_error", details={"upstream_status": status})
    return AttemptFailed(error, retryable=is_retryable_status(status), upstream_status=status)


def _provider_message(message: str) -> str:
    """The provider's own error message when litellm wrapped its JSON body (`XException - {...}`)."""
    start = message.find("{")
    if start < 0:
        return message
    try:
        body = msgspec.json.decode(message[start:])
    except msgspec.DecodeError:
        return message
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("message") if isinstance(error, dict) else error
    return inner if isinstance(inner, str) and inner else message


class TranslatedReply(UpstreamReply):
    """A litellm answer, already in the OpenAI format."""

    def __init__(self, deployment: Deployment, *, body: bytes | None = None, stream: Any = None, timeout_s: float) -> None:
        self.deployment = deployment
        self.attempts = 1
        self.status = 200
        self.is_stream = stream is not None
        self.headers = list(SSE_HEADERS if self.is_stream else JSON_HEADERS)
        self._body = body
        self._stream = stream
        self._timeout_s = timeout_s
        self._closed = False

    async def read(self) -> bytes:
        assert self._body is not None
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
        except ApiError:
            raise
        except Exception as exc:
            raise _error_from_exception(self.deployment, exc, self._timeout_s).error from None
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.deployment.in_flight -= 1


async def send_translated(deployment: Deployment, body: dict[str, Any], *, stream: bool, timeout_s: float) -> UpstreamReply:
    """One attempt through litellm; raise `AttemptFailed` on failure."""
    litellm = await load_litellm()
    kwargs = {**body, **deployment.litellm_kwargs}
    kwargs.update(model=deployment.model, stream=stream, num_retries=0, timeout=timeout_s)
    try:
        response = await litellm.acompletion(**kwargs)
    except Exception as exc:
        raise _error_from_exception(deployment, exc, timeout_s) from None
    if stream:
        return TranslatedReply(deployment, stream=response, timeout_s=timeout_s)
    return TranslatedReply(deployment, body=msgspec.json.encode(response.model_dump(exclude_none=True)), timeout_s=timeout_s)
