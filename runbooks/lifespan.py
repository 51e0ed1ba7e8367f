"""Starting and stopping runbook mode; sets the hooks other slices call through `state`.

`state.run_runbook` (passthrough, for bodies with `jetty`), `state.replay_run` and
`state.export_trajectory` (trajectories), `state.runbooks` (the service). When no
one else started a `SandboxService`, this starts one; when no backend can run here
the gateway still starts and runs fail with `sandbox_error`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.settings import Settings
from gateway.status import register_status_count
from runbooks.atif import export_trajectory
from runbooks.modes import replay_run, run_runbook
from runbooks.runner import RunbookService

log = logging.getLogger(__name__)


@asynccontextmanager
async def runbooks_lifespan(state: Any, settings: Settings) -> AsyncIterator[None]:
    service = RunbookService(db=state.db, recorder=state.recorder, state=state)
    own_sandboxes = None
    if getattr(state, "sandboxes", None) is None:
        from sandboxes import SandboxError, SandboxService

        own_sandboxes = SandboxService(settings, is_run_active=service.is_run_active)
        try:
            await own_sandboxes.start()
            state.sandboxes = own_sandboxes
        except SandboxError as exc:
            log.error("no sandbox backend: runbook runs will fail reason=%s", exc)
            state.sandboxes = None
            own_sandboxes = None
    await service.start()
    register_status_count(
        state, "active_runs", lambda: sum(1 for r in service.runs.values() if not r.done)
    )
    if state.sandboxes is not None and own_sandboxes is not None:
        register_status_count(state, "sandboxes_active", lambda: own_sandboxes.active)
    state.runbooks = service
    state.run_runbook = run_runbook
    state.replay_run = replay_run
    state.export_trajectory = export_trajectory
    try:
        yield
    finally:
        await service.stop()
        if own_sandboxes is not None:
            await own_sandboxes.stop()
