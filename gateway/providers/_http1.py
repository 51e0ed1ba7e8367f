"""A lean HTTP/1.1 keep-alive client for the relay: `asyncio.Protocol` + httptools.

aiohttp's client cost ~200 µs of event-loop CPU per relayed call (request and
payload objects, header multidicts, stream readers, per-read timers); the relay
needs far less: one POST with headers prepared once per deployment, a status, the
raw headers and the body whole or chunk by chunk. This module does only that.

One protocol object is one connection and carries one exchange at a time (no
pipelining). It goes back to its pool as soon as the response is complete, the
server allowed keep-alive (RFC 9112 §9.3) and nothing is left unread; any error,
timeout or early close by the consumer closes it instead.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

# Past this much unread body in a stream, stop reading the socket until the consumer
# catches up: TCP flow control then slows the upstream down instead of our memory.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class ClientError(Exception):
    """The upstream could not be reached or answered something unusable; worth another try."""


class ConnectFailed(ClientError):
    """No TCP (or TLS) connection could be opened."""


class ConnectTimeout(ConnectFailed):
    """Opening the connection took longer than the connect timeout."""


class ServerDisconnected(ClientError):
    """The connection closed before the response was complete."""


class InvalidResponse(ClientError):
    """The bytes received are not an HTTP/1.1 response."""


class ResponseTimeout(TimeoutError):
    """No (complete) answer within the read timeout; not retried, the wait would double."""


class _Owner(Protocol):
    def release(self, connection: Connection) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One upstream connection; `start` sends a request and returns its `Response`."""

    __slots__ = (
        "_loop", "_owner", "_parser", "_response", "_timer", "_timeout_s", "_is_idle_timeout",
        "_last_data_at", "_is_paused", "key", "transport", "is_closed", "idle_since", "uses",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: _Owner, key: tuple[str, str, int]) -> None:
        self._loop = loop
        self._owner = owner
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._is_idle_timeout = False
        self._last_data_at = 0.0
        self._is_paused = False
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.is_closed = False
        self.idle_since = 0.0
        self.uses = 0

    # --- one exchange ------------------------------------------------------------------

    def start(self, request: bytes, *, timeout_s: float, is_stream: bool) -> Response:
        """Write `request`; arm the timeout: total for a whole body, silence for a stream."""
        assert self.transport is not None and self._response is None
        response = self._response = Response(self, is_stream)
        self.uses += 1
        self._timeout_s = timeout_s
        self._is_idle_timeout = is_stream
        self._last_data_at = now = self._loop.time()
        self._timer = self._loop.call_at(now + timeout_s, self._on_timer)
        self.transport.write(request)
        return response

    def _on_timer(self) -> None:
        self._timer = None
        if self._is_idle_timeout:
            # One timer per exchange, pushed forward lazily, instead of one per read.
            now = self._loop.time()
            if self._is_paused:
                self._last_data_at = now  # the consumer is slow, not the upstream
            due = self._last_data_at + self._timeout_s
            if due > now:
                self._timer = self._loop.call_at(due, self._on_timer)
                return
        self.fail(ResponseTimeout(f"no answer within {self._timeout_s:g}s"))

    def fail(self, exc: BaseException) -> None:
        """End the exchange with `exc` and close the connection at once (the upstream sees it)."""
        response = self._response
        if response is not None and response.error is None and not response.is_complete:
            response.error = exc
            response.wake()
        self.abort()

    def abort(self) -> None:
        """Close now, unsent bytes dropped: nobody will read what the upstream sends next."""
        self._end_exchange()
        if not self.is_closed:
            self.is_closed = True
            self._owner.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def _end_exchange(self) -> None:
        self._response = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resume(self) -> None:
        """The consumer drained the buffer below the low-water mark."""
        if self._is_paused and not self.is_closed and self.transport is not None:
            self._is_paused = False
            self.transport.resume_reading()

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Bytes on an idle connection: the server is confused; never reuse it.
            self.abort()
            return
        response.has_bytes = True
        if self._is_idle_timeout:
            self._last_data_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self.abort()  # a second message after ours (see on_message_begin), or a bug
        except httptools.HttpParserError as exc:
            self.fail(InvalidResponse(f"invalid HTTP response: {exc}"))
        except httptools.HttpParserUpgrade:
            self.fail(InvalidResponse("unexpected protocol upgrade"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.is_closed
        self.is_closed = True
        response = self._response
        self._end_exchange()
        if not was_closed:
            self._owner.forget(self)
        if response is None or response.is_complete or response.error is not None:
            return
        if response.is_started and not response.has_framing():
            # RFC 9112 §6.3 (8): no Content-Length, not chunked: the close ends the body.
            response.is_complete = True
        else:
            reason = f": {exc}" if exc else ""
            response.error = ServerDisconnected(f"server disconnected before the response was complete{reason}")
        response.wake()

    def pause_writing(self) -> None:  # the whole request is written at once; nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self._response
        if response is None or response.is_complete:
            raise _Unsolicited  # a response nobody asked for: the connection is unusable

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            response.headers = []  # interim response (RFC 9110 §15.2); the real one follows
            return
        response.status = status
        response.is_started = True
        response.wake()

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.buffer.append(body)
        response.buffered += len(body)
        if response.is_stream:
            if response.buffered > _HIGH_WATER and not self._is_paused and self.transport is not None:
                self._is_paused = True
                self.transport.pause_reading()
            response.wake()

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if not response.is_started:
            return  # the end of an interim 1xx response
        response.is_complete = True
        self._end_exchange()
        if self._is_paused and self.transport is not None:
            self._is_paused = False
            self.transport.resume_reading()
        if self._parser.should_keep_alive() and not self.is_closed:
            self.idle_since = self._loop.time()
            self._owner.release(self)
        else:
            self.abort()
        response.wake()


class _Unsolicited(Exception):
    pass


class Response:
    """Status, raw headers (repeats kept, as sent), then the body whole or as it arrives."""

    __slots__ = ("_connection", "_waiter", "is_stream", "status", "headers", "buffer", "buffered",
                 "is_started", "is_complete", "has_bytes", "error")

    def __init__(self, connection: Connection, is_stream: bool) -> None:
        self._connection: Connection | None = connection
        self._waiter: asyncio.Future[None] | None = None
        self.is_stream = is_stream
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.is_started = False
        self.is_complete = False
        self.has_bytes = False
        self.error: BaseException | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def has_framing(self) -> bool:
        """Whether the length is known (Content-Length or chunked), so a close truncates the body."""
        return any(key.lower() in (b"content-length", b"transfer-encoding") for key, _ in self.headers)

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until the connection has news (headers, body, end, error); closes it if we are cancelled."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        except BaseException:
            self.close()
            raise
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self.is_complete:
            if self.error is not None:
                raise self.error
            await self.wait()
        if self.error is not None:
            raise self.error
        return self.buffer[0] if len(self.buffer) == 1 else b"".join(self.buffer)

    async def read_chunk(self) -> bytes:
        """What has arrived since the last call (waiting for something); b"" at the end."""
        while True:
            if self.buffer:
                data = b"".join(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
                self.buffer.clear()
                self.buffered = 0
                if self._connection is not None and not self.is_complete:
                    self._connection.resume()
                return data
            if self.error is not None:
                raise self.error
            if self.is_complete:
                return b""
            await self.wait()

    def close(self) -> None:
        """Done with the response: a complete one is already pooled; otherwise drop the connection."""
        connection, self._connection = self._connection, None
        if connection is not None and not self.is_complete:
            connection.abort()

