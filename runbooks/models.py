"""Storage shape of the runbooks slice: collections, uploaded files, runs' grades and files.

Contents (uploads, result files) live in the database, not on a replica's disk, so
any replica behind a load balancer can serve them. Sizes are capped where written.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


class Collection(SQLModel, table=True):
    """A named group of runs with its secrets (Fernet-encrypted) and defaults."""

    __tablename__ = "runbook_collections"

    name: str = Field(primary_key=True, max_length=100)
    description: str = Field(default="", max_length=1000)
    secrets_ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    secret_names: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    defaults: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime
    updated_at: datetime


class UploadedFile(SQLModel, table=True):
    """An upload through the OpenAI-compatible Files API (metadata; content is separate)."""

    __tablename__ = "uploaded_files"

    id: str = Field(primary_key=True, max_length=40)
    key_id: str | None = Field(default=None, max_length=40, index=True)
    filename: str = Field(max_length=255)
    purpose: str = Field(max_length=40)
    bytes: int
    sha256: str = Field(max_length=64)
    created_at: datetime


class UploadedFileContent(SQLModel, table=True):
    __tablename__ = "uploaded_file_contents"

    file_id: str = Field(
        sa_column=Column(
            String(40), ForeignKey("uploaded_files.id", ondelete="CASCADE"), primary_key=True
        )
    )
    content: builtins.bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # `bytes` is a field here


class RunGrade(SQLModel, table=True):
    """One grade of a run: a check, a validation-report stage, or an external grader's verdict."""

    __tablename__ = "run_grades"

    id: str = Field(primary_key=True, max_length=40)
    trajectory_id: str = Field(max_length=40, index=True)
    name: str = Field(max_length=200)
    source: str = Field(max_length=40)  # "check" | "validation_report" | "external"
    passed: bool | None = None
    score: float | None = None
    label: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    grader: str | None = Field(default=None, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class RunFile(SQLModel, table=True):
    """A file a run left in /app/results, kept with its trajectory."""

    __tablename__ = "run_files"

    trajectory_id: str = Field(sa_column=Column(String(40), primary_key=True))
    path: str = Field(sa_column=Column(String(500), primary_key=True))
    bytes: int
    sha256: str = Field(max_length=64)
    content: builtins.bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime


class RunLease(SQLModel, table=True):
    """Which gateway process runs a run; a stale heartbeat means its process died.

    Also the cross-replica cancel flag: the owner polls `cancel_requested`.
    """

    __tablename__ = "run_leases"

    trajectory_id: str = Field(primary_key=True, max_length=40)
    instance: str = Field(max_length=40, index=True)
    sandbox_id: str | None = Field(default=None, max_length=100)
    cancel_requested: bool = False
    heartbeat_at: datetime
    created_at: datetime
