"""`/v1/collections` and `/v1/files` (the OpenAI-compatible Files API).

Handlers are thin: parse, check scope, call the service, shape the answer.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Principal
from gateway.errors import BadRequest
from gateway.pagination import check_limit
from runbooks import collection_service, file_service


class CollectionsController(Controller):
    path = "/v1/collections"
    tags = ["collections"]

    @put("/{name:str}")
    async def put_collection(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        data: dict[str, Any],
        name: str = Parameter(),
    ) -> Response[dict[str, Any]]:
        """Create or replace a collection. Secrets are write-only: only their names come back."""
        request.user.require_collection(name, param="name")
        row, created = await collection_service.put_collection(
            db_session, state.secret_key, name, data
        )
        return Response(
            collection_service.collection_to_api(row), status_code=201 if created else 200
        )

    @get("/{name:str}")
    async def get_collection(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        name: str = Parameter(),
    ) -> dict[str, Any]:
        request.user.require_collection(name, param="name")
        return collection_service.collection_to_api(
            await collection_service.get_collection(db_session, name)
        )

    @get("/")
    async def list_collections(
        self, request: Request[Principal, None, State], db_session: AsyncSession
    ) -> dict[str, Any]:
        """The collections this key may use, by name."""
        rows = [
            r
            for r in await collection_service.list_collections(db_session)
            if request.user.allows_collection(r.name)
        ]
        return {
            "object": "list",
            "data": [collection_service.collection_to_api(r) for r in rows],
            "has_more": False,
            "next_cursor": None,
        }


class FilesController(Controller):
    """The OpenAI Files API (https://platform.openai.com/docs/api-reference/files)."""

    path = "/v1/files"
    tags = ["files"]

    @post("/", status_code=200)
    async def upload_file(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        data: dict[str, Any] = Body(media_type=RequestEncodingType.MULTI_PART),
    ) -> dict[str, Any]:
        """Upload one file (multipart: `file`, `purpose`); returns the OpenAI file object."""
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("Send the file as the multipart field `file`", param="file")
        purpose = data.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise BadRequest("`purpose` is required (e.g. user_data)", param="purpose")
        content = await upload.read()
        row = await file_service.create_file(
            db_session,
            request.user,
            filename=upload.filename or "upload",
            purpose=purpose,
            content=content,
            max_bytes=state.settings.max_body_bytes,
        )
        return file_service.file_to_api(row)

    @get("/")
    async def list_files(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        limit: int | None = None,
        after: str | None = None,
        cursor: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        page = await file_service.list_files(
            db_session,
            request.user,
            limit=check_limit(limit),
            cursor=cursor or after,
            purpose=purpose,
        )
        body = page.to_api(file_service.file_to_api)
        body["first_id"] = body["data"][0]["id"] if body["data"] else None
        body["last_id"] = body["data"][-1]["id"] if body["data"] else None
        return body

    @get("/{file_id:str}")
    async def get_file(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        file_id: str = Parameter(),
    ) -> dict[str, Any]:
        return file_service.file_to_api(
            await file_service.get_file(db_session, request.user, file_id)
        )

    @get("/{file_id:str}/content", media_type="application/octet-stream")
    async def get_file_content(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        file_id: str = Parameter(),
    ) -> Response[bytes]:
        row, content = await file_service.read_content(db_session, request.user, file_id)
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{row.filename}"'},
        )

    @delete("/{file_id:str}", status_code=200)
    async def delete_file(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        file_id: str = Parameter(),
    ) -> dict[str, Any]:
        await file_service.delete_file(db_session, request.user, file_id)
        return {"id": file_id, "object": "file", "deleted": True}


ROUTE_HANDLERS: list[Any] = [CollectionsController, FilesController]
