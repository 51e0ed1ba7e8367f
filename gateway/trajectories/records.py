"""What producers hand to the recorder: plain dataclasses, no storage types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.storage import utcnow


@dataclass(slots=True)
class CompletionRecord:
    """One passthrough call, recorded after its response was sent."""

    id: str
    model: str
    key_id: str | None
    collection: str | None
    labels: dict[str, Any]
    request: dict[str, Any]
    status: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    usage: dict[str, Any] | None
    cost_usd: float | None
    created_at: datetime
    first_token_at: datetime | None
    finished_at: datetime
    upstream: dict[str, Any]
    replay_of: str | None = None
    secrets: tuple[str, ...] = ()


@dataclass(slots=True)
class RunRecord:
    """A runbook run as it is created (queued); later changes go through `update`."""

    id: str
    kind: str = "runbook"
    status: str = "queued"
    collection: str | None = None
    model: str | None = None
    key_id: str | None = None
    request: dict[str, Any] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    routine_id: str | None = None
    replay_of: str | None = None
    idempotency_key: str | None = None
    runbook: dict[str, Any] | None = None
    secrets: tuple[str, ...] = ()
    created_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class Step:
    """One step of a run: `llm_call`, `tool_call`, `observation`, `approval`, `error` or `lifecycle`."""

    type: str
    data: dict[str, Any]
    created_at: datetime = field(default_factory=utcnow)
