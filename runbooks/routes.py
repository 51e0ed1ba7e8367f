"""`/v1/collections` and `/v1/files` (the OpenAI-compatible Files API).

Handlers are thin: parse, check scope, call the service, shape the answer.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth import Principal
from gateway.errors import BadRequest, Conflict
from gateway.pagination import check_limit
from gateway.trajectories import TERMINAL_STATUSES, get_trajectory
from runbooks import collection_service, file_service, results
from runbooks.atif import to_atif


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


class RunActionsController(Controller):
    """Runbook-run actions under `/v1/trajectories/{id}/…` (reads and SSE are the trajectories slice's)."""

    path = "/v1/trajectories/{trajectory_id:str}"
    tags = ["trajectories"]

    @post("/grades", status_code=201)
    async def add_grade(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        data: dict[str, Any],
        trajectory_id: str = Parameter(),
    ) -> dict[str, Any]:
        """Add an external grade (score, passed, label, comment, grader)."""
        await get_trajectory(db_session, request.user, trajectory_id)
        return results.grade_to_api(
            await results.add_external_grade(db_session, trajectory_id, data)
        )

    @get("/grades")
    async def list_grades(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        trajectory_id: str = Parameter(),
    ) -> dict[str, Any]:
        await get_trajectory(db_session, request.user, trajectory_id)
        grades = await results.list_grades(db_session, trajectory_id)
        return {
            "object": "list",
            "data": [results.grade_to_api(g) for g in grades],
            "has_more": False,
            "next_cursor": None,
        }

    @get("/files")
    async def list_files(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        trajectory_id: str = Parameter(),
    ) -> dict[str, Any]:
        await get_trajectory(db_session, request.user, trajectory_id)
        files = await results.list_run_files(db_session, trajectory_id)
        return {"object": "list", "data": files, "has_more": False, "next_cursor": None}

    @get("/files/{path:path}", media_type="application/octet-stream")
    async def read_file(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        trajectory_id: str = Parameter(),
        path: str = Parameter(),
    ) -> Response[bytes]:
        await get_trajectory(db_session, request.user, trajectory_id)
        row = await results.read_run_file(db_session, trajectory_id, path.lstrip("/"))
        media_type = mimetypes.guess_type(row.path)[0] or "application/octet-stream"
        return Response(
            row.content, media_type=media_type, headers={"X-Content-SHA256": row.sha256}
        )

    @post("/cancel", status_code=200)
    async def cancel(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        trajectory_id: str = Parameter(),
    ) -> dict[str, Any]:
        """Stop the agent and destroy its sandbox; 409 when the run is already over."""
        trajectory = await get_trajectory(db_session, request.user, trajectory_id)
        if trajectory.kind != "runbook":
            raise Conflict("Only runbook runs can be cancelled", code="not_cancellable")
        if trajectory.status in TERMINAL_STATUSES:
            raise Conflict(
                f"The run is already {trajectory.status}",
                code="run_not_active",
                details={"status": trajectory.status},
            )
        how = await state.runbooks.cancel(trajectory_id, trajectory.status)
        await state.recorder.flush()
        current = await state.recorder.get(trajectory_id)
        return {
            "trajectory_id": trajectory_id,
            "status": current["status"] if current else "cancelled",
            "cancel": how,
        }

    @get("/atif")
    async def export_atif(
        self,
        request: Request[Principal, None, State],
        db_session: AsyncSession,
        state: State,
        trajectory_id: str = Parameter(),
    ) -> dict[str, Any]:
        """The run in ATIF (same as `GET /v1/trajectories/{id}?format=atif`)."""
        await get_trajectory(db_session, request.user, trajectory_id)
        return to_atif(await state.recorder.get(trajectory_id))


ROUTE_HANDLERS: list[Any] = [CollectionsController, FilesController, RunActionsController]
