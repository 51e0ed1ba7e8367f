"""The hot path: relay a chat completion to an OpenAI-compatible upstream, bytes as they come.

One aiohttp session (a keep-alive connection pool) serves every call; it is made in
the app lifespan, never per request. The request body goes upstream as the client
sent it (re-encoded only when the deployment's model name differs); the response
body is not parsed here, so the client gets the provider's bytes unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import ApiError, UpstreamTimeout, UpstreamUnreachable
from gateway.providers._deployments import Deployment
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
_FORWARDED_PREFIXES = ("x-ratelimit-", "x-request-id", "openai-", "retry-after")
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
    """An aiohttp response relayed as is."""

    def __init__(self, response: aiohttp.ClientResponse, deployment: Deployment, *, is_stream: bool, read_timeout_s: float) -> None:
        self._response = response
        self._read_timeout_s = read_timeout_s
        self._closed = False
        self.deployment = deployment
        self.attempts = 1
        self.status = response.status
        self.is_stream = is_stream
        headers = list(SSE_HEADERS if is_stream else JSON_HEADERS)
        content_type = response.headers.get("Content-Type")
        if content_type:
            headers[0] = (b"content-type", content_type.encode("latin-1"))
        for name, value in response.headers.items():
            lowered = name.lower()
            if lowered.startswith(_FORWARDED_PREFIXES):
                headers.append((lowered.encode("latin-1"), value.encode("latin-1")))
        self.headers = headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise timed_out(self.deployment, self._read_timeout_s) from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.deployment, exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise timed_out(self.deployment, self._read_timeout_s) from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.deployment, exc) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.deployment.in_flight -= 1
            # A fully read response has already gone back to the pool; otherwise this
            # drops the connection, so the upstream stops generating for nobody.
            self._response.close()


class Relay:
    """The connection pool to OpenAI-compatible upstreams, with the configured timeouts."""

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, pool_size: int = 1000) -> None:
        self._timeout_s = timeout_s
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        # A stream may last longer than any total; what must not last is silence.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        # Parsed once per deployment: aiohttp would parse the URL string and copy the
        # header dict into a multidict on every call (~35 µs a call, measured).
        self._targets: dict[str, tuple[URL, CIMultiDict[str], dict[str, str]]] = {}

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # No cookies between callers (a privacy rule) and ~50 µs less per call (measured).
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            json_serialize=lambda obj: msgspec.json.encode(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, deployment: Deployment, body: dict[str, Any], raw: bytes, *, stream: bool) -> UpstreamReply:
        """One attempt; raise `AttemptFailed` (retryable or not) on any failure."""
        session = self._session
        if session is None:
            raise AttemptFailed(unreachable(deployment, RuntimeError("upstream pool is closed")), retryable=False)
        data = raw if body.get("model") == deployment.upstream_model else msgspec.json.encode(
            {**body, "model": deployment.upstream_model}
        )
        assert deployment.url is not None
        target = self._targets.get(deployment.url)
        if target is None or target[2] is not deployment.headers:
            target = (URL(deployment.url), CIMultiDict(deployment.headers), deployment.headers)
            self._targets[deployment.url] = target
        url, headers, _ = target
        try:
            response = await session.post(
                url, data=data, headers=headers, timeout=self._stream_timeout if stream else self._timeout
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise AttemptFailed(unreachable(deployment, exc), retryable=True) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            # The request went out and no answer came: retrying would double the wait
            # and maybe the work, so the caller hears about it at once.
            raise AttemptFailed(timed_out(deployment, self._timeout_s), retryable=False) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AttemptFailed(unreachable(deployment, exc), retryable=True) from None
        if response.status >= 400:
            try:
                error_body = await asyncio.wait_for(response.content.read(_MAX_ERROR_BODY), 5)
            except (TimeoutError, aiohttp.ClientError):
                error_body = b""
            finally:
                response.close()
            error = error_from_upstream(response.status, error_body, dict(response.headers))
            raise AttemptFailed(error, retryable=is_retryable_status(response.status), upstream_status=response.status)
        return RelayReply(response, deployment, is_stream=stream, read_timeout_s=self._timeout_s)
