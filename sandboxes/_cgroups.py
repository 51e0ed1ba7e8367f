"""Cgroups for local sandboxes: memory, pids and CPU limits, OOM counts, cleanup.

Every sandbox gets a cgroup `jetty/<sandbox id>`: in the memory, pids and cpu
hierarchies under cgroup v1, or one cgroup with those controllers under cgroup v2.
Like Docker's cgroupfs driver, the `jetty` parent sits at the top of each hierarchy
(where root may write), so a restarted gateway finds what a crashed one left. A
gateway that is not root can still use cgroup v2 through a delegated cgroup (systemd
`Delegate=yes`): the nearest writable ancestor of its own cgroup that already hands
the three controllers down.

This module is plain blocking file I/O on cgroupfs; callers run the slow parts
(creation, removal) in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
_ID_RE = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class SandboxCgroups:
    """The `jetty` parent cgroup(s) this process may create sandbox cgroups in."""

    version: int  # 1 or 2
    # v1: one `jetty` directory per controller; v2: {"unified": <the jetty directory>}
    parents: dict[str, Path]

    @property
    def description(self) -> str:
        where = ", ".join(str(p) for p in self.parents.values())
        return f"cgroup v{self.version} (memory, pids, cpu) under {where}"

    def _dirs(self, sandbox_id: str) -> list[Path]:
        if not _ID_RE.match(sandbox_id):
            raise ValueError(f"bad sandbox id {sandbox_id!r}")
        return [parent / sandbox_id for parent in self.parents.values()]

    def _dir(self, controller: str, sandbox_id: str) -> Path:
        parent = self.parents["unified" if self.version == 2 else controller]
        return parent / sandbox_id

    def create(
        self, sandbox_id: str, *, memory_mb: int, pids_limit: int, cpus: float
    ) -> list[Path]:
        """Make the sandbox's cgroup(s) with its limits; return the `cgroup.procs` files to join."""
        memory = str(memory_mb * 1024 * 1024)
        quota = str(max(1000, int(cpus * CPU_PERIOD_US)))
        try:
            for path in self._dirs(sandbox_id):
                path.mkdir()
            if self.version == 1:
                mem = self._dir("memory", sandbox_id)
                _write(mem / "memory.limit_in_bytes", memory)
                # Memory + swap at the same figure: a hog is OOM-killed instead of swapping.
                if not _write_optional(mem / "memory.memsw.limit_in_bytes", memory):
                    _write_optional(mem / "memory.swappiness", "0")
                _write(self._dir("pids", sandbox_id) / "pids.max", str(pids_limit))
                cpu = self._dir("cpu", sandbox_id)
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", quota)
            else:
                unified = self._dir("memory", sandbox_id)
                _write(unified / "memory.max", memory)
                _write_optional(unified / "memory.swap.max", "0")
                _write(unified / "pids.max", str(pids_limit))
                _write(unified / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        except OSError:
            self.remove(sandbox_id)
            raise
        return [path / "cgroup.procs" for path in self._dirs(sandbox_id)]

    def oom_kills(self, sandbox_id: str) -> int | None:
        """How many processes the OOM killer has killed in this sandbox so far (None: unknown)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self._dir("memory", sandbox_id) / name).read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return None

    def pids(self, sandbox_id: str) -> set[int]:
        """Every process in the sandbox's cgroup(s)."""
        found: set[int] = set()
        for path in self._dirs(sandbox_id):
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
        return found

    def remove(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        """Kill every process in the sandbox's cgroup(s), then delete them; missing ones are fine."""
        dirs = [path for path in self._dirs(sandbox_id) if path.is_dir()]
        deadline = time.monotonic() + timeout_s
        # A process may fork while we kill (up to pids.max); repeat until the cgroup is empty.
        while pids := self.pids(sandbox_id):
            killed_all = self.version == 2 and _write_optional(dirs[0] / "cgroup.kill", "1")
            if not killed_all:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise OSError(
                    errno.EBUSY, f"processes {sorted(pids)[:10]} survive SIGKILL", str(dirs[0])
                )
            time.sleep(0.005)
        for path in dirs:
            # Killed tasks can linger for a moment after leaving cgroup.procs.
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)

    def leftovers(self, min_age_s: float = 60.0) -> list[str]:
        """Ids of empty sandbox cgroups older than `min_age_s` (a crashed gateway's, or a failed create's).

        The age keeps us from deleting a cgroup another gateway has just made and is
        about to enter; the emptiness keeps us from touching a live sandbox of another
        gateway sharing this host with a different data directory.
        """
        now = time.time()
        found: set[str] = set()
        for parent in self.parents.values():
            with contextlib.suppress(FileNotFoundError):
                for path in parent.iterdir():
                    if not (path.is_dir() and _ID_RE.match(path.name)):
                        continue
                    with contextlib.suppress(OSError):
                        if now - path.stat().st_mtime >= min_age_s:
                            found.add(path.name)
        return sorted(sandbox_id for sandbox_id in found if not self.pids(sandbox_id))


def detect(
    mounts_file: Path = Path("/proc/self/mounts"), own_file: Path = Path("/proc/self/cgroup")
) -> SandboxCgroups | str:
    """The cgroups this process can manage for sandboxes, or the reason it cannot."""
    try:
        mounts = _cgroup_mounts(mounts_file.read_text())
    except OSError as exc:
        return f"cannot read {mounts_file}: {exc.strerror}"
    unified = next(
        (m for m, kind in mounts if kind == {"cgroup2"} and _v2_controllers(m) >= set(CONTROLLERS)),
        None,
    )
    if unified is not None:
        return _detect_v2(unified, own_file)
    v1 = {c: next((m for m, kind in mounts if c in kind), None) for c in CONTROLLERS}
    missing = [c for c, mount in v1.items() if mount is None]
    if missing:
        return f"no cgroup hierarchy with the {', '.join(missing)} controller(s) is mounted"
    parents = {c: mount / "jetty" for c, mount in v1.items() if mount is not None}
    try:
        for parent in parents.values():
            parent.mkdir(exist_ok=True)
            if not os.access(parent / "cgroup.procs", os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", str(parent))
    except OSError as exc:
        return f"cannot manage cgroup v1 {exc.filename}: {exc.strerror} (run the gateway as root)"
    return SandboxCgroups(version=1, parents=parents)


def _detect_v2(mount: Path, own_file: Path) -> SandboxCgroups | str:
    candidates = [mount]
    with contextlib.suppress(OSError):
        for line in own_file.read_text().splitlines():
            if line.startswith("0::/"):
                own = mount / line[4:].strip()
                # Our own cgroup holds us, so (no internal processes) only an ancestor can host jetty/.
                candidates += [p for p in own.parents if p.is_relative_to(mount) and p != mount]
    reasons = []
    for base in candidates:
        try:
            if not all(
                os.access(base / f, os.W_OK) for f in ("cgroup.procs", "cgroup.subtree_control")
            ):
                raise PermissionError(errno.EACCES, "not writable", str(base))
            enabled = set((base / "cgroup.subtree_control").read_text().split())
            if not enabled >= set(CONTROLLERS):
                _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
            parent = base / "jetty"
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
            return SandboxCgroups(version=2, parents={"unified": parent})
        except OSError as exc:
            reasons.append(f"{base}: {exc.strerror}")
    return "cannot manage cgroup v2 (run as root or delegate a cgroup): " + "; ".join(reasons[:3])


def _cgroup_mounts(text: str) -> list[tuple[Path, set[str]]]:
    """(mount point, controllers) per cgroup mount; a v2 mount is marked {"cgroup2"}."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2":
            found.append((point, {"cgroup2"}))
        elif fields[2] == "cgroup":
            found.append((point, set(fields[3].split(",")) & set(CONTROLLERS)))
    return found


def _v2_controllers(mount: Path) -> set[str]:
    try:
        return set((mount / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_optional(path: Path, value: str) -> bool:
    """Write a knob the kernel may lack (swap accounting off, older kernels): False if it is not there."""
    try:
        _write(path, value)
    except (FileNotFoundError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    return True
