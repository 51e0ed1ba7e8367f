"""The `Sandbox` protocol every backend's sandbox satisfies, and the backend protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sandboxes.models import ExecResult, FileEntry, OutputChunk, SandboxSpec

Command = str | Sequence[str]  # a str runs through /bin/sh -c; a list runs as argv


@runtime_checkable
class Sandbox(Protocol):
    """An isolated workspace (mounted at /app) where a run's commands execute."""

    id: str
    backend: str
    spec: SandboxSpec
    run_id: str | None
    isolated: bool

    @property
    def is_alive(self) -> bool: ...

    async def exec(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult: ...

    def exec_stream(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> AsyncIterator[OutputChunk]: ...

    async def read_file(self, path: str) -> bytes: ...

    async def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> None: ...

    async def list_files(self, path: str = ".", *, recursive: bool = False) -> list[FileEntry]: ...

    async def archive(self, path: str = ".") -> bytes: ...

    async def git_diff(self) -> str | None: ...

    async def destroy(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    """A sandbox as the reaper sees it on the engine or disk, whoever created it."""

    id: str
    run_id: str | None  # None: waiting in a pool
    instance: str | None  # the SandboxService instance that created it
    expires_at: float | None  # epoch seconds after which it is dead whatever the run says
    running: bool = True  # its process/container is up (a crashed owner's pool is not)


class SandboxBackend(Protocol):
    """What `SandboxService` needs from a backend (docker, local)."""

    name: str

    async def check(self) -> None:
        """Raise SandboxUnavailable (with the reason) if this backend cannot run here."""
        ...

    async def create(self, spec: SandboxSpec, *, run_id: str | None) -> Sandbox:
        """Start a sandbox; run_id None makes a pool sandbox."""
        ...

    async def assign(self, sandbox: Sandbox, run_id: str) -> None:
        """Record durably that a pooled sandbox now belongs to `run_id` (for the reaper)."""
        ...

    async def list_records(self) -> list[SandboxRecord]:
        """Every jetty sandbox this backend can see, including other processes' ones."""
        ...

    async def remove(self, record_id: str) -> None:
        """Kill and delete a sandbox by record id; missing is fine."""
        ...

    async def close(self) -> None: ...
