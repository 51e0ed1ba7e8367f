"""The gateway as a real process: `jetty serve` on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """One gateway process with its own data dir; `env` adds or overrides JETTY_* settings."""

    def __init__(self, database_url: str | None = None, env: dict[str, str] | None = None, data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="jetty-gw-"))
        self.admin_token = "jty_admin_test_" + os.urandom(12).hex()
        self.env = {
            **os.environ,
            "JETTY_HOST": "127.0.0.1",
            "JETTY_PORT": str(self.port),
            "JETTY_DATA_DIR": str(self.data_dir),
            "JETTY_ADMIN_TOKEN": self.admin_token,
            "JETTY_LOG_JSON": "1",
            "JETTY_KEY_SYNC_INTERVAL_S": "0.2",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # Tests that run sandboxes choose their backend; the others must not
            # start a warm pool of containers with every gateway.
            "JETTY_SANDBOX_BACKEND": "local",
            "JETTY_SANDBOX_POOL_SIZE": "0",
            **(env or {}),
        }
        if database_url:
            self.env["JETTY_DATABASE_URL"] = database_url
        self.log_path = self.data_dir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> GatewayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout_s=timeout_s, interval_s=0.05, what=f"gateway on {self.url}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.logs()[-3000:]}")
        return httpx.get(f"{self.url}/v1/status", timeout=2).status_code == 200

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        """Stop the process (SIGTERM: graceful) and return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def admin(self, **kwargs: Any) -> httpx.Client:
        return self.client(self.admin_token, **kwargs)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def create_key(self, **body: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/v1/keys", json=body)
            response.raise_for_status()
            return response.json()
