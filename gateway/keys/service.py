"""The rules of API keys: creation, listing and revocation."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import BadRequest, NotFound
from gateway.ids import new_id
from gateway.keys.models import ApiKey
from gateway.keys.schemas import CreateKey
from gateway.pagination import Page, paginate
from gateway.storage import parse_time, utcnow

KEY_PREFIX = "jty_"
MAX_RPM = 1_000_000


def hash_key(raw: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up."""
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_raw_key() -> str:
    """`jty_` + 32 random bytes, url-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _validate_patterns(name: str, patterns: list[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    cleaned = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern.strip():
            raise BadRequest(f"scopes.{name}[{i}] must be a non-empty glob pattern", param=f"scopes.{name}")
        cleaned.append(pattern.strip())
    return cleaned


async def create_key(session: AsyncSession, body: CreateKey) -> tuple[ApiKey, str]:
    """Store a new key and return it with its raw value, which is never stored or shown again."""
    if len(body.label) > 200:
        raise BadRequest("label is longer than 200 characters", param="label")
    if body.rpm_limit is not None and not 1 <= body.rpm_limit <= MAX_RPM:
        raise BadRequest(f"rpm_limit must be between 1 and {MAX_RPM}", param="rpm_limit")
    now = utcnow()
    expires_at: datetime | None = None
    if body.expires_at is not None and body.expires_in_s is not None:
        raise BadRequest("give expires_at or expires_in_s, not both", param="expires_at")
    if body.expires_at is not None:
        try:
            expires_at = parse_time(body.expires_at)
        except ValueError:
            raise BadRequest("expires_at is not an ISO-8601 time", param="expires_at") from None
        if expires_at <= now:
            raise BadRequest("expires_at is in the past", param="expires_at")
    if body.expires_in_s is not None:
        if body.expires_in_s <= 0:
            raise BadRequest("expires_in_s must be positive", param="expires_in_s")
        expires_at = now + timedelta(seconds=body.expires_in_s)
    scopes = body.scopes
    raw = generate_raw_key()
    key = ApiKey(
        id=new_id("key"),
        label=body.label,
        key_hash=hash_key(raw),
        prefix=raw[:8],
        scopes={
            "collections": _validate_patterns("collections", scopes.collections if scopes else None),
            "models": _validate_patterns("models", scopes.models if scopes else None),
        },
        rpm_limit=body.rpm_limit,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(key)
    await session.commit()
    return key, raw


async def list_keys(
    session: AsyncSession, *, limit: int, cursor: str | None, include_revoked: bool
) -> Page[ApiKey]:
    query = select(ApiKey)
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    return await paginate(session, query, ApiKey.id, limit=limit, cursor=cursor)


async def get_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id!r}", code="key_not_found", param="id")
    return key


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    """Mark a key revoked (idempotent); the caller invalidates the auth cache."""
    key = await get_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        await session.commit()
    return key
