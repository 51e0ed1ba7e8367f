"""Small real HTTP servers the runbook tests fetch from: a GitHub-API look-alike and a raw host."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.net import free_port


class FileServer:
    """Serves `files[path] = text`; in GitHub mode answers `/repos/o/r/contents/p?ref=` like the API."""

    def __init__(self, files: dict[str, str] | None = None, *, token: str | None = None) -> None:
        self.files: dict[str, str] = dict(files or {})
        self.redirects: dict[str, str] = {}
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                server.requests.append(
                    {"path": path, "query": query, "headers": dict(self.headers)}
                )
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.send_response(404)
                    self.end_headers()
                    return
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.end_headers()
                    return
                key = path
                if path.startswith("/repos/"):
                    # /repos/{owner}/{repo}/contents/{path} at ?ref=
                    segments = path.split("/")
                    key = f"{segments[2]}/{segments[3]}@{query.get('ref')}:{'/'.join(segments[5:])}"
                    if self.headers.get("Accept") != "application/vnd.github.raw":
                        self.send_response(415)
                        self.end_headers()
                        return
                body = server.files.get(key)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
