"""Uploaded files: the OpenAI Files API shape, content kept in the database.

A key sees only the files it uploaded (the admin sees all). Runs place them in
`/app/assets/` by id (`jetty.files`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Principal
from gateway.errors import BadRequest, NotFound, PayloadTooLarge
from gateway.ids import new_id
from gateway.pagination import Page, paginate
from gateway.storage import utcnow
from runbooks.models import UploadedFile, UploadedFileContent

log = logging.getLogger(__name__)

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


def safe_filename(name: str) -> str:
    """A file name that cannot escape /app/assets: its last path part, odd characters replaced."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE.sub("_", base)[:255]
    return "upload" if base in ("", ".", "..") else base


def file_to_api(row: UploadedFile) -> dict[str, Any]:
    """The OpenAI file object (https://platform.openai.com/docs/api-reference/files/object)."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


async def create_file(
    session: AsyncSession,
    principal: Principal,
    *,
    filename: str,
    purpose: str,
    content: bytes,
    max_bytes: int,
) -> UploadedFile:
    if purpose not in PURPOSES:
        raise BadRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    if len(content) > max_bytes:
        raise PayloadTooLarge(f"File is larger than {max_bytes} bytes", param="file")
    row = UploadedFile(
        id="file-" + new_id("file")[5:],  # OpenAI spells file ids `file-…`
        key_id=principal.key_id,
        filename=safe_filename(filename),
        purpose=purpose,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    session.add(UploadedFileContent(file_id=row.id, content=content))
    await session.commit()
    log.info("file uploaded file_id=%s bytes=%d", row.id, row.bytes)
    return row


def _visible(query: Any, principal: Principal) -> Any:
    return query if principal.is_admin else query.where(UploadedFile.key_id == principal.key_id)


async def get_file(session: AsyncSession, principal: Principal, file_id: str) -> UploadedFile:
    row = await session.get(UploadedFile, file_id)
    if row is None or (not principal.is_admin and row.key_id != principal.key_id):
        raise NotFound(f"No file with id {file_id!r}", code="file_not_found", param="file_id")
    return row


async def read_content(
    session: AsyncSession, principal: Principal, file_id: str
) -> tuple[UploadedFile, bytes]:
    row = await get_file(session, principal, file_id)
    blob = await session.get(UploadedFileContent, file_id)
    return row, blob.content if blob is not None else b""


async def list_files(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None,
    purpose: str | None,
) -> Page[UploadedFile]:
    query = _visible(select(UploadedFile), principal)
    if purpose:
        query = query.where(UploadedFile.purpose == purpose)
    return await paginate(session, query, UploadedFile.id, limit=limit, cursor=cursor)


async def delete_file(session: AsyncSession, principal: Principal, file_id: str) -> None:
    await get_file(session, principal, file_id)
    await session.exec(
        delete(UploadedFileContent).where(col(UploadedFileContent.file_id) == file_id)
    )  # type: ignore[call-overload]
    await session.exec(delete(UploadedFile).where(col(UploadedFile.id) == file_id))  # type: ignore[call-overload]
    await session.commit()
