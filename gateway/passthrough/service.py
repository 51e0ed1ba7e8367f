"""The passthrough rules: who may call which model, where it goes, what gets recorded.

Every call that got as far as a parsed body becomes exactly one trajectory, success
or failure, submitted to the recorder after the client has its last byte.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from litestar.datastructures import State

from gateway.auth import Principal
from gateway.errors import ApiError
from gateway.ids import new_id
from gateway.passthrough._assemble import assemble_completion
from gateway.passthrough._body import parse_body
from gateway.providers import Deployment, ModelRouter, Upstreams, UpstreamTrace, cost_usd
from gateway.storage import utcnow

log = logging.getLogger(__name__)

COLLECTION_HEADER = "x-jetty-collection"
TRAJECTORY_HEADER = "X-Jetty-Trajectory-Id"

_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class CompletionCall:
    """One passthrough call in flight: what the client asked and what happened upstream."""

    id: str
    model: str
    body: dict[str, Any]
    raw: bytes
    stream: bool
    principal: Principal
    collection: str | None
    labels: dict[str, str]
    created_at: datetime
    bearer: str | None = None
    replay_of: str | None = None
    trace: UpstreamTrace = field(default_factory=UpstreamTrace)
    deployments: list[Deployment] = field(default_factory=list)
    first_token_at: datetime | None = None


def open_call(
    principal: Principal,
    body: dict[str, Any],
    raw: bytes,
    *,
    collection: str | None = None,
    bearer: str | None = None,
    replay_of: str | None = None,
) -> CompletionCall:
    """A new call with its trajectory id; the collection comes from the header, else `metadata.collection`."""
    metadata = body.get("metadata")
    labels: dict[str, str] = {}
    if isinstance(metadata, dict):
        labels = {k: v for k, v in metadata.items() if isinstance(v, str)}
        if collection is None and isinstance(metadata.get("collection"), str):
            collection = metadata["collection"]
    return CompletionCall(
        id=new_id("trj"),
        model=body["model"],
        body=body,
        raw=raw,
        stream=body.get("stream") is True,
        principal=principal,
        collection=collection or None,
        labels=labels,
        created_at=utcnow(),
        bearer=bearer,
        replay_of=replay_of,
    )


def route_call(router: ModelRouter, call: CompletionCall) -> list[Deployment]:
    """Check the key's scopes (403), then the deployments to try (404 for an unknown model)."""
    call.principal.require_model(call.model)
    call.principal.require_collection(call.collection)
    call.deployments = router.route(call.model)
    return call.deployments


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(part.get("text") if isinstance(part, dict) else part) for part in value)
    return 0


def estimate_usage(body: dict[str, Any], response: dict[str, Any] | None) -> dict[str, int]:
    """About four characters a token: cheap, and only used when the upstream gave no usage."""
    prompt = sum(_text_length(m.get("content")) for m in body.get("messages") or () if isinstance(m, dict))
    completion = 0
    for choice in (response or {}).get("choices") or ():
        message = choice.get("message") or {} if isinstance(choice, dict) else {}
        completion += _text_length(message.get("content"))
        for call in message.get("tool_calls") or ():
            completion += _text_length((call.get("function") or {}).get("arguments"))
    prompt_tokens, completion_tokens = max(1, prompt // 4), completion // 4
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _usage_of(call: CompletionCall, response: dict[str, Any] | None) -> dict[str, int] | None:
    usage = response.get("usage") if response else None
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        prompt = usage["prompt_tokens"]
        completion = usage.get("completion_tokens") or 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens") or prompt + completion,
        }
    if response is None:
        return None
    return estimate_usage(call.body, response)


def decode_response(data: bytes, *, stream: bool) -> dict[str, Any] | None:
    """The chat.completion in a relayed body (assembled from chunks for a stream); None if unreadable."""
    if stream:
        return assemble_completion(data)
    try:
        response = _decode(data)
    except msgspec.DecodeError:
        return None
    return response if isinstance(response, dict) else None


def record_call(
    state: State,
    call: CompletionCall,
    *,
    status: str,
    response: dict[str, Any] | None = None,
    error: ApiError | None = None,
) -> None:
    """Submit the call's trajectory to the recorder; never raises, never waits."""
    recorder = getattr(state, "recorder", None)
    if recorder is None:
        return
    try:
        from gateway.trajectories import CompletionRecord

        usage = _usage_of(call, response)
        used = next((d for d in call.deployments if d.id == call.trace.deployment), None)
        models = (used.model if used else None, response.get("model") if response else None, call.model)
        secrets = {s for d in call.deployments for s in d.secrets}
        if call.bearer:
            secrets.add(call.bearer)
        record = CompletionRecord(
            id=call.id,
            model=call.model,
            key_id=call.principal.key_id,
            collection=call.collection,
            labels=call.labels,
            request=call.body,
            status=status,
            response=response,
            error={"status": error.status, "code": error.code, "message": error.message} if error else None,
            usage=usage,
            cost_usd=cost_usd(models, usage),
            created_at=call.created_at,
            first_token_at=call.first_token_at,
            finished_at=utcnow(),
            upstream=call.trace.to_dict(),
            replay_of=call.replay_of,
            secrets=tuple(secrets),
        )
        recorder.submit(record)
    except Exception:
        log.exception("cannot record completion trajectory_id=%s", call.id)


async def replay_completion(
    app_state: State,
    principal: Principal,
    request_body: dict[str, Any],
    *,
    replay_of: str,
    model: str | None = None,
) -> dict[str, Any]:
    """Re-send a recorded request, never streamed, as a new trajectory with `replay_of`.

    Returns the chat.completion plus `jetty: {trajectory_id, replay_of}`; raises the
    `ApiError` a client would have seen, after recording the failure.
    """
    body = {k: v for k, v in request_body.items() if k != "stream_options"}
    body["stream"] = False
    if model:
        body["model"] = model
    raw = msgspec.json.encode(body)
    body = parse_body(raw)
    call = open_call(principal, body, raw, replay_of=replay_of)
    try:
        deployments = route_call(app_state.model_router, call)
        upstreams: Upstreams = app_state.upstreams
        reply = await upstreams.send(deployments, body, raw, stream=False, trace=call.trace)
        try:
            data = await reply.read()
        finally:
            reply.close()
    except ApiError as error:
        record_call(app_state, call, status="failed", error=error)
        raise
    response = decode_response(data, stream=False)
    record_call(app_state, call, status="succeeded", response=response)
    return {**(response or {}), "jetty": {"trajectory_id": call.id, "replay_of": replay_of}}
