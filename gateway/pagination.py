"""Cursor pagination over time-sortable ids, newest first.

The cursor is the id of the last item returned; the next page is `id < cursor`.
Ids sort by creation time (see `gateway.ids`), so order is stable while rows are
added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from gateway.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
    next_cursor: str | None

    def to_api(self, shape: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
        """The list envelope of DESIGN.md."""
        return {
            "object": "list",
            "data": [shape(item) for item in self.items],
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    return limit


async def paginate(
    session: AsyncSession,
    query: SelectOfScalar[T],
    id_column: Any,
    *,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """Run `query` newest first, one page after `cursor`."""
    if cursor:
        query = query.where(col(id_column) < cursor)
    query = query.order_by(col(id_column).desc()).limit(limit + 1)
    rows = list((await session.exec(query)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = getattr(rows[-1], "id", None) if has_more and rows else None
    return Page(items=rows, has_more=has_more, next_cursor=next_cursor)
