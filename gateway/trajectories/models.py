"""Storage shape of trajectories: one row per call or run, plus ordered steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, String
from sqlmodel import Field, SQLModel

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
STATUSES = frozenset({"queued", "running", "waiting_for_input"}) | TERMINAL_STATUSES
KINDS = frozenset({"completion", "runbook"})


class Trajectory(SQLModel, table=True):
    __tablename__ = "trajectories"

    id: str = Field(primary_key=True, max_length=40)
    kind: str
    status: str
    collection: str | None = None
    model: str | None = None
    key_id: str | None = None
    routine_id: str | None = None
    replay_of: str | None = None
    idempotency_scope: str | None = Field(default=None, unique=True)
    request: Any = Field(default=None, sa_column=Column(JSON))
    response: Any = Field(default=None, sa_column=Column(JSON))
    outputs: Any = Field(default=None, sa_column=Column(JSON))
    error: Any = Field(default=None, sa_column=Column(JSON))
    usage: Any = Field(default=None, sa_column=Column(JSON))
    cost_usd: float | None = None
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    redactions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    upstream: Any = Field(default=None, sa_column=Column(JSON))
    runbook: Any = Field(default=None, sa_column=Column(JSON))
    files: Any = Field(default=None, sa_column=Column(JSON))
    created_at: datetime
    started_at: datetime | None = None
    first_token_at: datetime | None = None
    finished_at: datetime | None = None


class TrajectoryStep(SQLModel, table=True):
    __tablename__ = "trajectory_steps"

    trajectory_id: str = Field(
        sa_column=Column(String(40), ForeignKey("trajectories.id", ondelete="CASCADE"), primary_key=True)
    )
    seq: int = Field(primary_key=True)
    type: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime
