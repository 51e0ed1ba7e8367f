"""Logging: one line per event, JSON when stderr is not a terminal.

Also the request log: one line per HTTP request with method, path, status and
latency, written by a plain ASGI wrapper so it costs almost nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

# Record attributes that are not extras; `color_message` is uvicorn's ANSI-coloured copy of `msg`.
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


# What `json.dumps(entry, default=str)` does, without building an encoder per line.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            # litellm stamps its own fields on every record once imported; not ours to log.
            if key not in _STD_ATTRS and not key.startswith(("_", "litellm")):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry)


def configure_logging(level: str = "INFO", json_output: bool | None = None) -> None:
    """Configure the root logger once; JSON unless stderr is a TTY (or as forced)."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "LiteLLM", "docker", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RequestLogMiddleware:
    """ASGI wrapper logging `method path status latency_ms` for each request; never bodies or headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("jetty.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method: str = scope.get("method", "")  # type: ignore[assignment]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log = self.log
            if log.isEnabledFor(logging.INFO):
                latency_ms = round((time.perf_counter() - started) * 1000, 2)
                path = scope["path"]
                # `Logger.info` would also walk the stack for a caller location that says
                # nothing here; a record made directly costs a fraction (measured).
                record = log.makeRecord(
                    log.name,
                    logging.INFO,
                    __file__,
                    0,
                    "%s %s %s %.2fms",
                    (method, path, status, latency_ms),
                    None,
                    extra={"method": method, "path": path, "status": status, "latency_ms": latency_ms},
                )
                log.handle(record)
