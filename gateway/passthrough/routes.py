"""`POST /v1/chat/completions` and `GET /v1/models`.

The completion route is a raw ASGI handler: it writes upstream bytes to the client
as they arrive and watches for the client going away, which a regular handler
returning a response object cannot do as cheaply. Auth still runs first (the
bearer middleware puts the `Principal` in `scope["user"]`), and an `ApiError`
raised before the first byte is rendered by the app's one exception handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Request, asgi, get
from litestar.datastructures import State
from litestar.types import Message, Receive, Scope, Send

from gateway.auth import Principal
from gateway.errors import ApiError, RunbookModeUnavailable
from gateway.passthrough._body import parse_body, read_body, replay_body
from gateway.passthrough.service import (
    COLLECTION_HEADER,
    TRAJECTORY_HEADER,
    CompletionCall,
    decode_response,
    open_call,
    record_call,
    route_call,
)
from gateway.providers import ModelRouter, UpstreamReply, Upstreams
from gateway.storage import utcnow

log = logging.getLogger(__name__)

_TRAJECTORY_HEADER = TRAJECTORY_HEADER.lower().encode()
_DONE_EVENT_ENDINGS = (b"data: [DONE]\n\n", b"data: [DONE]\r\n\r\n")


class _Exchange:
    """The client side of one call: whether it is still there, and what it was sent."""

    __slots__ = ("task", "is_done", "is_disconnected", "watcher")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.is_done = False
        self.is_disconnected = False
        self.watcher: asyncio.Task[None] | None = None

    def watch(self, receive: Receive) -> None:
        self.watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        # After the body, the only message left is `http.disconnect`: the client left,
        # or (after our last byte) the response is complete.
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.is_done and self.task is not None:
                    self.is_disconnected = True
                    self.task.cancel()
                return

    def stop(self) -> None:
        self.is_done = True
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


@asgi("/v1/chat/completions", copy_scope=False, tags=["passthrough"])
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """OpenAI chat completions: relayed to the model's upstream, or a runbook run with a `jetty` block."""
    if scope["method"] != "POST":  # type: ignore[typeddict-item]
        raise ApiError("Use POST for /v1/chat/completions", status=405, code="method_not_allowed")
    state: State = scope["litestar_app"].state
    principal: Principal = scope["user"]
    raw = await read_body(scope, receive, state.settings.max_body_bytes)
    body = parse_body(raw)
    if "jetty" in body:
        await _run_runbook(scope, receive, send, raw, body, principal)
        return
    await relay_completion(state, scope, receive, send, raw, body, principal)


async def relay_completion(
    state: State, scope: Scope, receive: Receive, send: Send, raw: bytes, body: dict[str, Any], principal: Principal
) -> None:
    """Passthrough mode, once the body is read and parsed: relay, answer, record."""
    call = open_call(
        principal,
        body,
        raw,
        collection=_header(scope, COLLECTION_HEADER.encode()),
        bearer=(_header(scope, b"authorization") or "").partition(" ")[2].strip() or None,
    )
    exchange = _Exchange()
    exchange.watch(receive)
    try:
        await _complete(state, call, send, exchange)
    finally:
        exchange.stop()


async def _complete(state: State, call: CompletionCall, send: Send, exchange: _Exchange) -> None:
    reply: UpstreamReply | None = None
    chunks: list[bytes] = []
    outcome, error = "failed", None
    try:
        router: ModelRouter = state.model_router
        upstreams: Upstreams = state.upstreams
        deployments = route_call(router, call)
        reply = await upstreams.send(deployments, call.body, call.raw, stream=call.stream, trace=call.trace)
        headers = [*reply.headers, (_TRAJECTORY_HEADER, call.id.encode())]
        if reply.is_stream:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            error = await _relay_stream(reply, call, send, chunks, exchange)
        else:
            data = await reply.read()
            chunks.append(data)
            headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            exchange.is_done = True
            await send({"type": "http.response.body", "body": data, "more_body": False})
        outcome = "failed" if error else "succeeded"
    except ApiError as exc:
        error = exc
        exc.headers = {**exc.headers, TRAJECTORY_HEADER: call.id}
        raise
    except asyncio.CancelledError:
        if not exchange.is_disconnected:
            raise
        outcome = "cancelled"
        # Our own cancellation (the client left): end quietly; uvicorn knows it is gone.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        log.info("client disconnected trajectory_id=%s model=%s", call.id, call.model)
    finally:
        if reply is not None:
            reply.close()
        response = decode_response(b"".join(chunks), stream=call.stream) if chunks else None
        record_call(state, call, status=outcome, response=response, error=error)


async def _relay_stream(
    reply: UpstreamReply, call: CompletionCall, send: Send, chunks: list[bytes], exchange: _Exchange
) -> ApiError | None:
    """Send each chunk as it comes; an upstream failure mid-stream becomes a final SSE error event."""
    message: Message
    try:
        async for chunk in reply.chunks():
            if call.first_token_at is None:
                call.first_token_at = utcnow()
            chunks.append(chunk)
            if chunk.endswith(_DONE_EVENT_ENDINGS):
                # The client has the whole answer once `[DONE]` is out; SDKs stop reading
                # there and may close before the upstream's last chunk, which is no cancel.
                exchange.is_done = True
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            await send(message)
    except ApiError as exc:
        log.warning("upstream failed mid-stream trajectory_id=%s code=%s", call.id, exc.code)
        exchange.is_done = True
        await send({"type": "http.response.body", "body": b"data: " + msgspec.json.encode(exc.to_body()) + b"\n\n", "more_body": False})
        return exc
    exchange.is_done = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return None


async def _run_runbook(scope: Scope, receive: Receive, send: Send, raw: bytes, body: dict[str, Any], principal: Principal) -> None:
    """Runbook mode: hand over to the runbooks slice when it is wired in."""
    app = scope["litestar_app"]
    run_runbook = getattr(app.state, "run_runbook", None)
    if run_runbook is None:
        raise RunbookModeUnavailable("Runbook mode is not available on this gateway", param="jetty")
    replay_receive = replay_body(raw, receive)  # the body was read; the runbook handler reads it again
    request: Request[Any, Any, Any] = Request(scope, replay_receive)
    response = await run_runbook(request, body, principal)
    await response.to_asgi_response(app=app, request=request)(scope, replay_receive, send)


@get("/v1/models", tags=["passthrough"], sync_to_thread=False)
def list_models(request: Request[Principal, Any, State]) -> dict[str, Any]:
    """The models this gateway routes by name, limited to the caller's model scope (OpenAI shape)."""
    router: ModelRouter = request.app.state.model_router
    principal = request.user
    created: int = request.app.state.models_listed_since
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": owner}
        for name, owner in router.owners().items()
        if principal.allows_model(name)
    ]
    return {"object": "list", "data": data}
