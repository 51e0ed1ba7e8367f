"""Storage shape of API keys: only the SHA-256 of a key is ever stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    label: str = Field(default="", max_length=200)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    scopes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    rpm_limit: int | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
