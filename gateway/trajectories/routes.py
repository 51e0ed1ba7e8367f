"""`/v1/trajectories`: list, read, watch live (SSE) and replay recorded calls and runs."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Stream
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Principal
from gateway.errors import Unprocessable
from gateway.pagination import check_limit
from gateway.trajectories import service
from gateway.trajectories.service import TrajectoryFilters


class ReplayBody(msgspec.Struct, forbid_unknown_fields=False):
    model: str | None = None


class TrajectoriesController(Controller):
    path = "/v1/trajectories"
    tags = ["trajectories"]

    @get("/")
    async def list_trajectories(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        limit: int | None = None,
        cursor: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        model: str | None = None,
        collection: str | None = None,
        key: str | None = None,
        routine_id: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> dict[str, Any]:
        """Newest first, with filters; a key sees only its own trajectories."""
        filters = TrajectoryFilters(
            kind=kind,
            status=status,
            model=model,
            collection=collection,
            key_id=key,
            routine_id=routine_id,
            created_after=created_after,
            created_before=created_before,
        )
        page = await service.list_trajectories(
            db_session, request.user, filters, limit=check_limit(limit), cursor=cursor
        )
        return page.to_api(service.trajectory_to_api)

    @get("/{trajectory_id:str}")
    async def get_trajectory(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        trajectory_id: str = Parameter(),
        format: str | None = None,
    ) -> dict[str, Any]:
        """One trajectory with its steps (`?format=atif` exports a run as ATIF)."""
        trajectory = await service.get_trajectory(db_session, request.user, trajectory_id)
        steps = await service.list_steps(db_session, trajectory_id)
        body = service.trajectory_to_api(trajectory, steps)
        if format is None or format == "jetty":
            return body
        exporter = getattr(state, "export_trajectory", None)
        if exporter is None:
            raise Unprocessable(f"Unknown format {format!r}", code="unknown_format", param="format")
        return exporter(body, format)

    @get("/{trajectory_id:str}/events")
    async def stream_events(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        trajectory_id: str = Parameter(),
        last_event_id: str | None = Parameter(header="Last-Event-ID", default=None),
    ) -> Stream:
        """Server-Sent Events: past steps first, then live ones, until the run ends."""
        await service.get_trajectory(db_session, request.user, trajectory_id)
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        return Stream(
            service.stream_events(state.db, state.events, trajectory_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @post("/{trajectory_id:str}/replay", status_code=201)
    async def replay(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        trajectory_id: str = Parameter(),
        data: ReplayBody | None = None,
    ) -> Any:
        """Re-send a recorded call (or re-run a run with its pinned runbook), optionally on another model."""
        trajectory = await service.get_trajectory(db_session, request.user, trajectory_id)
        model = data.model if data else None
        if trajectory.kind == "completion":
            from gateway.passthrough import replay_completion

            return await replay_completion(
                state, request.user, trajectory.request or {}, replay_of=trajectory.id, model=model
            )
        replay_run = getattr(state, "replay_run", None)
        if replay_run is None:
            raise Unprocessable("Runbook runs cannot be replayed on this gateway", code="replay_unavailable")
        return await replay_run(request, trajectory, model)
