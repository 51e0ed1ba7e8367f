"""`SandboxService`: picks the backend, keeps a warm pool, reaps leftovers.

Reaper rules, applied at start and every `sandbox_reap_interval_s`, to every
sandbox the backend can see (also those of other or crashed processes):

- waiting in a pool: kept if this service instance created it or if it is still
  running (another live replica's pool); removed when its owner is gone. Each
  service has a random `instance` id. A docker pool container ends by itself when
  its owner's attach connection drops (StdinOnce + auto-remove), a local one when
  its parent dies (--die-with-parent), so "not running" means "owner crashed";
- past its `expires_at`: removed;
- bound to a run: removed unless `is_run_active(run_id)` says the run is still on;
- anything else (no run, no pool mark): removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.settings import Settings
from sandboxes.errors import SandboxError, SandboxUnavailable
from sandboxes.models import SandboxSpec
from sandboxes.protocol import Sandbox, SandboxBackend, SandboxRecord

logger = logging.getLogger(__name__)

IsRunActive = Callable[[str], Awaitable[bool]]
DEFAULT_POOL = {"docker": 2, "local": 0}


def deployment_scope(settings: Settings) -> str:
    """Replicas of one deployment share a database; that is what scopes the reaper."""
    return hashlib.sha256(settings.resolved_database_url.encode()).hexdigest()[:12]


def make_backend(kind: str, settings: Settings, instance: str) -> SandboxBackend:
    """Build (not check) the named backend."""
    if kind == "docker":
        from sandboxes._docker import DockerBackend

        return DockerBackend(default_image=settings.sandbox_image, instance=instance, scope=deployment_scope(settings))
    if kind == "local":
        from sandboxes._local import LocalBackend

        return LocalBackend(
            data_dir=settings.data_dir, instance=instance, allow_unisolated=settings.sandbox_allow_unisolated
        )
    raise SandboxUnavailable(f"unknown sandbox backend {kind!r} (use auto, docker or local)")


async def open_backend(settings: Settings, *, backend: str | None = None, instance: str | None = None) -> SandboxBackend:
    """The configured backend, checked.

    `auto` is docker when an engine answers and has the sandbox image, else local: a
    fresh host with Docker but no image yet still runs runbooks (under bubblewrap)
    instead of failing every run until someone builds the image.
    """
    kind = backend or settings.sandbox_backend
    instance = instance or secrets.token_hex(6)
    if kind != "auto":
        chosen = make_backend(kind, settings, instance)
        await chosen.check()
        return chosen
    docker_backend = make_backend("docker", settings, instance)
    try:
        await docker_backend.check()
        if await docker_backend.has_image(settings.sandbox_image):  # type: ignore[attr-defined]
            return docker_backend
        logger.warning(
            "docker sandbox image missing, using local sandboxes image=%s (build it with: jetty sandbox build-image)",
            settings.sandbox_image,
        )
    except SandboxUnavailable as exc:
        logger.info("docker unavailable, trying local sandboxes reason=%s", exc)
    local = make_backend("local", settings, instance)
    await local.check()
    return local


class SandboxService:
    """Owns the sandboxes of one gateway process: acquire, release, pool, reaper."""

    def __init__(
        self,
        settings: Settings,
        *,
        is_run_active: IsRunActive | None = None,
        backend: str | None = None,
        pool_size: int | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        # Marks this process's pool on the engine/disk; a fresh id per process is what
        # lets the reaper tell a live pool from the pool of a crashed predecessor.
        self.instance = instance or secrets.token_hex(6)
        self._backend_kind = backend
        self._pool_size_override = pool_size
        self._is_run_active = is_run_active
        self._backend: SandboxBackend | None = None
        self._pool: list[Sandbox] = []
        self._active: dict[str, Sandbox] = {}
        self._pool_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        """Choose the backend, reap what a previous process left, start pool and reaper."""
        self._backend = await open_backend(self.settings, backend=self._backend_kind, instance=self.instance)
        removed = await self.reap()
        logger.info(
            "sandbox service started backend=%s instance=%s pool_size=%s reaped=%s",
            self._backend.name, self.instance, self.pool_size, removed,
        )
        self._tasks = [asyncio.create_task(self._reap_forever(), name="sandbox-reaper")]
        if self.pool_size:
            self._tasks.append(asyncio.create_task(self._fill_pool_forever(), name="sandbox-pool"))
            self._pool_wanted.set()

    async def stop(self) -> None:
        """Stop background work and destroy every sandbox this service holds."""
        # The pool filler is not cancelled mid-create (a cancelled create would leak the
        # sandbox it was making); it is told to stop and finishes its current one.
        self._stopping = True
        self._pool_wanted.set()
        for task in self._tasks:
            if task.get_name() != "sandbox-pool":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 120)
        self._tasks = []
        doomed = [*self._pool, *self._active.values()]
        self._pool.clear()
        self._active.clear()
        await asyncio.gather(*(self._destroy_quietly(s) for s in doomed))
        if self._backend is not None:
            await self._backend.close()

    async def __aenter__(self) -> SandboxService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- status -----------------------------------------------------------
    @property
    def backend(self) -> SandboxBackend:
        if self._backend is None:
            raise SandboxError("SandboxService.start() has not run")
        return self._backend

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def pool_size(self) -> int:
        if self._pool_size_override is not None:
            return self._pool_size_override
        if self.settings.sandbox_pool_size is not None:
            return self.settings.sandbox_pool_size
        return DEFAULT_POOL.get(self.backend.name, 0)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend_name, "active": self.active, "pooled": self.pooled, "pool_size": self.pool_size}

    # -- acquire / release ------------------------------------------------
    async def acquire(self, spec: SandboxSpec | None, run_id: str) -> Sandbox:
        """A running sandbox for `run_id`: from the warm pool when the spec allows, else a new one."""
        spec = spec or SandboxSpec()
        sandbox = await self._take_pooled(spec, run_id)
        if sandbox is None:
            sandbox = await self.backend.create(spec, run_id=run_id)
        sandbox.arm_lifetime()  # type: ignore[attr-defined]
        self._active[sandbox.id] = sandbox
        return sandbox

    async def _take_pooled(self, spec: SandboxSpec, run_id: str) -> Sandbox | None:
        if not spec.is_poolable(self.settings.sandbox_image):
            return None
        while self._pool:
            sandbox = self._pool.pop(0)
            self._pool_wanted.set()
            if not sandbox.is_alive:
                continue
            pooled_spec = sandbox.spec
            # Pooled sandboxes were made with the default spec; take the caller's env/timeouts.
            sandbox.spec = spec
            try:
                await self.backend.assign(sandbox, run_id)
            except SandboxError as exc:
                logger.info("pooled sandbox not usable for run_id=%s reason=%s", run_id, exc)
                sandbox.spec = pooled_spec
                self._pool.insert(0, sandbox)
                return None
            sandbox.run_id = run_id
            return sandbox
        return None

    async def release(self, sandbox: Sandbox) -> None:
        """Destroy a sandbox the caller is done with (sandboxes are never reused across runs)."""
        self._active.pop(sandbox.id, None)
        await sandbox.destroy()

    destroy = release

    async def _destroy_quietly(self, sandbox: Sandbox) -> None:
        try:
            await sandbox.destroy()
        except Exception as exc:
            logger.warning("sandbox destroy failed sandbox=%s error=%s", sandbox.id, exc)

    # -- pool -------------------------------------------------------------
    async def _fill_pool_forever(self) -> None:
        while not self._stopping:
            await self._pool_wanted.wait()
            self._pool_wanted.clear()
            self._pool = [s for s in self._pool if s.is_alive]
            while len(self._pool) < self.pool_size and not self._stopping:
                try:
                    sandbox = await self.backend.create(SandboxSpec(), run_id=None)
                    if self._stopping:
                        await self._destroy_quietly(sandbox)
                        return
                    self._pool.append(sandbox)
                except SandboxError as exc:
                    logger.error("sandbox pool refill failed backend=%s error=%s", self.backend.name, exc)
                    await asyncio.sleep(5)
                    break

    async def wait_pool_full(self, timeout_s: float = 30.0) -> None:
        """Wait until the warm pool holds `pool_size` sandboxes (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while len(self._pool) < self.pool_size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sandbox pool has {len(self._pool)}/{self.pool_size} after {timeout_s}s")
            await asyncio.sleep(0.02)

    # -- reaper -----------------------------------------------------------
    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sandbox_reap_interval_s)
            try:
                await self.reap()
            except Exception:
                logger.exception("sandbox reaper pass failed")

    async def _run_is_active(self, run_id: str) -> bool:
        if self._is_run_active is None:
            return any(s.run_id == run_id for s in self._active.values())
        return await self._is_run_active(run_id)

    async def _should_reap(self, record: SandboxRecord, now: float) -> str | None:
        if record.expires_at is not None and record.expires_at < now:
            return "expired"
        if record.run_id is None:
            if record.instance == self.instance or record.running:
                return None
            return "pool of a stopped instance"
        if not await self._run_is_active(record.run_id):
            return "run over or unknown"
        return None

    async def reap(self) -> int:
        """Remove every sandbox whose run is over or unknown; return how many went."""
        now = time.time()
        held = {**{s.id: s for s in self._pool}, **self._active}
        removed = 0
        for record in await self.backend.list_records():
            reason = await self._should_reap(record, now)
            if reason is None:
                continue
            logger.info("reaping sandbox record=%s run_id=%s reason=%s", record.id[:12], record.run_id, reason)
            mine = next((s for s in held.values() if record.id in (s.id, getattr(s, "container_id", None))), None)
            if mine is not None:
                self._active.pop(mine.id, None)
                await self._destroy_quietly(mine)
            else:
                await self.backend.remove(record.id)
            removed += 1
        return removed
