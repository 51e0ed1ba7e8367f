"""The hot path: relay a chat completion to an OpenAI-compatible upstream, bytes as they come.

One keep-alive connection pool (the lean HTTP/1.1 client in `_http1*.py`) serves
every call; it is made in the app lifespan, never per request. The request body goes upstream as the client
sent it (re-encoded only when the deployment's model name differs); the response
body is not parsed here, so the client gets the provider's bytes unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import msgspec

from gateway.errors import ApiError, UpstreamTimeout, UpstreamUnreachable
from gateway.providers._deployments import Deployment
from gateway.providers._http1 import ClientError, Response
from gateway.providers._http1_pool import ConnectionPool, Target
from gateway.providers._reply import (
    JSON_HEADERS,
    SSE_HEADERS,
    AttemptFailed,
    UpstreamReply,
    error_from_upstream,
    is_retryable_status,
)

log = logging.getLogger(__name__)

# Upstream response headers a client may want (rate limits, request ids); the rest
# (lengths, encodings, hop-by-hop) describe the upstream hop, not ours.
_FORWARDED_PREFIXES = (b"x-ratelimit-", b"x-request-id", b"openai-", b"retry-after")
_MAX_ERROR_BODY = 64 * 1024


def describe_upstream(deployment: Deployment) -> str:
    """`host:port` of a deployment, for messages: never its path or query, which may hold keys."""
    if not deployment.api_base:
        return deployment.provider
    parts = urlsplit(deployment.api_base)
    return parts.netloc.rsplit("@", 1)[-1] or deployment.provider


def unreachable(deployment: Deployment, exc: BaseException) -> ApiError:
    reason = type(exc).__name__
    detail = str(exc).strip()
    if detail and len(detail) < 200 and (deployment.api_key is None or deployment.api_key not in detail):
        reason = f"{reason}: {detail}"
    return UpstreamUnreachable(
        f"Cannot reach the upstream of model {deployment.name!r} at {describe_upstream(deployment)} ({reason})"
    )


def timed_out(deployment: Deployment, timeout_s: float | None) -> ApiError:
    after = f" after {timeout_s:g}s" if timeout_s else ""
    return UpstreamTimeout(
        f"The upstream of model {deployment.name!r} at {describe_upstream(deployment)} did not answer{after}"
    )


class RelayReply(UpstreamReply):
    """An upstream response relayed as is."""

    def __init__(self, response: Response, deployment: Deployment, *, is_stream: bool, read_timeout_s: float) -> None:
        self._response = response
        self._read_timeout_s = read_timeout_s
        self._closed = False
        self.deployment = deployment
        self.attempts = 1
        self.status = response.status
        self.is_stream = is_stream
        headers = list(SSE_HEADERS if is_stream else JSON_HEADERS)
        has_content_type = False
        for name, value in response.headers:
            lowered = name.lower()
            if lowered == b"content-type":
                if not has_content_type and value:
                    headers[0] = (b"content-type", value)
                    has_content_type = True
            elif lowered.startswith(_FORWARDED_PREFIXES):
                headers.append((lowered, value))
        self.headers = headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError:
            raise timed_out(self.deployment, self._read_timeout_s) from None
        except ClientError as exc:
            raise unreachable(self.deployment, exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        read_chunk = self._response.read_chunk
        try:
            while chunk := await read_chunk():
                yield chunk
        except TimeoutError:
            raise timed_out(self.deployment, self._read_timeout_s) from None
        except ClientError as exc:
            raise unreachable(self.deployment, exc) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.deployment.in_flight -= 1
            # A complete response's connection is already back in the pool; otherwise
            # this drops the connection, so the upstream stops generating for nobody.
            self._response.close()


class Relay:
    """The connection pool to OpenAI-compatible upstreams, with the configured timeouts."""

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, pool_size: int = 1000) -> None:
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        # Prepared once per deployment (URL parsed, head bytes built), not per call.
        self._targets: dict[str, tuple[Target, dict[str, str]]] = {}

    async def open(self) -> None:
        self._pool = ConnectionPool(limit=self._pool_size, connect_timeout_s=self._connect_timeout_s, keepalive_s=30)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def send(self, deployment: Deployment, body: dict[str, Any], raw: bytes, *, stream: bool) -> UpstreamReply:
        """One attempt; raise `AttemptFailed` (retryable or not) on any failure."""
        pool = self._pool
        if pool is None:
            raise AttemptFailed(unreachable(deployment, RuntimeError("upstream pool is closed")), retryable=False)
        data = raw if body.get("model") == deployment.upstream_model else msgspec.json.encode(
            {**body, "model": deployment.upstream_model}
        )
        assert deployment.url is not None
        prepared = self._targets.get(deployment.url)
        if prepared is None or prepared[1] is not deployment.headers:
            try:
                prepared = (Target(deployment.url, deployment.headers), deployment.headers)
            except ValueError as exc:
                raise AttemptFailed(unreachable(deployment, exc), retryable=False) from None
            self._targets[deployment.url] = prepared
        try:
            # A whole answer must come within the total; a stream may last longer than
            # any total, so what must not last there is silence.
            response = await pool.send(prepared[0], data, timeout_s=self._timeout_s, is_stream=stream)
        except TimeoutError:
            # The request went out and no answer came: retrying would double the wait
            # and maybe the work, so the caller hears about it at once.
            raise AttemptFailed(timed_out(deployment, self._timeout_s), retryable=False) from None
        except (ClientError, OSError) as exc:
            raise AttemptFailed(unreachable(deployment, exc), retryable=True) from None
        if response.status >= 400:
            try:
                error_body = (await asyncio.wait_for(response.read(), 5))[:_MAX_ERROR_BODY]
            except (TimeoutError, ClientError):
                error_body = b""
            finally:
                response.close()
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}
            retry_after = response.header(b"retry-after")
            if retry_after is not None:
                headers["Retry-After"] = retry_after.decode("latin-1")
            error = error_from_upstream(response.status, error_body, headers)
            raise AttemptFailed(error, retryable=is_retryable_status(response.status), upstream_status=response.status)
        return RelayReply(response, deployment, is_stream=stream, read_timeout_s=self._timeout_s)
