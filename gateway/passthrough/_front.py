"""`POST /v1/chat/completions` served ahead of Litestar's middleware and router.

The hottest route does exactly what the Litestar stack would do for it (bearer auth,
the error envelope for an `ApiError`, a 500 envelope for anything else) without the
per-request routing, connection objects and middleware layers, which cost about a
tenth of the gateway's CPU per call (measured). Every other request, and runbook
mode (its handler wants a full `Request`), goes to Litestar unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator
from gateway.errors import ApiError, to_api_error
from gateway.passthrough._body import parse_body, read_body, replay_body
from gateway.passthrough.routes import relay_completion

log = logging.getLogger(__name__)

PATH = "/v1/chat/completions"


class CompletionsFront:
    """An ASGI app: the passthrough fast path, else the wrapped Litestar handler."""

    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self._app = app
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":  # type: ignore[typeddict-item]
            await self._fallback(scope, receive, send)
            return
        is_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal is_started
            if message["type"] == "http.response.start":
                is_started = True
            await send(message)

        try:
            await self._serve(scope, receive, tracking_send)
        except Exception as exc:
            if is_started:
                raise  # too late for an envelope: the server drops the connection
            error = to_api_error(exc)
            if error.status >= 500 and not isinstance(exc, ApiError):
                log.error("unhandled error path=%s", PATH, exc_info=exc)
            await _send_error(send, error)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._app.state
        authenticator: Authenticator = state.authenticator
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        principal = await authenticator.authenticate(authorization)
        scope["user"] = principal
        scope["auth"] = None
        raw = await read_body(scope, receive, state.settings.max_body_bytes)
        body = parse_body(raw)
        if "jetty" in body:
            await self._fallback(scope, replay_body(raw, receive), send)
            return
        await relay_completion(state, scope, receive, send, raw, body, principal)


async def _send_error(send: Send, error: ApiError) -> None:
    """The error envelope, as the app's exception handler renders it."""
    content = msgspec.json.encode(error.to_body())
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    start: Any = {"type": "http.response.start", "status": error.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": content, "more_body": False})
