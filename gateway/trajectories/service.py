"""Reading trajectories: the API shape, filtered lists and the live event stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Principal
from gateway.errors import BadRequest, NotFound
from gateway.events import EventBus
from gateway.pagination import Page, paginate
from gateway.storage import Database, isoformat, parse_time
from gateway.trajectories.models import (
    KINDS,
    STATUSES,
    TERMINAL_STATUSES,
    Trajectory,
    TrajectoryStep,
)

POLL_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0


def _ms_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def step_to_api(step: TrajectoryStep) -> dict[str, Any]:
    return {"seq": step.seq, "type": step.type, "data": step.data, "created_at": isoformat(step.created_at)}


def trajectory_to_api(t: Trajectory, steps: list[TrajectoryStep] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": t.id,
        "object": "trajectory",
        "kind": t.kind,
        "status": t.status,
        "collection": t.collection,
        "model": t.model,
        "key_id": t.key_id,
        "routine_id": t.routine_id,
        "replay_of": t.replay_of,
        "request": t.request,
        "response": t.response,
        "outputs": t.outputs,
        "error": t.error,
        "usage": t.usage,
        "cost_usd": t.cost_usd,
        "labels": t.labels,
        "redactions": t.redactions,
        "upstream": t.upstream,
        "runbook": {k: v for k, v in (t.runbook or {}).items() if k != "text"} or None,
        "files": t.files,
        "timings": {
            "created_at": isoformat(t.created_at),
            "started_at": isoformat(t.started_at),
            "first_token_at": isoformat(t.first_token_at),
            "finished_at": isoformat(t.finished_at),
            "latency_ms": _ms_between(t.started_at or t.created_at, t.finished_at),
            "time_to_first_token_ms": _ms_between(t.started_at or t.created_at, t.first_token_at),
        },
    }
    if steps is not None:
        body["steps"] = [step_to_api(s) for s in steps]
    return body


@dataclass(slots=True)
class TrajectoryFilters:
    kind: str | None = None
    status: str | None = None
    model: str | None = None
    collection: str | None = None
    key_id: str | None = None
    routine_id: str | None = None
    created_after: str | None = None
    created_before: str | None = None


def _time_filter(name: str, raw: str) -> datetime:
    try:
        return parse_time(raw)
    except ValueError:
        raise BadRequest(f"{name} is not an ISO-8601 time", param=name) from None


async def list_trajectories(
    session: AsyncSession, principal: Principal, filters: TrajectoryFilters, *, limit: int, cursor: str | None
) -> Page[Trajectory]:
    """Newest first; a key sees only the trajectories it made."""
    query = select(Trajectory)
    if filters.kind is not None:
        if filters.kind not in KINDS:
            raise BadRequest(f"kind must be one of {sorted(KINDS)}", param="kind")
        query = query.where(Trajectory.kind == filters.kind)
    if filters.status is not None:
        if filters.status not in STATUSES:
            raise BadRequest(f"status must be one of {sorted(STATUSES)}", param="status")
        query = query.where(Trajectory.status == filters.status)
    for name in ("model", "collection", "routine_id"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Trajectory, name) == value)
    if not principal.is_admin:
        query = query.where(Trajectory.key_id == principal.key_id)
    elif filters.key_id is not None:
        query = query.where(Trajectory.key_id == filters.key_id)
    if filters.created_after:
        query = query.where(col(Trajectory.created_at) > _time_filter("created_after", filters.created_after))
    if filters.created_before:
        query = query.where(col(Trajectory.created_at) < _time_filter("created_before", filters.created_before))
    return await paginate(session, query, Trajectory.id, limit=limit, cursor=cursor)


async def get_trajectory(session: AsyncSession, principal: Principal, trajectory_id: str) -> Trajectory:
    """The trajectory if the caller may see it; 404 otherwise (never reveal others' ids)."""
    trajectory = await session.get(Trajectory, trajectory_id)
    if trajectory is None or (not principal.is_admin and trajectory.key_id != principal.key_id):
        raise NotFound(f"No trajectory with id {trajectory_id!r}", code="trajectory_not_found", param="id")
    return trajectory


async def list_steps(session: AsyncSession, trajectory_id: str, after_seq: int = 0) -> list[TrajectoryStep]:
    query = (
        select(TrajectoryStep)
        .where(TrajectoryStep.trajectory_id == trajectory_id, col(TrajectoryStep.seq) > after_seq)
        .order_by(col(TrajectoryStep.seq))
    )
    return list((await session.exec(query)).all())


def _sse(event: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event['type']}")
    lines.append("data: " + json.dumps(event, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def stream_events(db: Database, events: EventBus, trajectory_id: str, after_seq: int = 0) -> AsyncIterator[bytes]:
    """SSE: stored steps first, then live ones, until the run is over.

    Subscribing before reading storage means no step falls between the two; steps
    seen twice are skipped by `seq`. Storage is polled too, so a run executing on
    another replica streams as well, only less promptly.
    """
    last_seq = after_seq
    last_sent = time.monotonic()
    async with events.subscribe(trajectory_id) as queue:
        while True:
            async with db.session() as session:
                trajectory = await session.get(Trajectory, trajectory_id)
                steps = await list_steps(session, trajectory_id, last_seq)
            for step in steps:
                last_seq = step.seq
                last_sent = time.monotonic()
                yield _sse({"type": "step", "trajectory_id": trajectory_id, "seq": step.seq, "step": step_to_api(step)}, str(step.seq))
            if trajectory is None or trajectory.status in TERMINAL_STATUSES:
                status = trajectory.status if trajectory else "unknown"
                yield _sse({"type": "end", "trajectory_id": trajectory_id, "status": status})
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=POLL_INTERVAL_S)
                except TimeoutError:
                    if time.monotonic() - last_sent >= KEEPALIVE_S:
                        last_sent = time.monotonic()
                        yield b": keep-alive\n\n"
                    break  # poll storage: the run may be on another replica
                if event["type"] == "step":
                    if event["seq"] <= last_seq:
                        continue
                    if event["seq"] > last_seq + 1:
                        break  # a gap (a dropped event): fill it from storage
                    last_seq = event["seq"]
                    last_sent = time.monotonic()
                    yield _sse(event, str(event["seq"]))
                else:
                    last_sent = time.monotonic()
                    yield _sse(event)
                    if event.get("status") in TERMINAL_STATUSES:
                        break
