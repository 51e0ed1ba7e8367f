"""Bearer-token authentication with no database round trip on the hot path.

Keys are looked up by the SHA-256 of the presented token in an in-process cache.
A miss reads the database once; unknown hashes are remembered (bounded) so a flood
of bad tokens cannot hammer it. A revoke on this replica evicts at once; other
replicas poll for revocations every `key_sync_interval_s`. `last_used_at` is
written in batches by the same background loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import update
from sqlmodel import col, select

from gateway.errors import Forbidden, RateLimited, Unauthorized
from gateway.keys.models import ApiKey
from gateway.keys.service import hash_key
from gateway.storage import Database, utcnow

log = logging.getLogger(__name__)

PUBLIC_PATHS = ("/v1/status", "/schema")
NEGATIVE_CACHE_SIZE = 10_000
REVOCATION_OVERLAP = timedelta(seconds=30)


@dataclass(slots=True)
class Principal:
    """Who is calling: the admin, or an API key with its scopes."""

    key_id: str | None
    is_admin: bool
    collections: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    rpm_limit: int | None = None
    expires_at: datetime | None = None
    label: str = ""

    def allows_collection(self, name: str | None) -> bool:
        if self.is_admin or self.collections is None:
            return True
        return name is not None and any(fnmatchcase(name, p) for p in self.collections)

    def allows_model(self, name: str) -> bool:
        if self.is_admin or self.models is None:
            return True
        return any(fnmatchcase(name, p) for p in self.models)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("This endpoint needs the admin token", code="admin_required")

    def require_collection(self, name: str | None, *, param: str = "collection") -> None:
        if not self.allows_collection(name):
            raise Forbidden(
                f"This API key may not use collection {name!r}", code="collection_not_allowed", param=param
            )

    def require_model(self, name: str, *, param: str = "model") -> None:
        if not self.allows_model(name):
            raise Forbidden(f"This API key may not use model {name!r}", code="model_not_allowed", param=param)


@dataclass(slots=True)
class _Bucket:
    """A token bucket: `rpm` requests a minute, refilled continuously."""

    rpm: int
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """Take one token; return 0 on success or the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.rpm, self.tokens + (now - self.updated) * self.rpm / 60.0)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) * 60.0 / self.rpm


def _principal_from_row(row: ApiKey) -> Principal:
    scopes = row.scopes or {}
    collections = scopes.get("collections")
    models = scopes.get("models")
    return Principal(
        key_id=row.id,
        is_admin=False,
        collections=tuple(collections) if collections else None,
        models=tuple(models) if models else None,
        rpm_limit=row.rpm_limit,
        expires_at=row.expires_at,
        label=row.label,
    )


class Authenticator:
    """Resolves bearer tokens to principals from a cache kept in sync with the database."""

    def __init__(self, db: Database, admin_token: str, *, sync_interval_s: float = 2.0) -> None:
        self._db = db
        self._admin_hash = hash_key(admin_token)
        self._sync_interval_s = sync_interval_s
        self._by_hash: dict[str, Principal] = {}
        self._unknown: OrderedDict[str, None] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._last_used: dict[str, datetime] = {}
        self._synced_at = utcnow()
        self._task: asyncio.Task[None] | None = None
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer …` header, or raise 401/429."""
        if not authorization:
            raise Unauthorized("Missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Malformed Authorization header: expected `Bearer <key>`", code="invalid_api_key")
        digest = hash_key(token)
        if hmac.compare_digest(digest, self._admin_hash):
            return Principal(key_id=None, is_admin=True)
        principal = self._by_hash.get(digest)
        if principal is None:
            principal = await self._lookup(digest)
        if principal is None:
            raise Unauthorized("Invalid API key", code="invalid_api_key")
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise Unauthorized("This API key has expired", code="expired_api_key")
        if principal.rpm_limit:
            self._check_rate(principal)
        assert principal.key_id is not None
        self._last_used[principal.key_id] = utcnow()
        return principal

    def _check_rate(self, principal: Principal) -> None:
        assert principal.key_id is not None and principal.rpm_limit
        bucket = self._buckets.get(principal.key_id)
        if bucket is None or bucket.rpm != principal.rpm_limit:
            bucket = self._buckets[principal.key_id] = _Bucket(principal.rpm_limit, float(principal.rpm_limit))
        wait_s = bucket.take()
        if wait_s > 0:
            raise RateLimited(
                f"Rate limit of {principal.rpm_limit} requests per minute exceeded for this key",
                retry_after_s=math.ceil(wait_s),
            )

    async def _lookup(self, digest: str) -> Principal | None:
        if digest in self._unknown:
            return None
        # Coalesce concurrent misses for the same token into one query.
        pending = self._lookups.get(digest)
        if pending is not None:
            return await pending
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._lookups[digest] = future
        try:
            async with self._db.session() as session:
                row = (await session.exec(select(ApiKey).where(ApiKey.key_hash == digest))).first()
            principal = None if row is None or row.revoked_at is not None else _principal_from_row(row)
            if principal is None:
                self._unknown[digest] = None
                while len(self._unknown) > NEGATIVE_CACHE_SIZE:
                    self._unknown.popitem(last=False)
            else:
                self._by_hash[digest] = principal
            future.set_result(principal)
            return principal
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._lookups[digest]

    def forget_key(self, key_id: str, key_hash: str | None = None) -> None:
        """Evict a key at once (after a revoke on this replica)."""
        if key_hash is not None:
            self._by_hash.pop(key_hash, None)
            self._unknown[key_hash] = None
        for digest, principal in list(self._by_hash.items()):
            if principal.key_id == key_id:
                del self._by_hash[digest]
                self._unknown[digest] = None
        self._buckets.pop(key_id, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="auth-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_last_used()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            try:
                await self.sync_revocations()
                await self._flush_last_used()
            except Exception as exc:  # keep syncing; the next round retries
                log.warning("auth sync failed error=%s", type(exc).__name__)

    async def sync_revocations(self) -> None:
        """Evict keys revoked since the last sync, on any replica."""
        since = self._synced_at
        now = utcnow()
        async with self._db.session() as session:
            rows = (
                await session.exec(
                    select(ApiKey.id, ApiKey.key_hash).where(col(ApiKey.revoked_at) >= since)
                )
            ).all()
        # Overlap the windows: a revoke committed during the query, or stamped by a
        # replica whose clock is a little behind, is still seen next round.
        self._synced_at = now - REVOCATION_OVERLAP
        for key_id, key_hash in rows:
            self.forget_key(key_id, key_hash)

    async def _flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        async with self._db.session() as session:
            for key_id, used_at in batch.items():
                await session.exec(  # type: ignore[call-overload]
                    update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=used_at)
                )
            await session.commit()


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the caller's `Principal` in `request.user` for every non-public route."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        authenticator: Authenticator = connection.app.state.authenticator
        principal = await authenticator.authenticate(connection.headers.get("authorization"))
        return AuthenticationResult(user=principal, auth=None)
