"""`/v1/keys`: create, list, read and revoke API keys (admin only)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Authenticator, Principal
from gateway.keys import service
from gateway.keys.schemas import CreateKey, key_to_api
from gateway.pagination import check_limit


class KeysController(Controller):
    path = "/v1/keys"
    tags = ["keys"]

    @post("/", status_code=201)
    async def create_key(
        self, request: Request[Principal, None, State], data: CreateKey, db_session: AsyncSession
    ) -> dict[str, Any]:
        """Create a key. The raw `key` is in this response only; only its SHA-256 is stored."""
        request.user.require_admin()
        key, raw = await service.create_key(db_session, data)
        return {**key_to_api(key), "key": raw}

    @get("/")
    async def list_keys(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        limit: int | None = None,
        cursor: str | None = None,
        include_revoked: bool = False,
    ) -> dict[str, Any]:
        request.user.require_admin()
        page = await service.list_keys(
            db_session, limit=check_limit(limit), cursor=cursor, include_revoked=include_revoked
        )
        return page.to_api(key_to_api)

    @get("/{key_id:str}")
    async def get_key(
        self, request: Request[Principal, None, State], db_session: AsyncSession, key_id: str = Parameter()
    ) -> dict[str, Any]:
        request.user.require_admin()
        return key_to_api(await service.get_key(db_session, key_id))

    @delete("/{key_id:str}", status_code=200)
    async def revoke_key(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        key_id: str = Parameter(),
    ) -> dict[str, Any]:
        """Revoke a key; it stops working on this replica at once, on others within seconds."""
        request.user.require_admin()
        key = await service.revoke_key(db_session, key_id)
        authenticator: Authenticator = state.authenticator
        authenticator.forget_key(key.id, key.key_hash)
        return key_to_api(key)
