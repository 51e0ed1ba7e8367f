"""Values that cross the sandbox boundary: what to create, what an exec returned."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_WORKDIR = "/app"


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a sandbox should look like; defaults are the safe ones (no network)."""

    image: str | None = None  # None: settings.sandbox_image
    network: str = "none"  # "none", or a Docker network name when the run may reach out
    cpus: float = 1.0
    memory_mb: int = 1024
    pids_limit: int = 256
    timeout_s: float = 3600.0  # wall-clock lifetime of the whole sandbox
    exec_timeout_s: float = 600.0  # default per-command wall clock
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = DEFAULT_WORKDIR
    max_output_bytes: int = 1024 * 1024  # per stream, per command

    def is_poolable(self, default_image: str) -> bool:
        """Pooled sandboxes are created before the spec is known, so only the default shape qualifies."""
        base = SandboxSpec()
        return (
            (self.image in (None, default_image))
            and self.network == base.network
            and self.cpus == base.cpus
            and self.memory_mb == base.memory_mb
            and self.pids_limit == base.pids_limit
            and self.workdir == base.workdir
        )


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of one command. `exit_code` is 128+signal when killed, 127 when not found."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    truncated: bool = False
    timed_out: bool = False
    oom_killed: bool = False
    isolated: bool = True
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A piece of output as it arrives from `exec_stream`; the last item carries the result."""

    stream: str  # "stdout" | "stderr" | "exit"
    data: bytes = b""
    result: ExecResult | None = None


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of `list_files`, with a path relative to the listed directory."""

    path: str
    size: int
    is_dir: bool
    mtime: float
