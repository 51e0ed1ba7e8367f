"""Passthrough overhead: the same load sent straight to an upstream and through the gateway.

    .venv/bin/python bench/passthrough.py [--duration 10] [--log-level INFO]

Starts a fast canned OpenAI-compatible upstream (raw asyncio + uvloop, its own
process) and a real gateway (`jetty serve`, recording on, default logging), drives
both with `wrk` (bench/post.lua), and prints the latency the gateway adds (p50/p99
at concurrency 1) and requests/s at concurrency 32, non-streamed and streamed, plus
the gateway's resident memory after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "post.lua"

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
).encode()


def _stream_body() -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}
    deltas = [{"role": "assistant", "content": ""}, {"content": "Hello!"}, {"content": " How can I"}, {"content": " help you today?"}, {}]
    out = b""
    for index, delta in enumerate(deltas):
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if index == len(deltas) - 1 else None}
        event = b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"
        out += b"%x\r\n%s\r\n" % (len(event), event)
    done = b"data: [DONE]\n\n"
    return out + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)


JSON_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION)
STREAM_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + _stream_body()


class _CannedUpstream(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: reads each request, answers the canned body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 : head.find(b"\r\n", marker) if head.find(b"\r\n", marker) > 0 else None])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            is_stream = b'"stream":true' in body or b'"stream": true' in body
            self.transport.write(STREAM_RESPONSE if is_stream else JSON_RESPONSE)  # type: ignore[attr-defined]


def serve_upstream(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_CannedUpstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up")


def wrk(url: str, body: dict[str, object], *, connections: int, duration_s: int, token: str = "") -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": json.dumps(body), "BENCH_TOKEN": token}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s", "-s", str(LUA), url]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    result = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["errors"] or result["non2xx"]:
        print(f"  warning: {result['errors']} socket errors, {result['non2xx']} non-2xx on {url}", file=sys.stderr)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--log-level", default="INFO", help="gateway JETTY_LOG_LEVEL (default INFO, as shipped)")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # internal: run the canned upstream
    args = parser.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return

    work = Path(tempfile.mkdtemp(prefix="jetty-bench-"))
    upstream_port, gateway_port = _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    (work / "models.yaml").write_text(
        f"model_list:\n  - model_name: bench\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{upstream_url}', api_key: sk-bench}}\n"
    )
    token = "jty_admin_bench_" + os.urandom(8).hex()
    env = {
        **os.environ,
        "JETTY_HOST": "127.0.0.1",
        "JETTY_PORT": str(gateway_port),
        "JETTY_DATA_DIR": str(work / "data"),
        "JETTY_ADMIN_TOKEN": token,
        "JETTY_MODELS_FILE": str(work / "models.yaml"),
        "JETTY_LOG_LEVEL": args.log_level,
        "JETTY_LOG_JSON": "1",
    }
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(upstream_port)])
    log = open(work / "gateway.log", "wb")  # noqa: SIM115
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{gateway_port}/v1/status")
        _wait(f"http://127.0.0.1:{upstream_port}/")
        messages = [{"role": "user", "content": "Hello, how are you?"}]
        rows = []
        for label, stream in (("non-streamed", False), ("streamed", True)):
            body: dict[str, object] = {"model": "gpt-4o-mini", "messages": messages, "stream": stream}
            via = {**body, "model": "bench"}
            gw_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
            wrk(gw_url, via, connections=8, duration_s=2, token=token)  # warm up pools and caches
            direct_c1 = wrk(f"{upstream_url}/chat/completions", body, connections=1, duration_s=args.duration)
            gateway_c1 = wrk(gw_url, via, connections=1, duration_s=args.duration, token=token)
            direct_c32 = wrk(f"{upstream_url}/chat/completions", body, connections=32, duration_s=args.duration)
            cpu_before = cpu_seconds(gateway.pid)
            gateway_c32 = wrk(gw_url, via, connections=32, duration_s=args.duration, token=token)
            # CPU per request holds steady on a busy machine, where wall-clock figures do not.
            gateway_c32["cpu_us"] = (cpu_seconds(gateway.pid) - cpu_before) / gateway_c32["requests"] * 1e6
            rows.append((label, direct_c1, gateway_c1, direct_c32, gateway_c32))
        rss = rss_kib(gateway.pid)
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(30)
        upstream.wait(10)

    print(f"\nPassthrough benchmark ({os.cpu_count()} CPUs, wrk -t1, {args.duration}s per run, gateway log level {args.log_level}, recording on)\n")
    print(f"{'':14}{'direct p50':>12}{'gateway p50':>13}{'added p50':>11}{'added p99':>11}{'direct c32':>13}{'gateway c32':>13}{'gw CPU/req':>12}")
    for label, d1, g1, d32, g32 in rows:
        print(
            f"{label:14}{d1['p50_us'] / 1000:>10.3f}ms{g1['p50_us'] / 1000:>11.3f}ms"
            f"{(g1['p50_us'] - d1['p50_us']) / 1000:>9.3f}ms{(g1['p99_us'] - d1['p99_us']) / 1000:>9.3f}ms"
            f"{d32['rps']:>9.0f} r/s{g32['rps']:>9.0f} r/s{g32['cpu_us']:>9.0f} µs"
        )
    print(f"\ngateway resident memory after the run: {rss / 1024:.1f} MiB (VmRSS)")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average during the run: {' '.join(load)} (figures are only comparable on an idle machine)")


if __name__ == "__main__":
    main()
