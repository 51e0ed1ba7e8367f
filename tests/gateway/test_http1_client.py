"""The relay's lean HTTP/1.1 client against real loopback servers.

The scripted upstream (`tests/support/upstream.py`, aiohttp's server) covers what a
real provider does; a raw asyncio server covers what only a misbehaving or racing
server does (dropping an idle connection, closing mid-body, interim responses).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.providers._http1 import (
    ConnectFailed,
    ConnectTimeout,
    InvalidResponse,
    ResponseTimeout,
    ServerDisconnected,
)
from gateway.providers._http1_pool import ConnectionPool, Target
from tests.support.net import free_port, wait_for
from tests.support.upstream import Reply, UpstreamServer

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream: UpstreamServer) -> None:
    upstream.reset()


class RawServer:
    """A loopback server whose every connection runs `handler(reader, writer, index)`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def pool(**kwargs: Any) -> ConnectionPool:
    return ConnectionPool(connect_timeout_s=kwargs.pop("connect_timeout_s", 2), **kwargs)


def target(url: str, headers: dict[str, str] | None = None) -> Target:
    return Target(url, headers if headers is not None else {"Content-Type": "application/json"})


# --- requests and responses ----------------------------------------------------------


def test_request_carries_host_length_and_the_deployment_headers(upstream: UpstreamServer) -> None:
    async def main() -> bytes:
        client = pool()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-x", "OpenAI-Organization": "org-1"}
        response = await client.send(target(f"{upstream.url}/chat/completions?api-version=1", headers), BODY, timeout_s=5, is_stream=False)
        assert response.status == 200
        body = await response.read()
        client.close()
        return body

    assert json.loads(run(main()))["object"] == "chat.completion"
    sent = upstream.requests[0]
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/chat/completions", "api-version=1")
    assert sent.headers["host"] == f"127.0.0.1:{upstream.port}"
    assert sent.headers["content-length"] == str(len(BODY))
    assert sent.headers["authorization"] == "Bearer sk-x"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.body == BODY


def test_header_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid upstream header"):
        target("http://127.0.0.1:1/v1", {"X-Evil": "a\r\nHost: elsewhere"})


def test_repeated_response_headers_are_all_kept() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Ratelimit-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            response = await pool().send(target(server.url), BODY, timeout_s=5, is_stream=False)
            assert [v for k, v in response.headers if k.lower() == b"set-cookie"] == [b"a=1", b"b=2"]
            assert response.header(b"x-ratelimit-a") == b"1"
            assert await response.read() == b""

    run(main())


def test_stream_arrives_chunk_by_chunk(upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["a", "b", "c"], delay_s=0.05))

    async def main() -> list[bytes]:
        response = await pool().send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=5, is_stream=True)
        chunks = []
        while chunk := await response.read_chunk():
            chunks.append(chunk)
        return chunks

    chunks = run(main())
    assert len(chunks) >= 4  # the delays keep events apart: nothing waited for the end
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")


def test_body_without_length_ends_at_the_close_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            client = pool()
            for _ in range(2):
                response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
                assert await response.read() == b"until the end"
            assert server.connections == 2

    run(main())


def test_interim_1xx_response_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            response = await pool().send(target(server.url), BODY, timeout_s=5, is_stream=False)
            assert response.status == 200 and response.header(b"link") is None
            assert await response.read() == b"{}"

    run(main())


def test_garbage_answer_is_an_invalid_response() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with RawServer(handler) as server:
            with pytest.raises(InvalidResponse):
                await pool().send(target(server.url), BODY, timeout_s=5, is_stream=False)

    run(main())


# --- keep-alive ------------------------------------------------------------------------


def test_keep_alive_connection_is_reused() -> None:
    async def main() -> None:
        async with RawServer(answer_each) as server:
            client = pool()
            for _ in range(3):
                response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
                assert await response.read() == b"{}"
            assert server.connections == 1

    run(main())


def test_connection_close_answer_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()  # keep our side open: only the client's close may end it

    async def main() -> None:
        async with RawServer(handler) as server:
            client = pool()
            for _ in range(2):
                response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
                assert await response.read() == b"{}"
            assert server.connections == 2

    run(main())


def test_unread_response_is_not_reused() -> None:
    async def main() -> None:
        async with RawServer(answer_each) as server:
            client = pool()
            response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=True)
            response.close()  # complete already (tiny body) or not: either way it is safe
            response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
            assert await response.read() == b"{}"

    run(main())


def test_idle_connection_dropped_on_reuse_is_retried_once_on_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        if index == 1:  # the first connection answers once, then drops the next request
            writer.write(OK)
            await writer.drain()
            await read_request(reader)
            return
        writer.write(OK)
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            client = pool()
            for _ in range(2):
                response = await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
                assert await response.read() == b"{}"
            assert server.connections == 2

    run(main())


def test_drop_on_a_new_connection_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)

    async def main() -> None:
        async with RawServer(handler) as server:
            with pytest.raises(ServerDisconnected):
                await pool().send(target(server.url), BODY, timeout_s=5, is_stream=False)
            assert server.connections == 1

    run(main())


def test_drop_after_part_of_the_answer_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            client = pool()
            await (await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)).read()
            with pytest.raises(ServerDisconnected):
                await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)
            assert server.connections == 1

    run(main())


def test_body_cut_short_of_its_length_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async def main() -> None:
        async with RawServer(handler) as server:
            response = await pool().send(target(server.url), BODY, timeout_s=5, is_stream=False)
            with pytest.raises(ServerDisconnected):
                await response.read()

    run(main())


def test_pool_limit_bounds_the_open_connections() -> None:
    busy = 0
    most = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        try:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        finally:
            busy -= 1

    async def main() -> None:
        async with RawServer(handler) as server:
            client = pool(limit=2)

            async def one() -> bytes:
                return await (await client.send(target(server.url), BODY, timeout_s=5, is_stream=False)).read()

            assert await asyncio.gather(*(one() for _ in range(6))) == [b"{}"] * 6
            assert server.connections == 6 and most <= 2

    run(main())


# --- failures, timeouts, closing -------------------------------------------------------


def test_refused_connection_is_connect_failed() -> None:
    with pytest.raises(ConnectFailed, match="cannot connect"):
        run(pool().send(target(f"http://127.0.0.1:{free_port()}/v1"), BODY, timeout_s=5, is_stream=False))


def test_slow_connect_is_connect_timeout() -> None:
    # A listener that never accepts, its backlog full: the next SYN goes unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with pytest.raises(ConnectTimeout):
            run(pool(connect_timeout_s=0.3).send(target(url), BODY, timeout_s=5, is_stream=False))
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_total_timeout_closes_the_upstream_request(upstream: UpstreamServer) -> None:
    upstream.push(Reply.hang())
    with pytest.raises(ResponseTimeout):
        run(pool().send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=0.3, is_stream=False))
    wait_for(upstream.wait_for_requests()[0].closed_early.is_set, timeout_s=2, what="upstream to see the close")


def test_stream_times_out_on_silence_not_on_length(upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["a", "b", "c", "d", "e"], delay_s=0.1), Reply.stream(["first"], hang_after=True))

    async def main() -> None:
        client = pool()
        # 0.6 s of events 0.1 s apart: longer than the timeout, never silent for as long.
        response = await client.send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=0.35, is_stream=True)
        while await response.read_chunk():
            pass
        response = await client.send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=0.35, is_stream=True)
        assert await response.read_chunk()
        with pytest.raises(ResponseTimeout):
            while await response.read_chunk():
                pass

    run(main())
    wait_for(upstream.requests[1].closed_early.is_set, timeout_s=2, what="upstream to see the close")


def test_closing_an_unfinished_stream_closes_the_upstream_at_once(upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["first"], hang_after=True))

    async def main() -> None:
        response = await pool().send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=30, is_stream=True)
        assert await response.read_chunk()
        response.close()

    run(main())
    wait_for(upstream.requests[0].closed_early.is_set, timeout_s=1, what="upstream to see the close")


def test_cancelled_request_closes_the_upstream_at_once(upstream: UpstreamServer) -> None:
    upstream.push(Reply.hang())

    async def main() -> None:
        task = asyncio.ensure_future(pool().send(target(f"{upstream.url}/chat/completions"), BODY, timeout_s=30, is_stream=False))
        while not upstream.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    wait_for(upstream.requests[0].closed_early.is_set, timeout_s=1, what="upstream to see the close")


def test_slow_consumer_pauses_reading_until_it_catches_up() -> None:
    size = 64 * 1024 * 1024
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"x" * (1024 * 1024)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
            sent += len(piece)

    async def main() -> None:
        async with RawServer(handler) as server:
            response = await pool().send(target(server.url), BODY, timeout_s=30, is_stream=True)
            await asyncio.sleep(0.3)  # a consumer busy elsewhere
            assert response.buffered < 1024 * 1024  # paused well short of the body
            assert sent < size
            received = 0
            while chunk := await response.read_chunk():
                received += len(chunk)
            assert received == size

    run(main())
