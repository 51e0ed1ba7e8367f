"""The recorder: trajectories reach storage through an in-process queue and a batch writer.

Callers never wait for the database on the passthrough path: `submit`, `add_step`
and `update` only enqueue. One writer task drains the queue in batches, redacts
what needs redacting, and writes each batch in one transaction. A failed batch is
retried (database down) and, if a row itself is bad, split so one bad row cannot
block the rest. `stop` (graceful shutdown) flushes everything queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import JSON, Insert, Text, column, insert, table, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from gateway.errors import Conflict
from gateway.events import EventBus
from gateway.redaction import redact_secrets
from gateway.storage import Database, isoformat
from gateway.trajectories.models import TERMINAL_STATUSES, Trajectory, TrajectoryStep
from gateway.trajectories.records import CompletionRecord, RunRecord, Step

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Under load, wait this long after the first op of a batch for more to queue: one
# transaction per ~BATCH_LINGER_S instead of one per handful of rows (each costs
# about a millisecond of CPU in SQLAlchemy and the driver). A lone op never waits.
BATCH_LINGER_S = 0.02
MAX_RETRY_DELAY_S = 5.0
STOP_FLUSH_DEADLINE_S = 20.0


@dataclass(slots=True)
class _Op:
    kind: str  # "completion" | "step" | "update"
    trajectory_id: str
    payload: Any


def idempotency_scope(key_id: str | None, idempotency_key: str) -> str:
    return f"{key_id or 'admin'}:{idempotency_key}"


_COMPLETION_COLUMNS = (
    "id", "kind", "status", "collection", "model", "key_id", "replay_of", "request", "response", "error",
    "usage", "cost_usd", "labels", "redactions", "upstream", "created_at", "started_at", "first_token_at",
    "finished_at",
)
_JSON_COLUMNS = tuple(
    name for name in _COMPLETION_COLUMNS if isinstance(Trajectory.__table__.c[name].type, JSON)  # type: ignore[attr-defined]
)


def _completion_insert(is_sqlite: bool) -> Insert:
    """The Core insert for completion rows (no ORM bulk machinery per row).

    On SQLite a JSON column is text, so its values arrive already encoded (by msgspec,
    several times faster than the JSON type's `json.dumps`) and go through untouched.
    """
    trajectories = Trajectory.__table__  # type: ignore[attr-defined]
    if not is_sqlite:
        return insert(trajectories)
    columns = trajectories.c
    return insert(
        table(
            "trajectories",
            *(column(name, Text() if name in _JSON_COLUMNS else columns[name].type) for name in _COMPLETION_COLUMNS),
        )
    )


def _encode_json(value: Any) -> str:
    """What the JSON column type would store (it stores None as `null` too)."""
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(value)


def completion_row(record: CompletionRecord) -> dict[str, Any]:
    """The stored row of a completion, redacted."""
    # One pass over every redacted field: paths come out as `request.…`, `response.…`.
    fields, redactions = redact_secrets(
        {
            "request": record.request,
            "response": record.response,
            "error": record.error,
            "labels": record.labels,
            "upstream": record.upstream,
        },
        record.secrets,
    )
    return {
        "id": record.id,
        "kind": "completion",
        "status": record.status,
        "collection": record.collection,
        "model": record.model,
        "key_id": record.key_id,
        "replay_of": record.replay_of,
        "request": fields["request"],
        "response": fields["response"],
        "error": fields["error"],
        "usage": record.usage,
        "cost_usd": record.cost_usd,
        "labels": fields["labels"] or {},
        "redactions": redactions,
        "upstream": fields["upstream"],
        "created_at": record.created_at,
        "started_at": record.created_at,
        "first_token_at": record.first_token_at,
        "finished_at": record.finished_at,
    }


class TrajectoryRecorder:
    """Queue + batch writer for trajectories and steps; publishes run events as they happen."""

    def __init__(self, db: Database, events: EventBus) -> None:
        self._db = db
        self._events = events
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._seq: dict[str, int] = {}
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._redactions: dict[str, list[dict[str, str]]] = {}
        self._encodes_json = db.is_sqlite
        self._completion_insert = _completion_insert(db.is_sqlite)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trajectory-writer")

    async def stop(self) -> None:
        """Flush what is queued (bounded wait), then stop the writer."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout=STOP_FLUSH_DEADLINE_S)
        except TimeoutError:
            log.error("trajectory flush timed out lost=%d", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored."""
        await self._queue.join()

    # --- readers -----------------------------------------------------------

    async def find_by_idempotency_key(self, key_id: str | None, idempotency_key: str) -> str | None:
        """The id of the run this key already started with `idempotency_key`, if any."""
        scope = idempotency_scope(key_id, idempotency_key)
        async with self._db.session() as session:
            found = (await session.exec(select(Trajectory.id).where(Trajectory.idempotency_scope == scope))).first()
        return found

    async def get(self, trajectory_id: str) -> dict[str, Any] | None:
        """A trajectory in its API shape, with steps (None if unknown)."""
        from gateway.trajectories.service import list_steps, trajectory_to_api

        async with self._db.session() as session:
            trajectory = await session.get(Trajectory, trajectory_id)
            if trajectory is None:
                return None
            return trajectory_to_api(trajectory, await list_steps(session, trajectory_id))

    # --- producers -------------------------------------------------------

    def submit(self, record: CompletionRecord) -> None:
        """Record a finished passthrough call. Never blocks, never raises."""
        self._queue.put_nowait(_Op("completion", record.id, record))

    async def create_run(self, run: RunRecord) -> None:
        """Store a new run before returning (a client may poll it at once).

        Raises `Conflict` when the key already used `run.idempotency_key`.
        """
        request, found = redact_secrets(run.request, run.secrets, path="request")
        row = {
            "id": run.id,
            "kind": run.kind,
            "status": run.status,
            "collection": run.collection,
            "model": run.model,
            "key_id": run.key_id,
            "routine_id": run.routine_id,
            "replay_of": run.replay_of,
            "idempotency_scope": idempotency_scope(run.key_id, run.idempotency_key) if run.idempotency_key else None,
            "request": request,
            "labels": run.labels,
            "redactions": found,
            "runbook": run.runbook,
            "created_at": run.created_at,
        }
        try:
            async with self._db.session() as session:
                await session.exec(insert(Trajectory).values(**row))  # type: ignore[call-overload]
                await session.commit()
        except IntegrityError:
            raise Conflict(
                "A run with this Idempotency-Key already exists", code="idempotency_conflict"
            ) from None
        self._seq[run.id] = 0
        self._secrets[run.id] = run.secrets
        self._redactions[run.id] = list(found)
        self._events.publish(run.id, {"type": "status", "trajectory_id": run.id, "status": run.status})

    def add_step(self, trajectory_id: str, step: Step) -> dict[str, Any]:
        """Append a step (redacted now, since it is also published live); returns the event."""
        seq = self._seq.get(trajectory_id, 0) + 1
        self._seq[trajectory_id] = seq
        data, found = redact_secrets(step.data, self._secrets.get(trajectory_id, ()), path=f"steps[{seq}]")
        if found:
            self._redactions.setdefault(trajectory_id, []).extend(found)
            self._queue.put_nowait(
                _Op("update", trajectory_id, {"redactions": list(self._redactions[trajectory_id])})
            )
        row = {"trajectory_id": trajectory_id, "seq": seq, "type": step.type, "data": data, "created_at": step.created_at}
        self._queue.put_nowait(_Op("step", trajectory_id, row))
        event = {
            "type": "step",
            "trajectory_id": trajectory_id,
            "seq": seq,
            "step": {"seq": seq, "type": step.type, "data": data, "created_at": isoformat(step.created_at)},
        }
        self._events.publish(trajectory_id, event)
        return event

    def update(self, trajectory_id: str, **fields: Any) -> None:
        """Change a run's fields (status, timings, outputs, …); a status change is published."""
        secrets = self._secrets.get(trajectory_id, ())
        for name in ("response", "outputs", "error"):
            if fields.get(name) is not None:
                fields[name], found = redact_secrets(fields[name], secrets, path=name)
                if found:
                    self._redactions.setdefault(trajectory_id, []).extend(found)
                    fields["redactions"] = list(self._redactions[trajectory_id])
        self._queue.put_nowait(_Op("update", trajectory_id, fields))
        if "status" in fields:
            event = {"type": "status", "trajectory_id": trajectory_id, "status": fields["status"]}
            if fields.get("error") is not None:
                event["error"] = fields["error"]
            self._events.publish(trajectory_id, event)
            if fields["status"] in TERMINAL_STATUSES:
                self._seq.pop(trajectory_id, None)
                self._secrets.pop(trajectory_id, None)
                self._redactions.pop(trajectory_id, None)

    # --- the writer ------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if 0 < self._queue.qsize() < BATCH_SIZE:  # others are coming: let them gather
                await asyncio.sleep(BATCH_LINGER_S)
            while len(batch) < BATCH_SIZE and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write_with_retry(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write_with_retry(self, batch: list[_Op]) -> None:
        delay = 0.1
        while True:
            try:
                await self._write(batch)
                return
            except IntegrityError:
                await self._write_one_by_one(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database unreachable: keep the batch and retry
                log.warning("trajectory write failed, retrying ops=%d error=%s", len(batch), type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)

    async def _write_one_by_one(self, batch: list[_Op]) -> None:
        for op in batch:
            try:
                await self._write([op])
            except IntegrityError as exc:
                log.error("dropping unwritable trajectory op kind=%s trajectory_id=%s error=%s", op.kind, op.trajectory_id, type(exc).__name__)

    async def _write(self, batch: list[_Op]) -> None:
        completions = [completion_row(op.payload) for op in batch if op.kind == "completion"]
        if completions and self._encodes_json:
            for row in completions:
                for name in _JSON_COLUMNS:
                    row[name] = _encode_json(row[name])
        async with self._db.session() as session:
            if completions:
                await session.execute(self._completion_insert, completions)
            steps: list[dict[str, Any]] = []
            for op in batch:
                if op.kind == "step":
                    steps.append(op.payload)
                elif op.kind == "update":
                    if steps:  # keep order: steps before this update are written first
                        await session.exec(insert(TrajectoryStep), params=steps)  # type: ignore[call-overload]
                        steps = []
                    await session.exec(  # type: ignore[call-overload]
                        update(Trajectory).where(col(Trajectory.id) == op.trajectory_id).values(**op.payload)
                    )
            if steps:
                await session.exec(insert(TrajectoryStep), params=steps)  # type: ignore[call-overload]
            await session.commit()
