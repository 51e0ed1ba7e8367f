"""Sending a chat completion to a model's deployments, falling back on failure.

An attempt that fails to connect, or gets 429 or 5xx, moves on to the next
deployment (or the same one again when it is alone), at most
`upstream_max_retries` times; any other answer, good or bad, is final.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.errors import ApiError
from gateway.providers._deployments import Deployment
from gateway.providers._relay import Relay
from gateway.providers._reply import AttemptFailed, UpstreamReply
from gateway.settings import Settings

log = logging.getLogger(__name__)

_SAME_DEPLOYMENT_BACKOFF_S = 0.05


@dataclass(slots=True)
class UpstreamTrace:
    """What happened upstream, for the trajectory, success or failure."""

    deployment: str | None = None
    api_base: str | None = None
    attempts: int = 0
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "api_base": self.api_base, "attempts": self.attempts, "status": self.status}


class Upstreams:
    """Calls deployments: relayed for OpenAI-compatible ones, translated by litellm otherwise."""

    def __init__(self, settings: Settings) -> None:
        self._timeout_s = settings.upstream_timeout_s
        self._max_attempts = 1 + settings.upstream_max_retries
        self._relay = Relay(timeout_s=settings.upstream_timeout_s, connect_timeout_s=settings.upstream_connect_timeout_s)

    async def open(self) -> None:
        await self._relay.open()

    async def close(self) -> None:
        await self._relay.close()

    async def send(
        self,
        deployments: list[Deployment],
        body: dict[str, Any],
        raw: bytes,
        *,
        stream: bool,
        trace: UpstreamTrace,
    ) -> UpstreamReply:
        """The first successful reply among `deployments`; raise the last failure's `ApiError`."""
        failure: AttemptFailed | None = None
        previous: Deployment | None = None
        for attempt in range(self._max_attempts):
            deployment = deployments[attempt % len(deployments)]
            if deployment is previous:
                await asyncio.sleep(_SAME_DEPLOYMENT_BACKOFF_S * attempt)
            previous = deployment
            trace.deployment, trace.api_base, trace.attempts = deployment.id, deployment.api_base, attempt + 1
            deployment.in_flight += 1
            try:
                if deployment.url is not None:
                    reply = await self._relay.send(deployment, body, raw, stream=stream)
                else:
                    from gateway.providers._translate import send_translated

                    reply = await send_translated(deployment, body, stream=stream, timeout_s=self._timeout_s)
            except AttemptFailed as failed:
                deployment.in_flight -= 1
                failure = failed
                trace.status = failed.upstream_status
                log.warning(
                    "upstream attempt failed model=%s deployment=%s attempt=%d status=%s code=%s",
                    deployment.name, deployment.id, attempt + 1, failed.upstream_status, failed.error.code,
                )
                if not failed.retryable:
                    break
                continue
            except BaseException:
                deployment.in_flight -= 1
                raise
            trace.status = reply.status
            reply.attempts = attempt + 1
            return reply
        assert failure is not None
        error: ApiError = failure.error
        raise error
