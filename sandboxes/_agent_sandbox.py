"""`Sandbox` operations shared by both backends, spoken to the in-sandbox agent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sandboxes._channel import AgentChannel, decode, encode
from sandboxes.errors import SandboxClosed, SandboxError, SandboxFileError
from sandboxes.models import ExecResult, FileEntry, OutputChunk, SandboxSpec
from sandboxes.protocol import Command

logger = logging.getLogger(__name__)

UNISOLATED_WARNING = "this sandbox is NOT isolated: bubblewrap is unavailable and JETTY_SANDBOX_ALLOW_UNISOLATED=1"
# How long past the command's own timeout we wait for the agent before declaring it dead.
AGENT_GRACE_S = 10.0
FILE_TIMEOUT_S = 60.0

# Diff of the workspace against HEAD including untracked files, through a throwaway
# index so the repository's own index is left as the run made it. Exit 3: not a repo.
_GIT_DIFF = r"""
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 3
idx=$(mktemp) || exit 1
trap 'rm -f "$idx"' EXIT
export GIT_INDEX_FILE="$idx"
# A fresh index from HEAD (no stat cache), so same-size edits within one mtime tick
# are still seen: a copied index would make git trust stale stat data ("racy git").
if git rev-parse --verify -q HEAD >/dev/null; then base=HEAD; git read-tree HEAD || exit 1
else base=4b825dc642cb6eb9a060e54bf8d69288fbee4904; rm -f "$idx"; fi
git add -A >/dev/null 2>&1 || exit 1
git -c core.quotepath=off diff --cached --binary "$base"
"""


class AgentSandbox:
    """A sandbox whose commands and files go through an `AgentChannel`."""

    backend = "agent"

    def __init__(
        self,
        *,
        sandbox_id: str,
        spec: SandboxSpec,
        channel: AgentChannel,
        run_id: str | None,
        isolated: bool,
        workspace: str,
        rlimits: Mapping[str, int] | None = None,
    ) -> None:
        self.id = sandbox_id
        self.spec = spec
        self.run_id = run_id
        self.isolated = isolated
        self.workspace = workspace
        self._channel = channel
        self._rlimits = dict(rlimits or {})
        self._destroyed = False
        self._destroying: asyncio.Future[None] | None = None
        self._lifetime: asyncio.TimerHandle | None = None
        self.created_at = time.time()

    # -- lifetime ---------------------------------------------------------
    def arm_lifetime(self, seconds: float | None = None) -> None:
        """Destroy the sandbox after its wall-clock lifetime, even if the caller forgets."""
        if self._lifetime is not None:
            self._lifetime.cancel()
        loop = asyncio.get_running_loop()
        delay = self.spec.timeout_s if seconds is None else seconds
        self._lifetime = loop.call_later(delay, lambda: asyncio.ensure_future(self._expire()))

    async def _expire(self) -> None:
        logger.warning("sandbox lifetime exceeded sandbox=%s run_id=%s", self.id, self.run_id)
        await self.destroy(reason=f"its lifetime of {self.spec.timeout_s:g}s ran out")

    @property
    def is_alive(self) -> bool:
        return not self._destroyed and not self._channel.closed

    async def destroy(self, reason: str = "it was destroyed") -> None:
        """Kill everything in the sandbox and delete it; a second call waits for the first."""
        if self._destroying is None:
            self._destroyed = True
            if self._lifetime is not None:
                self._lifetime.cancel()
            if not self._channel.closed:
                self._channel.close_reason = reason
            # A task of its own, so a caller's cancellation cannot leave half a sandbox behind.
            self._destroying = asyncio.ensure_future(self._teardown())
        await asyncio.shield(self._destroying)

    async def _teardown(self) -> None:
        try:
            await self._shutdown()
        finally:
            await self._channel.close()
        logger.info("sandbox destroyed sandbox=%s run_id=%s", self.id, self.run_id)

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def _path(self, path: str) -> str:
        """Unisolated sandboxes have no /app; map the workspace prefix onto their host directory."""
        base = self.spec.workdir.rstrip("/")
        if self.workspace != self.spec.workdir and (path == base or path.startswith(base + "/")):
            return self.workspace + path[len(base) :]
        return path

    def _check_open(self) -> None:
        if self._destroyed:
            raise SandboxClosed(f"sandbox {self.id} is closed: {self._channel.close_reason}")

    # -- commands ---------------------------------------------------------
    def _exec_payload(
        self, cmd: Command, timeout_s: float | None, env: Mapping[str, str] | None, workdir: str | None, stream: bool
    ) -> tuple[dict[str, Any], float]:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(part) for part in cmd]
        if not argv:
            raise ValueError("empty command")
        timeout = float(timeout_s if timeout_s is not None else self.spec.exec_timeout_s)
        payload = {
            "argv": argv,
            "env": {**self.spec.env, **(env or {})},
            "cwd": self._path(workdir or self.spec.workdir),
            "timeout": timeout,
            "max_output": self.spec.max_output_bytes,
            "stream": stream,
            "rlimits": self._rlimits,
        }
        return payload, timeout + AGENT_GRACE_S

    def _result(self, msg: dict[str, Any], stdout: bytes | None = None, stderr: bytes | None = None) -> ExecResult:
        return ExecResult(
            exit_code=int(msg["code"]),
            stdout=decode(msg.get("stdout")) if stdout is None else stdout,
            stderr=decode(msg.get("stderr")) if stderr is None else stderr,
            duration_s=float(msg.get("duration", 0.0)),
            truncated=bool(msg.get("truncated")),
            timed_out=bool(msg.get("timed_out")),
            oom_killed=bool(msg.get("oom_killed")),
            isolated=self.isolated,
            warning=None if self.isolated else UNISOLATED_WARNING,
        )

    async def exec(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        """Run a command to completion; limits show in the result (`timed_out`, `oom_killed`), not as errors."""
        self._check_open()
        payload, wait_s = self._exec_payload(cmd, timeout_s, env, workdir, stream=False)
        try:
            msg = await self._channel.call("exec", payload, wait_s)
        except SandboxFileError as exc:
            raise SandboxError(str(exc)) from None
        except SandboxError:
            await self._on_agent_lost()
            raise
        return self._result(msg)

    async def exec_stream(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> AsyncIterator[OutputChunk]:
        """Yield stdout/stderr chunks as they come, then one `exit` chunk with the full result."""
        self._check_open()
        payload, wait_s = self._exec_payload(cmd, timeout_s, env, workdir, stream=True)
        out, err = bytearray(), bytearray()
        try:
            async for msg in self._channel.stream("exec", payload, wait_s):
                if msg.get("ev") == "out":
                    data = decode(msg.get("data"))
                    (out if msg.get("fd") == 1 else err).extend(data)
                    yield OutputChunk("stdout" if msg.get("fd") == 1 else "stderr", data)
                elif msg.get("ev") == "exit":
                    yield OutputChunk("exit", result=self._result(msg, bytes(out), bytes(err)))
                else:
                    raise SandboxError(msg.get("message", "exec failed"))
        except SandboxClosed:
            raise
        except SandboxError:
            await self._on_agent_lost()
            raise

    async def _on_agent_lost(self) -> None:
        """An agent that stops answering cannot be trusted with the next command."""
        if not self._destroyed:
            logger.error("sandbox agent unresponsive, destroying sandbox=%s run_id=%s", self.id, self.run_id)
            await self.destroy()

    # -- files ------------------------------------------------------------
    async def read_file(self, path: str) -> bytes:
        """Bytes of a file inside the sandbox (relative paths are under the workspace)."""
        self._check_open()
        msg = await self._channel.call("read", {"path": self._path(path)}, FILE_TIMEOUT_S)
        return decode(msg.get("data"))

    async def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        """Create or replace a file, making parent directories as needed."""
        self._check_open()
        await self._channel.call("write", {"path": self._path(path), "data": encode(data), "mode": mode}, FILE_TIMEOUT_S)

    async def list_files(self, path: str = ".", *, recursive: bool = False) -> list[FileEntry]:
        """Entries under a directory, relative to it, directories first per level."""
        self._check_open()
        msg = await self._channel.call("list", {"path": self._path(path), "recursive": recursive}, FILE_TIMEOUT_S)
        return [FileEntry(path=p, size=int(s), is_dir=bool(d), mtime=float(m)) for p, s, d, m in msg["entries"]]

    async def archive(self, path: str = ".") -> bytes:
        """The workspace (or a directory in it) as an uncompressed tar archive."""
        self._check_open()
        msg = await self._channel.call("archive", {"path": self._path(path)}, FILE_TIMEOUT_S * 5)
        return decode(msg.get("data"))

    async def git_diff(self) -> str | None:
        """The workspace's changes against HEAD (untracked files included), or None if not a repository."""
        result = await self.exec(["/bin/sh", "-c", _GIT_DIFF], timeout_s=120)
        if result.exit_code == 3:
            return None
        if result.exit_code != 0:
            raise SandboxError(f"git diff failed (exit {result.exit_code}): {result.stderr_text.strip()[:500]}")
        return result.stdout_text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} run={self.run_id} isolated={self.isolated}>"
