"""Run leases: which process runs which run, so a crash never leaves a run `running`.

Each process heartbeats the leases of its runs. At start and then periodically,
runbook runs that are not over and whose lease is stale (or missing) are marked
`failed` with reason `gateway_restart`; their sandboxes go to the reaper. With
SQLite there is one process by construction, so every lease not held by this
process is dead at once; with PostgreSQL a lease is dead after `STALE_AFTER`.
A cancel on another replica sets `cancel_requested`; the owner sees it here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select

from gateway.storage import Database, utcnow
from gateway.trajectories import TERMINAL_STATUSES, Trajectory
from runbooks.models import RunLease

log = logging.getLogger(__name__)

HEARTBEAT_S = 3.0
STALE_AFTER = timedelta(seconds=15)
ORPHAN_AFTER = timedelta(seconds=60)  # a run row without a lease (crash between the two inserts)


class Leases:
    def __init__(self, db: Database, instance: str) -> None:
        self.db = db
        self.instance = instance

    async def take(self, trajectory_id: str) -> None:
        now = utcnow()
        async with self.db.session() as session:
            session.add(
                RunLease(
                    trajectory_id=trajectory_id,
                    instance=self.instance,
                    heartbeat_at=now,
                    created_at=now,
                )
            )
            await session.commit()

    async def release(self, trajectory_id: str) -> None:
        async with self.db.session() as session:
            await session.exec(delete(RunLease).where(col(RunLease.trajectory_id) == trajectory_id))  # type: ignore[call-overload]
            await session.commit()

    async def heartbeat(self, trajectory_ids: list[str]) -> list[str]:
        """Refresh our leases; return the ids whose cancel was requested (by any replica)."""
        if not trajectory_ids:
            return []
        async with self.db.session() as session:
            await session.exec(  # type: ignore[call-overload]
                update(RunLease)
                .where(col(RunLease.trajectory_id).in_(trajectory_ids))
                .values(heartbeat_at=utcnow())
            )
            await session.commit()
            rows = await session.exec(
                select(RunLease.trajectory_id).where(
                    col(RunLease.trajectory_id).in_(trajectory_ids), col(RunLease.cancel_requested)
                )
            )
            return list(rows.all())

    async def request_cancel(self, trajectory_id: str) -> bool:
        """Flag a run held elsewhere for cancellation; False if no process holds it."""
        async with self.db.session() as session:
            result = await session.exec(  # type: ignore[call-overload]
                update(RunLease)
                .where(col(RunLease.trajectory_id) == trajectory_id)
                .values(cancel_requested=True)
            )
            await session.commit()
            return bool(result.rowcount)

    async def is_alive(self, trajectory_id: str) -> bool:
        async with self.db.session() as session:
            lease = await session.get(RunLease, trajectory_id)
        return lease is not None and lease.heartbeat_at > utcnow() - STALE_AFTER

    async def dead_runs(self, local: set[str]) -> list[str]:
        """Runbook runs not over whose process is gone (never one of `local`)."""
        now = utcnow()
        async with self.db.session() as session:
            runs = (
                await session.exec(
                    select(Trajectory.id, Trajectory.created_at).where(
                        Trajectory.kind == "runbook",
                        col(Trajectory.status).not_in(TERMINAL_STATUSES),
                    )
                )
            ).all()
            leases = {
                lease.trajectory_id: lease for lease in (await session.exec(select(RunLease))).all()
            }
        single = self.db.is_sqlite
        dead = []
        for run_id, created_at in runs:
            if run_id in local:
                continue
            lease = leases.get(run_id)
            if lease is None:
                if single or created_at < now - ORPHAN_AFTER:
                    dead.append(run_id)
            elif (
                single and lease.instance != self.instance
            ) or lease.heartbeat_at < now - STALE_AFTER:
                dead.append(run_id)
        return dead
