"""A scripted OpenAI-compatible upstream: real HTTP on loopback, in a background thread.

Tests queue the answers (`push`), then look at what the gateway sent (`requests`).
An empty queue answers a plain completion. Any path is accepted, so the same server
can stand in for other wire formats (`Reply.json` with an Anthropic body, say).

    with UpstreamServer() as upstream:
        upstream.push(Reply.tool_calls([("bash", {"cmd": "ls"})]), Reply.completion("done"))
        ...  # point a models file at upstream.url
        assert upstream.requests[0].json["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.net import free_port, wait_for

_ids = itertools.count(1)


@dataclass
class Reply:
    """One scripted answer. Build it with the class methods."""

    kind: str = "json"  # json | raw | stream | sse | hang | close | dynamic
    status: int = 200
    body: Any = None
    events: list[Any] = field(default_factory=list)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    hang_after: bool = False
    respond: Callable[[ReceivedRequest], Reply] | None = None

    @classmethod
    def completion(cls, content: str = "Hello from upstream", *, finish_reason: str = "stop", usage: dict[str, int] | None = None, **extra: Any) -> Reply:
        """A plain chat.completion; `model` is echoed from the request."""
        message = {"role": "assistant", "content": content}
        return cls(body={"message": message, "finish_reason": finish_reason, "usage": usage, **extra})

    @classmethod
    def tool_calls(cls, calls: Iterable[tuple[str, dict[str, Any] | str]], *, content: str | None = None) -> Reply:
        """A completion asking for tool calls: (name, arguments) pairs."""
        message = {"role": "assistant", "content": content, "tool_calls": _tool_calls(calls)}
        return cls(body={"message": message, "finish_reason": "tool_calls"})

    @classmethod
    def error(cls, status: int, message: str = "upstream failure", *, code: str | None = None, type: str = "server_error", headers: dict[str, str] | None = None) -> Reply:
        return cls(status=status, body={"error": {"message": message, "type": type, "code": code, "param": None}}, headers=headers or {})

    @classmethod
    def json(cls, body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        """Any JSON body as is (another provider's format, a malformed answer)."""
        return cls(kind="raw", status=status, body=body, headers=headers or {})

    @classmethod
    def stream(cls, parts: Iterable[str] = ("Hel", "lo"), *, delay_s: float = 0.0, tool_calls: Iterable[tuple[str, dict[str, Any] | str]] | None = None, hang_after: bool = False) -> Reply:
        """An SSE stream: one chunk per content part (and tool-call deltas), `delay_s` apart."""
        events: list[Any] = [{"delta": {"role": "assistant", "content": ""}}]
        events += [{"delta": {"content": part}} for part in parts]
        finish = "stop"
        if tool_calls:
            for index, call in enumerate(_tool_calls(tool_calls)):
                args = call["function"]["arguments"]
                head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
                events.append({"delta": {"tool_calls": [head]}})
                half = len(args) // 2
                for piece in (args[:half], args[half:]):
                    events.append({"delta": {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}})
            finish = "tool_calls"
        events.append({"delta": {}, "finish_reason": finish})
        return cls(kind="stream", events=events, delay_s=delay_s, hang_after=hang_after)

    @classmethod
    def sse(cls, frames: Iterable[str], *, delay_s: float = 0.0, headers: dict[str, str] | None = None) -> Reply:
        """A raw event stream, frames sent as given (another provider's streaming format)."""
        return cls(kind="sse", events=list(frames), delay_s=delay_s, headers=headers or {})

    @classmethod
    def hang(cls) -> Reply:
        """Accept the request and never answer (until the client goes away)."""
        return cls(kind="hang")

    @classmethod
    def close(cls) -> Reply:
        """Drop the connection without answering."""
        return cls(kind="close")

    @classmethod
    def dynamic(cls, respond: Callable[[ReceivedRequest], Reply]) -> Reply:
        """Decide from the request (e.g. the conversation so far) which reply to give."""
        return cls(kind="dynamic", respond=respond)


def _tool_calls(calls: Iterable[tuple[str, dict[str, Any] | str]]) -> list[dict[str, Any]]:
    import json

    return [
        {
            "id": f"call_{next(_ids)}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for name, args in calls
    ]


@dataclass
class ReceivedRequest:
    """A request as the upstream saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    closed_early: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None


class UpstreamServer:
    """The server; `url` is its OpenAI base URL (`http://127.0.0.1:<port>/v1`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.replies: deque[Reply] = deque()
        self.requests: list[ReceivedRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def push(self, *replies: Reply) -> UpstreamServer:
        self.replies.extend(replies)
        return self

    def reset(self) -> None:
        self.replies.clear()
        self.requests.clear()

    def wait_for_requests(self, count: int = 1, timeout_s: float = 10) -> list[ReceivedRequest]:
        wait_for(lambda: len(self.requests) >= count, timeout_s=timeout_s, what=f"{count} upstream request(s)")
        return self.requests

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> UpstreamServer:
        self._thread = threading.Thread(target=self._serve, name=f"upstream-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("upstream server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._started.set()
        loop.run_forever()
        loop.close()

    # --- answering ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
        )
        self.requests.append(received)
        reply = self.replies.popleft() if self.replies else Reply.completion()
        while reply.kind == "dynamic" and reply.respond is not None:
            reply = reply.respond(received)
        try:
            return await self._answer(request, received, reply)
        except (asyncio.CancelledError, ConnectionError):
            received.closed_early.set()
            raise
        finally:
            received.finished.set()

    async def _answer(self, request: web.Request, received: ReceivedRequest, reply: Reply) -> web.StreamResponse:
        payload = received.json if received.body else {}
        model = payload.get("model", "unknown") if isinstance(payload, dict) else "unknown"
        if reply.kind == "hang":
            await asyncio.sleep(3600)
        if reply.kind == "close":
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("scripted close")
        if reply.kind == "raw" or reply.status >= 400:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        if reply.kind == "stream":
            return await self._stream(request, received, reply, model, payload)
        if reply.kind == "sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
            await response.prepare(request)
            for index, frame in enumerate(reply.events):
                if index and reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                await response.write(frame.encode())
            await response.write_eof()
            return response
        body = dict(reply.body)
        message, finish, usage = body.pop("message"), body.pop("finish_reason"), body.pop("usage", None)
        completion = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            **body,
        }
        return web.json_response(completion, headers={"x-request-id": f"req_{next(_ids)}", **reply.headers})

    async def _stream(self, request: web.Request, received: ReceivedRequest, reply: Reply, model: str, payload: dict[str, Any]) -> web.StreamResponse:
        import json

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        events = [{**base, "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **e}]} for e in reply.events]
        if (payload.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(events), "total_tokens": 11 + len(events)}})
        for index, event in enumerate(events):
            if index and reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        if reply.hang_after:
            await asyncio.sleep(3600)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
