"""The agent's model calls, routed exactly like passthrough calls (same router, same pool).

Provider keys stay in the gateway; the sandbox never sees them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.errors import UpstreamError
from gateway.providers import ModelRouter, Upstreams, UpstreamTrace, cost_usd

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelTurn:
    """One model answer: the assistant message and what it cost."""

    message: dict[str, Any]
    finish_reason: str | None
    usage: dict[str, int]
    cost_usd: float | None
    latency_ms: float
    deployment: str | None
    response_id: str | None


class ModelClient:
    """Calls one model for one run through the gateway's router and upstream pool."""

    def __init__(self, router: ModelRouter, upstreams: Upstreams, model: str) -> None:
        self._router = router
        self._upstreams = upstreams
        self.model = model

    def check(self) -> None:
        """Raise 404 `model_not_found` now, before the run starts, for an unknown model."""
        self._router.route(self.model)

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        """One non-streamed completion with tools; raises the upstream's `ApiError`."""
        body = {"model": self.model, "messages": messages, "tools": tools, "tool_choice": "auto"}
        deployments = self._router.route(self.model)
        trace = UpstreamTrace()
        started = time.monotonic()
        reply = await self._upstreams.send(
            deployments, body, msgspec.json.encode(body), stream=False, trace=trace
        )
        try:
            data = await reply.read()
        finally:
            reply.close()
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        try:
            answer = msgspec.json.decode(data)
            choice = answer["choices"][0]
            message = dict(choice["message"])
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            raise UpstreamError(
                "The model answered with something that is not a chat completion"
            ) from None
        usage = answer.get("usage") or {}
        usage = {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0),
        }
        deployment = reply.deployment
        return ModelTurn(
            message=message,
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            cost_usd=cost_usd([deployment.upstream_model, deployment.model, self.model], usage),
            latency_ms=latency_ms,
            deployment=trace.deployment,
            response_id=answer.get("id"),
        )
