"""Host side of the agent protocol: JSON lines over whatever byte stream a backend has.

Both backends run the same agent (`_agent_main.py`); they differ only in how bytes
reach it (a Docker attach socket, or a bubblewrap process's pipes), which is what
`ByteSource`/`ByteSink` abstract.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from sandboxes.errors import SandboxClosed, SandboxError, SandboxFileError

logger = logging.getLogger(__name__)

AGENT_SOURCE = (Path(__file__).with_name("_agent_main.py")).read_text()

ByteSource = Callable[[], Awaitable[bytes]]  # returns b"" at end of stream
ByteSink = Callable[[bytes], Awaitable[None]]

_EOF = object()


class AgentChannel:
    """Multiplexes requests to one agent; replies are matched by id."""

    def __init__(self, read: ByteSource, write: ByteSink, *, name: str) -> None:
        self._read = read
        self._write = write
        self._name = name
        self._ids = itertools.count(1)
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.close_reason = "the sandbox agent exited"

    async def start(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the agent's hello; raise SandboxError if it does not come in time."""
        self._task = asyncio.create_task(self._pump(), name=f"agent-{self._name}")
        try:
            return await asyncio.wait_for(asyncio.shield(self._hello), timeout_s)
        except TimeoutError:
            raise SandboxError(f"sandbox agent did not start within {timeout_s:.0f}s") from None

    async def _pump(self) -> None:
        pending = b""
        try:
            while True:
                chunk = await self._read()
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(json.loads(line))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            logger.warning("sandbox agent stream broke sandbox=%s error=%s", self._name, exc)
        finally:
            self._close_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("ev") == "hello":
            if not self._hello.done():
                self._hello.set_result(msg)
            return
        queue = self._queues.get(msg.get("id", -1))
        if queue is not None:
            queue.put_nowait(msg)

    def _close_all(self) -> None:
        self.closed = True
        if not self._hello.done():
            self._hello.set_exception(SandboxError("sandbox agent exited before it started"))
        for queue in self._queues.values():
            queue.put_nowait(_EOF)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._close_all()

    async def _send(self, op: str, payload: dict[str, Any]) -> tuple[int, asyncio.Queue[Any]]:
        if self.closed:
            raise SandboxClosed(f"sandbox {self._name} is closed: {self.close_reason}")
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[rid] = queue
        line = json.dumps({"op": op, "id": rid, **payload}, separators=(",", ":")).encode() + b"\n"
        await self._write(line)
        return rid, queue

    async def _next(self, queue: asyncio.Queue[Any], timeout_s: float) -> dict[str, Any]:
        try:
            msg = await asyncio.wait_for(queue.get(), timeout_s)
        except TimeoutError:
            raise SandboxError(f"sandbox {self._name} agent did not answer within {timeout_s:.0f}s") from None
        if msg is _EOF:
            raise SandboxClosed(f"sandbox {self._name} is closed: {self.close_reason}")
        return msg

    async def call(self, op: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """One request, one reply; a file error comes back as SandboxFileError."""
        rid, queue = await self._send(op, payload)
        try:
            msg = await self._next(queue, timeout_s)
        finally:
            self._queues.pop(rid, None)
        if msg.get("ev") == "error":
            raise SandboxFileError(msg.get("message", "error"), kind=msg.get("kind", "error"))
        return msg

    async def stream(self, op: str, payload: dict[str, Any], timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """Yield every message for one request until its `exit` (or error) message."""
        rid, queue = await self._send(op, payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                msg = await self._next(queue, max(0.0, deadline - loop.time()))
                yield msg
                if msg.get("ev") in ("exit", "error"):
                    return
        finally:
            self._queues.pop(rid, None)


def decode(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
