"""Keep-alive connections per upstream origin for the lean HTTP/1.1 client.

Idle connections are kept per (scheme, host, port) and reused newest first (the
one least likely to have been closed by the server's idle timer). The number of
open connections is bounded as aiohttp's connector bounded it before; past the
bound, a request waits for a connection to come back or close.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque

from yarl import URL

from gateway.providers._http1 import (
    ConnectFailed,
    Connection,
    ConnectTimeout,
    Response,
    ResponseTimeout,
    ServerDisconnected,
)


class Target:
    """A request prepared once per deployment: origin, and the head up to `Content-Length: `."""

    __slots__ = ("key", "head", "host", "port", "is_tls")

    def __init__(self, url: str, headers: dict[str, str], method: str = "POST") -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"unsupported upstream URL scheme or host: {parsed.scheme!r}")
        self.is_tls = parsed.scheme == "https"
        self.host = parsed.host
        self.port = parsed.port or (443 if self.is_tls else 80)
        self.key = (parsed.scheme, self.host, self.port)
        # RFC 9112 §3.2: Host carries the port only when it is not the scheme's default.
        lines = [f"{method} {parsed.raw_path_qs or '/'} HTTP/1.1", f"Host: {parsed.host_port_subcomponent}"]
        names = {name.lower() for name in headers}
        if parsed.user is not None and "authorization" not in names:
            credentials = f"{parsed.user}:{parsed.password or ''}".encode()
            lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}")
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # framing and routing headers are ours to set
            if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"invalid upstream header {name!r}")
            lines.append(f"{name}: {value}")
        lines.append("Content-Length: ")
        self.head = "\r\n".join(lines).encode("latin-1")

    def request(self, body: bytes) -> bytes:
        """The full request bytes: one write, one syscall."""
        return b"%s%d\r\n\r\n%s" % (self.head, len(body), body)


class ConnectionPool:
    """Open, lend and take back upstream connections; `send` is the whole client."""

    def __init__(self, *, limit: int = 1000, connect_timeout_s: float, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open: set[Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._is_closed = False

    async def send(self, target: Target, body: bytes, *, timeout_s: float, is_stream: bool) -> Response:
        """Send one request and wait for the response's status and headers.

        `timeout_s` bounds the whole exchange (body included) unless `is_stream`, where
        it bounds each silence instead. Raises `ConnectFailed`/`ConnectTimeout` when no
        connection opens, `ServerDisconnected`/`InvalidResponse` when the answer breaks
        off, `ResponseTimeout` when it does not come in time.
        """
        loop = asyncio.get_running_loop()
        deadline = None if is_stream else loop.time() + timeout_s
        request = target.request(body)
        connection = self._take_idle(target.key, loop.time())
        if connection is None:
            connection = await self._connect(target, deadline)
        remaining = timeout_s if deadline is None else deadline - loop.time()
        response = connection.start(request, timeout_s=remaining, is_stream=is_stream)
        try:
            await _headers_of(response)
        except ServerDisconnected:
            if connection.uses == 1 or response.has_bytes:
                raise
            # The keep-alive race (RFC 9112 §9.3.1): the server closed the idle
            # connection as we reused it. Nothing came back, so nothing was processed
            # that we know of: one more try on a connection of our own.
            connection = await self._connect(target, deadline)
            remaining = timeout_s if deadline is None else deadline - loop.time()
            response = connection.start(request, timeout_s=remaining, is_stream=is_stream)
            await _headers_of(response)
        return response

    def _take_idle(self, key: tuple[str, str, int], now: float) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.is_closed:
                if now - connection.idle_since < self._keepalive_s:
                    return connection
                connection.abort()
        return None

    async def _connect(self, target: Target, deadline: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        while len(self._open) + self._connecting >= self._limit:
            if not self._close_oldest_idle():
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    if deadline is None:
                        await waiter
                    else:
                        await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
                except TimeoutError:
                    raise ResponseTimeout("no free upstream connection in time") from None
        timeout_s = self._connect_timeout_s
        is_total_bound = deadline is not None and deadline - loop.time() < timeout_s
        if deadline is not None:
            timeout_s = min(timeout_s, max(deadline - loop.time(), 0))
        if target.is_tls and self._tls is None:
            self._tls = ssl.create_default_context()  # ~1 ms: once per pool, not per connection
        self._connecting += 1
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop, self, target.key),
                    target.host,
                    target.port,
                    ssl=self._tls if target.is_tls else None,
                    server_hostname=target.host if target.is_tls else None,
                ),
                timeout_s,
            )
        except TimeoutError:
            if is_total_bound:
                raise ResponseTimeout("no answer in time (still connecting)") from None
            raise ConnectTimeout(f"connecting to {target.host}:{target.port} took over {timeout_s:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {target.host}:{target.port}: {exc}") from None
        finally:
            self._connecting -= 1
            self._wake_one()
        if self._is_closed:
            connection.abort()
            raise ConnectFailed("the upstream pool is closed")
        self._open.add(connection)
        return connection

    def _close_oldest_idle(self) -> bool:
        oldest: Connection | None = None
        for idle in self._idle.values():
            for connection in idle:
                if not connection.is_closed and (oldest is None or connection.idle_since < oldest.idle_since):
                    oldest = connection
        if oldest is None:
            return False
        oldest.abort()
        return True

    # --- what connections tell the pool --------------------------------------------------

    def release(self, connection: Connection) -> None:
        """A response completed and the server allows keep-alive: lend the connection again."""
        if self._is_closed:
            connection.abort()
            return
        idle = self._idle.get(connection.key)
        if idle is None:
            idle = self._idle[connection.key] = []
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s, self._sweep)
        self._wake_one()

    def forget(self, connection: Connection) -> None:
        """The connection closed (or is closing): it no longer counts against the limit."""
        self._open.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        # Servers close idle connections too; this only stops us holding sockets forever
        # after traffic stops (the limit aiohttp's keepalive_timeout set before).
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if now - c.idle_since >= self._keepalive_s]:
                connection.abort()
        if any(self._idle.values()):
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s, self._sweep)

    def close(self) -> None:
        """Close every connection, idle or busy; busy exchanges end with `ServerDisconnected`."""
        self._is_closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._open):
            connection.fail(ServerDisconnected("the upstream pool is closed"))
        self._idle.clear()


async def _headers_of(response: Response) -> None:
    while not response.is_started:
        if response.error is not None:
            raise response.error
        await response.wait()
