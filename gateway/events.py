"""In-process publish/subscribe of run events (steps, status changes).

Subscribers are SSE streams and, later, webhook delivery. Each subscriber has a
bounded queue: a slow one loses events rather than slowing the run, and the SSE
endpoint fills such gaps from storage, which is the source of truth.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

SUBSCRIBER_QUEUE_SIZE = 1000
ALL = "*"


class EventBus:
    """Fan-out of events keyed by trajectory id (or `*` for all of them)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def publish(self, trajectory_id: str, event: dict[str, Any]) -> None:
        """Deliver to every current subscriber without waiting; full queues drop the oldest event."""
        for key in (trajectory_id, ALL):
            for queue in self._subscribers.get(key, ()):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, trajectory_id: str = ALL) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving the events of one trajectory (or all) while the context is open."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self._subscribers[trajectory_id].add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(trajectory_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[trajectory_id]

