"""Local backend: a work directory per sandbox, isolated with bubblewrap.

Each sandbox is `<data_dir>/sandboxes/<id>/` holding `meta.json` (run, instance,
pid, expiry: what the reaper needs after a crash) and `app/`, the workspace, which
bubblewrap mounts at /app so paths match the docker backend. Inside: new user, pid,
network, ipc, uts and cgroup namespaces, uid 1000, the host's /usr read-only, nothing
else of the host. Without bubblewrap the backend refuses to run unless unisolated mode
is explicitly allowed, and then every result says so.

Network: `none` unshares the network namespace (loopback only); any other value
shares the host's network (there are no named networks outside Docker).

Limits: when this process can manage cgroups (root, or a delegated cgroup v2; see
`_cgroups.py`), each sandbox has a cgroup `jetty/<id>` with the spec's memory (swap
off, so a hog is OOM-killed and the result says `oom_killed`), pids and CPU quota, as
Docker does. The sandbox enters it before bwrap starts: a `sh` wrapper writes its own
pid to `cgroup.procs` and then execs bwrap, so every process of the sandbox is a
descendant of a process already in the cgroup and nothing can slip out in between.
Destroying a sandbox kills whatever is left in its cgroup (also commands that left
bwrap's session) and deletes it. Otherwise the limits fall back to rlimits, and every
result's `warning` says so: memory is RLIMIT_AS (a hog fails to allocate rather than
being OOM-killed), processes are RLIMIT_NPROC (counted per user namespace on Linux >=
5.14, not enforced for root), CPU is not limited; the wall clock is always enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio

from sandboxes._agent_sandbox import AgentSandbox
from sandboxes._cgroups import SandboxCgroups, detect
from sandboxes._channel import AGENT_SOURCE, AgentChannel
from sandboxes.errors import SandboxError, SandboxUnavailable
from sandboxes.models import ExecResult, OutputChunk, SandboxSpec
from sandboxes.protocol import Command, Sandbox, SandboxRecord

logger = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 20.0
_SYSTEM_DIRS = ("bin", "lib", "lib64", "lib32", "sbin")
_ETC_FILES = ("alternatives", "ssl", "ca-certificates", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types")
_PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\njetty:x:1000:1000:jetty:/app:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\njetty:x:1000:\nnogroup:x:65534:\n"
# Joins the cgroup(s) named by $2.. ($1 of them), then execs the rest: the sandbox's
# first process is in its cgroup before it runs anything, so all its children are too.
_ENTER_CGROUP = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def agent_python() -> tuple[str, list[str]]:
    """The python3 to run the agent with, and extra host dirs it needs bound read-only."""
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3", []
    real = Path(sys.executable).resolve()
    return str(real), [sys.base_prefix]


def probe_bwrap() -> str | None:
    """None when bubblewrap can create our namespaces here, else the reason it cannot."""
    path = bwrap_path()
    if path is None:
        return "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    try:
        result = subprocess.run(
            [path, *_bwrap_system_args(), "--unshare-all", "--uid", "1000", "--gid", "1000", "--", "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to run: {exc}"
    if result.returncode != 0:
        return f"bwrap cannot create namespaces here: {result.stderr.decode(errors='replace').strip()[:300]}"
    return None


def _bwrap_system_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def weak_limits_warning(reason: str) -> str:
    return (
        f"weak resource limits: no cgroups ({reason}); memory is RLIMIT_AS (allocations fail, "
        "no OOM kill), CPU is not limited, processes are RLIMIT_NPROC (not enforced for root)"
    )


class LocalSandbox(AgentSandbox):
    backend = "local"

    def __init__(
        self,
        *,
        process: asyncio.subprocess.Process,
        root: Path,
        cgroups: SandboxCgroups | None,
        limits_warning: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.process = process
        self.root = root
        self._cgroups = cgroups
        self._limits_warning = limits_warning

    async def _shutdown(self) -> None:
        await _kill_process(self.process)
        try:
            if self._cgroups is not None:
                # Also kills what left bwrap's session (unisolated mode has no pid namespace).
                await anyio.to_thread.run_sync(self._cgroups.remove, self.id)
        finally:
            await anyio.to_thread.run_sync(_rmtree, self.root)

    def _oom_kills(self) -> int | None:
        # A small cgroupfs read, no disk behind it: cheaper inline than a thread hop per exec.
        return None if self._cgroups is None else self._cgroups.oom_kills(self.id)

    def _with_limits(self, result: ExecResult, oom_before: int | None) -> ExecResult:
        """Add what only the host sees: the cgroup's OOM counter (the agent has no /sys) and weak-limit warnings."""
        after = self._oom_kills()
        # SIGKILL plus a higher counter: the OOM killer, unless our own timeout sent that signal.
        oom = result.oom_killed or (
            oom_before is not None and after is not None and after > oom_before
            and result.exit_code == 137 and not result.timed_out
        )
        warnings = [w for w in (result.warning, self._limits_warning) if w]
        return dataclasses.replace(result, oom_killed=oom, warning="; ".join(warnings) or None)

    async def exec(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        """Run a command to completion; limits show in the result (`timed_out`, `oom_killed`), not as errors."""
        before = self._oom_kills()
        result = await super().exec(cmd, timeout_s=timeout_s, env=env, workdir=workdir)
        return self._with_limits(result, before)

    async def exec_stream(
        self,
        cmd: Command,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> AsyncIterator[OutputChunk]:
        """Yield stdout/stderr chunks as they come, then one `exit` chunk with the full result."""
        before = self._oom_kills()
        async for chunk in super().exec_stream(cmd, timeout_s=timeout_s, env=env, workdir=workdir):
            if chunk.stream == "exit" and chunk.result is not None:
                chunk = OutputChunk("exit", result=self._with_limits(chunk.result, before))
            yield chunk


async def _kill_process(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    if process.returncode is None:
        # bwrap is the leader of its own session; with --unshare-pid its death kills the rest.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)


def _rmtree(path: Path) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable)


def _is_our_process(pid: object, root: Path) -> bool:
    """True if `pid` is still this sandbox's bwrap/agent (not a recycled pid)."""
    if not isinstance(pid, int):
        return False
    try:
        return str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class LocalBackend:
    """Creates sandboxes as bubblewrap processes over work directories."""

    name = "local"

    def __init__(self, *, data_dir: Path, instance: str, allow_unisolated: bool) -> None:
        self.base = data_dir / "sandboxes"
        self.instance = instance
        self.allow_unisolated = allow_unisolated
        self._isolation_error: str | None = None
        self._checked = False
        self.cgroups: SandboxCgroups | None = None
        self.cgroups_error: str | None = None

    @property
    def isolated(self) -> bool:
        return self._isolation_error is None

    @property
    def limits_warning(self) -> str | None:
        """None when sandboxes get cgroup limits, else what is weaker without them."""
        return weak_limits_warning(self.cgroups_error) if self.cgroups_error else None

    async def check(self) -> None:
        """Raise SandboxUnavailable when bwrap cannot isolate and unisolated mode is not allowed."""
        if not self._checked:
            self._isolation_error = await anyio.to_thread.run_sync(probe_bwrap)
            found = await anyio.to_thread.run_sync(detect)
            self.cgroups, self.cgroups_error = (found, None) if isinstance(found, SandboxCgroups) else (None, found)
            if self.cgroups_error:
                logger.warning("local sandboxes have weak limits (rlimits only) reason=%s", self.cgroups_error)
            self._checked = True
        if self._isolation_error and not self.allow_unisolated:
            raise SandboxUnavailable(
                f"local sandboxes need bubblewrap: {self._isolation_error}; "
                "set JETTY_SANDBOX_ALLOW_UNISOLATED=1 to run commands on this host without isolation"
            )
        if self._isolation_error:
            logger.warning("local sandboxes run UNISOLATED reason=%s", self._isolation_error)

    def _command(self, spec: SandboxSpec, root: Path, workspace: Path) -> list[str]:
        python, extra = agent_python()
        agent = [python, "-u", "-c", AGENT_SOURCE, spec.workdir if self.isolated else str(workspace)]
        if not self.isolated:
            return agent
        (root / "passwd").write_text(_PASSWD)
        (root / "group").write_text(_GROUP)
        args = [bwrap_path() or "bwrap", *_bwrap_system_args()]
        for name in _ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for path in extra:
            args += ["--ro-bind", path, path]
        args += ["--ro-bind", str(root / "passwd"), "/etc/passwd", "--ro-bind", str(root / "group"), "/etc/group"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(workspace), spec.workdir]
        args += ["--unshare-all"]
        if spec.network != "none":
            args += ["--share-net", "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf", "--ro-bind-try", "/etc/hosts", "/etc/hosts"]
        args += ["--uid", "1000", "--gid", "1000", "--hostname", "jetty-sandbox"]
        args += ["--die-with-parent", "--new-session", "--chdir", spec.workdir, "--clearenv"]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": spec.workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        for key, value in env.items():
            args += ["--setenv", key, value]
        return [*args, "--", *agent]

    def _write_meta(self, root: Path, **meta: Any) -> None:
        tmp = root / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(root / "meta.json")

    async def create(self, spec: SandboxSpec, *, run_id: str | None) -> Sandbox:
        """Make the work directory and start the agent in bubblewrap (or bare, if allowed)."""
        await self.check()
        sandbox_id = secrets.token_hex(6)
        root = self.base / sandbox_id
        workspace = root / "app"
        for sub in ("results", "assets"):
            (workspace / sub).mkdir(parents=True, exist_ok=True)
        expires = time.time() + spec.timeout_s if run_id else None
        self._write_meta(root, id=sandbox_id, run_id=run_id, instance=self.instance, pid=None, expires_at=expires, created=time.time())
        try:
            return await self._start(spec, sandbox_id, root, workspace, run_id, expires)
        except BaseException:
            await anyio.to_thread.run_sync(self._remove_sync, root)
            raise

    async def _start(
        self, spec: SandboxSpec, sandbox_id: str, root: Path, workspace: Path, run_id: str | None, expires: float | None
    ) -> Sandbox:
        env = None if self.isolated else {"PATH": os.defpath, "HOME": str(workspace), "LANG": "C.UTF-8"}
        command = self._command(spec, root, workspace)
        cgroups = self.cgroups
        if cgroups is not None:
            procs = await anyio.to_thread.run_sync(
                lambda: cgroups.create(sandbox_id, memory_mb=spec.memory_mb, pids_limit=spec.pids_limit, cpus=spec.cpus)
            )
            command = ["/bin/sh", "-c", _ENTER_CGROUP, "jetty-enter-cgroup", str(len(procs)), *map(str, procs), *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
            limit=1 << 20,
        )
        self._write_meta(root, id=sandbox_id, run_id=run_id, instance=self.instance, pid=process.pid, expires_at=expires)
        assert process.stdout is not None and process.stdin is not None and process.stderr is not None
        stdout, stdin, stderr = process.stdout, process.stdin, process.stderr

        async def read() -> bytes:
            return await stdout.read(1 << 16)

        async def write(data: bytes) -> None:
            stdin.write(data)
            await stdin.drain()

        async def log_stderr() -> None:
            async for line in stderr:
                logger.warning("sandbox agent stderr sandbox=%s text=%s", sandbox_id, line[:500])

        asyncio.get_running_loop().create_task(log_stderr())
        rlimits: dict[str, int] = {}
        if cgroups is None:
            rlimits["RLIMIT_AS"] = spec.memory_mb * 1024 * 1024
            if self.isolated:
                # Outside a user namespace RLIMIT_NPROC would count every process of our host user.
                rlimits["RLIMIT_NPROC"] = spec.pids_limit
        sandbox = LocalSandbox(
            process=process,
            root=root,
            cgroups=cgroups,
            limits_warning=self.limits_warning,
            sandbox_id=sandbox_id,
            spec=spec,
            channel=AgentChannel(read, write, name=sandbox_id),
            run_id=run_id,
            isolated=self.isolated,
            workspace=spec.workdir if self.isolated else str(workspace),
            rlimits=rlimits,
        )
        try:
            await sandbox._channel.start(HELLO_TIMEOUT_S)
        except SandboxError as exc:
            await sandbox.destroy()
            raise SandboxError(f"local sandbox failed to start: {exc}") from exc
        logger.info(
            "sandbox created backend=local sandbox=%s run_id=%s isolated=%s cgroups=%s",
            sandbox_id, run_id, self.isolated, cgroups is not None,
        )
        return sandbox

    async def assign(self, sandbox: Sandbox, run_id: str) -> None:
        assert isinstance(sandbox, LocalSandbox)
        expires = time.time() + sandbox.spec.timeout_s
        self._write_meta(sandbox.root, id=sandbox.id, run_id=run_id, instance=self.instance, pid=sandbox.process.pid, expires_at=expires)

    async def list_records(self) -> list[SandboxRecord]:
        def scan() -> list[SandboxRecord]:
            records: list[SandboxRecord] = []
            if self.cgroups is not None:
                # A cgroup outlives a crash that took its work directory with it; such a
                # record is past its life (expires_at 0), so the reaper removes it.
                known = {p.name for p in self.base.iterdir()} if self.base.is_dir() else set()
                records += [
                    SandboxRecord(id=i, run_id=None, instance=None, expires_at=0.0, running=False)
                    for i in self.cgroups.leftovers()
                    if i not in known
                ]
            if not self.base.is_dir():
                return records
            for root in self.base.iterdir():
                try:
                    meta = json.loads((root / "meta.json").read_text())
                except (OSError, ValueError):
                    meta = {}
                records.append(
                    SandboxRecord(
                        id=root.name,
                        run_id=meta.get("run_id"),
                        instance=meta.get("instance"),
                        expires_at=meta.get("expires_at"),
                        running=_is_our_process(meta.get("pid"), root)
                        # no pid yet: still being created, unless that was long ago
                        or (meta.get("pid") is None and time.time() - meta.get("created", 0) < 300),
                    )
                )
            return records

        return await anyio.to_thread.run_sync(scan)

    async def remove(self, record_id: str) -> None:
        """Kill the sandbox's processes (if still ours) and delete its directory and cgroup."""
        root = self.base / record_id
        if root.parent != self.base or not root.name:
            raise SandboxError(f"bad sandbox id {record_id!r}")

        await anyio.to_thread.run_sync(self._remove_sync, root)

    def _remove_sync(self, root: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = json.loads((root / "meta.json").read_text()).get("pid")
            if _is_our_process(pid, root):
                os.killpg(int(pid), signal.SIGKILL)
        try:
            if self.cgroups is not None:
                self.cgroups.remove(root.name)
        except (OSError, ValueError) as exc:
            logger.warning("sandbox cgroup not removed sandbox=%s error=%s", root.name, exc)
        _rmtree(root)

    async def close(self) -> None:
        return None
