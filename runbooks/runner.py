"""`RunbookService`: starts runbook runs, executes them in the background, cancels them.

A run is validated and fetched before its trajectory exists (so a bad request is a
4xx, not a failed run), then stored (durable before the client hears of it), then
executed by a task that no client connection owns: a disconnect never cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Principal
from gateway.errors import Conflict
from gateway.ids import new_id
from gateway.storage import Database, utcnow
from gateway.trajectories import RunRecord, Step, TrajectoryRecorder
from runbooks.execute import execute_run
from runbooks.leases import HEARTBEAT_S, Leases
from runbooks.prepare import PreparedRun

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LocalRun:
    """A run executing in this process: its task and the events a stream replays."""

    prepared: PreparedRun
    task: asyncio.Task[None] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str | None = None
    done: bool = False

    def publish(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        self.changed.set()


class RunbookService:
    """Owns this process's runbook runs."""

    def __init__(self, *, db: Database, recorder: TrajectoryRecorder, state: Any) -> None:
        self.db = db
        self.recorder = recorder
        self.state = state
        self.instance = secrets.token_hex(6)
        self.leases = Leases(db, self.instance)
        self.runs: dict[str, LocalRun] = {}
        self._starting: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.step_overhead_ms: list[float] = []

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._task = asyncio.create_task(self._heartbeat_forever(), name="runbook-leases")

    async def stop(self) -> None:
        """Graceful shutdown: runs still going are cancelled and marked failed (`gateway_shutdown`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = [
            run for run in self.runs.values() if run.task is not None and not run.task.done()
        ]
        for run in pending:
            run.cancel_reason = "gateway_shutdown"
            assert run.task is not None
            run.task.cancel()
        if pending:
            await asyncio.wait([r.task for r in pending if r.task is not None], timeout=20)

    async def recover(self) -> int:
        """Mark runs whose process died `failed` (reason `gateway_restart`)."""
        dead = await self.leases.dead_runs(set(self.runs) | self._starting)
        for run_id in dead:
            log.warning("run lost in a gateway restart trajectory_id=%s", run_id)
            self.recorder.update(
                run_id,
                status="failed",
                finished_at=utcnow(),
                error={
                    "code": "gateway_restart",
                    "message": "The gateway restarted while this run was in flight",
                },
            )
            await self.leases.release(run_id)
        if dead:
            await self.recorder.flush()
        return len(dead)

    async def _heartbeat_forever(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            rounds += 1
            try:
                active = [rid for rid, run in self.runs.items() if not run.done]
                for run_id in await self.leases.heartbeat(active):
                    await self.cancel_local(run_id)
                if rounds % 5 == 0:
                    await self.recover()
            except Exception as exc:  # the next round retries
                log.warning("run lease heartbeat failed error=%s", type(exc).__name__)

    async def is_run_active(self, run_id: str) -> bool:
        """For the sandbox reaper: is this run still going, here or on another replica?"""
        run = self.runs.get(run_id)
        if run is not None:
            return not run.done
        return await self.leases.is_alive(run_id)

    # --- runs ----------------------------------------------------------------------

    async def submit(
        self, prepared: PreparedRun, principal: Principal, idempotency_key: str | None
    ) -> tuple[str, bool]:
        """Store the run and start it; (trajectory id, created). A repeated key returns the first run."""
        if idempotency_key:
            existing = await self.recorder.find_by_idempotency_key(
                principal.key_id, idempotency_key
            )
            if existing:
                return existing, False
        run_id = new_id("trj")
        self._starting.add(run_id)
        try:
            try:
                await self.recorder.create_run(
                    RunRecord(
                        id=run_id,
                        kind="runbook",
                        status="queued",
                        collection=prepared.request.collection,
                        model=prepared.model,
                        key_id=principal.key_id,
                        request=prepared.stored_request(),
                        labels={**prepared.request.labels, "task": prepared.task},
                        replay_of=prepared.replay_of,
                        idempotency_key=idempotency_key,
                        runbook=prepared.runbook_record(),
                        secrets=prepared.rendered.secret_values,
                    )
                )
            except Conflict:
                assert idempotency_key is not None
                existing = await self.recorder.find_by_idempotency_key(
                    principal.key_id, idempotency_key
                )
                if existing:
                    return existing, False
                raise
            await self.leases.take(run_id)
            run = self.runs[run_id] = LocalRun(prepared=prepared)
            run.publish({"type": "status", "trajectory_id": run_id, "status": "queued"})
            self.add_step(run_id, "lifecycle", prepared.fetch_step())
            run.task = asyncio.create_task(self._execute(run_id, run), name=f"run-{run_id}")
        finally:
            self._starting.discard(run_id)
        log.info(
            "runbook run queued trajectory_id=%s collection=%s model=%s",
            run_id,
            prepared.request.collection,
            prepared.model,
        )
        return run_id, True

    def add_step(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        event = self.recorder.add_step(run_id, Step(type=kind, data=data))
        run = self.runs.get(run_id)
        if run is not None:
            run.publish(event)

    def update(self, run_id: str, **fields: Any) -> None:
        self.recorder.update(run_id, **fields)
        run = self.runs.get(run_id)
        if run is not None and "status" in fields:
            run.publish(
                {
                    "type": "status",
                    "trajectory_id": run_id,
                    "status": fields["status"],
                    "error": fields.get("error"),
                }
            )

    async def _execute(self, run_id: str, run: LocalRun) -> None:
        started = time.monotonic()
        try:
            overhead = await execute_run(self, run_id, run)
            self.step_overhead_ms.extend(overhead)
            del self.step_overhead_ms[:-1000]
        except Exception:
            log.exception("runbook run crashed trajectory_id=%s", run_id)
            self.update(
                run_id,
                status="failed",
                finished_at=utcnow(),
                error={"code": "internal_error", "message": "The run failed unexpectedly"},
            )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.recorder.flush(), timeout=15)
            with contextlib.suppress(Exception):
                await self.leases.release(run_id)
            run.done = True
            run.changed.set()
            log.info(
                "runbook run over trajectory_id=%s duration_s=%.2f",
                run_id,
                time.monotonic() - started,
            )
            # Keep the finished run briefly so late stream readers and sync waiters find it.
            asyncio.get_running_loop().call_later(60, self.runs.pop, run_id, None)

    async def wait(self, run_id: str, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a local run to end (never cancels it); True if it ended."""
        run = self.runs.get(run_id)
        if run is None or run.task is None:
            return False
        if run.done:
            return True
        done, _ = await asyncio.wait({run.task}, timeout=timeout_s)
        if done:
            while not run.done:  # the task's `finally` is the last thing to run
                await asyncio.sleep(0)
        return bool(done)

    async def cancel_local(self, run_id: str, reason: str = "cancelled") -> bool:
        run = self.runs.get(run_id)
        if run is None or run.done or run.task is None:
            return False
        run.cancel_reason = reason
        run.task.cancel()
        await asyncio.wait({run.task}, timeout=30)
        return True

    async def cancel(self, run_id: str, status: str) -> str:
        """Cancel a run wherever it executes; returns how (`cancelled`, `requested`)."""
        if await self.cancel_local(run_id):
            return "cancelled"
        if await self.leases.request_cancel(run_id):
            return "requested"
        # Nobody holds it (queued before a crash): end it here.
        self.update(
            run_id,
            status="cancelled",
            finished_at=utcnow(),
            error={"code": "cancelled", "message": "Cancelled by request"},
        )
        await self.recorder.flush()
        return "cancelled"
