"""`GET /v1/status`: unauthenticated health for load balancers and operators."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from gateway import __version__
from gateway.storage import Database

StatusCount = Callable[[], int | Awaitable[int]]


def register_status_count(state: State, name: str, count: StatusCount) -> None:
    """Let a slice report a number (active runs, sandboxes, queue depth) in `/v1/status`."""
    state.status_counts[name] = count


@get("/v1/status", tags=["status"], exclude_from_auth=True)
async def read_status(state: State) -> Response[dict[str, Any]]:
    """ok, version, database reachability, uptime and counts; 503 when the database is down."""
    db: Database = state.db
    reachable = await db.is_reachable()
    counts: dict[str, int] = {}
    for name, count in state.status_counts.items():
        value = count()
        counts[name] = await value if inspect.isawaitable(value) else value
    body = {
        "ok": reachable,
        "version": __version__,
        "database": {"reachable": reachable, "backend": "sqlite" if db.is_sqlite else "postgresql"},
        "uptime_s": round(time.monotonic() - state.started_monotonic, 3),
        "counts": counts,
    }
    return Response(body, status_code=200 if reachable else 503)
