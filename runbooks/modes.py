"""How a runbook-mode chat completion answers: sync (bounded wait), async (202) or stream.

The run belongs to `RunbookService`, never to the connection: a client that goes
away stops only its own wait or stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.response import Stream

from gateway.auth import Principal
from gateway.errors import NotFound
from runbooks.prepare import prepare_run
from runbooks.request import parse_run_request
from runbooks.response import TERMINAL, chunk, final_answer, pending_answer
from runbooks.results import list_grades, list_run_files
from runbooks.runner import RunbookService

log = logging.getLogger(__name__)

KEEPALIVE_S = 10.0
POLL_S = 0.5


async def read_answer(state: Any, run_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a run as it stands: 200 with the result when over, else 202."""
    trajectory = await state.recorder.get(run_id)
    if trajectory is None:
        raise NotFound(f"No trajectory with id {run_id!r}", code="trajectory_not_found")
    if trajectory["status"] not in TERMINAL:
        return 202, pending_answer(run_id, trajectory["status"])
    async with state.db.session() as session:
        grades = await list_grades(session, run_id)
        files = await list_run_files(session, run_id)
    return 200, final_answer(trajectory, grades, files)


def _headers(run_id: str, created: bool) -> dict[str, str]:
    headers = {"X-Jetty-Trajectory-Id": run_id}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return headers


async def run_runbook(
    request: Request[Any, Any, Any], body: dict[str, Any], principal: Principal
) -> Response[Any]:
    """`state.run_runbook`: the passthrough route hands runbook-mode bodies here."""
    state = request.app.state
    service: RunbookService = state.runbooks
    run_request = parse_run_request(body)
    idempotency_key = request.headers.get("idempotency-key") or None
    if idempotency_key:
        existing = await state.recorder.find_by_idempotency_key(principal.key_id, idempotency_key)
        if existing:
            return await _answer(
                state, service, existing, False, run_request.stream, run_request.is_async
            )
    prepared = await prepare_run(state, principal, run_request)
    run_id, created = await service.submit(prepared, principal, idempotency_key)
    return await _answer(state, service, run_id, created, run_request.stream, run_request.is_async)


async def _answer(
    state: Any, service: RunbookService, run_id: str, created: bool, stream: bool, is_async: bool
) -> Response[Any]:
    headers = _headers(run_id, created)
    if stream:
        return Stream(
            stream_run(state, service, run_id),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    if not is_async:
        await service.wait(run_id, state.settings.sync_wait_s)
    status, answer = await read_answer(state, run_id)
    return Response(answer, status_code=status, headers=headers)


async def stream_run(state: Any, service: RunbookService, run_id: str) -> AsyncIterator[bytes]:
    """Progress as `chat.completion.chunk`s (a `jetty` event each), keep-alives, then the result."""
    created = int(time.time())
    run = service.runs.get(run_id)
    model = run.prepared.model if run else ""
    yield chunk(
        run_id,
        model,
        created,
        delta={"role": "assistant", "content": ""},
        jetty={"type": "started", "trajectory_id": run_id},
    )
    last_sent = time.monotonic()
    if run is not None:
        index = 0
        while True:
            while index < len(run.history):
                event = run.history[index]
                index += 1
                last_sent = time.monotonic()
                yield chunk(run_id, model, created, delta={}, jetty=event)
            if run.done:
                break
            run.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.changed.wait(), timeout=KEEPALIVE_S)
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
    else:  # running elsewhere (another replica) or already over: poll storage
        while True:
            trajectory = await state.recorder.get(run_id)
            if trajectory is None or trajectory["status"] in TERMINAL:
                break
            await asyncio.sleep(POLL_S)
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
    _, answer = await read_answer(state, run_id)
    message = (answer.get("choices") or [{}])[0].get("message") or {}
    yield chunk(
        run_id,
        answer.get("model") or model,
        created,
        delta={"content": message.get("content") or ""},
        finish_reason="stop",
        usage=answer.get("usage"),
        jetty={"type": "result", **answer.get("jetty", {})},
    )
    yield b"data: [DONE]\n\n"


async def replay_run(
    request: Request[Any, Any, Any], trajectory: Any, model: str | None
) -> Response[Any]:
    """`state.replay_run`: re-run a runbook run with its pinned runbook, optionally on another model."""
    from runbooks.request import parse_run_request as parse

    state = request.app.state
    service: RunbookService = state.runbooks
    stored = dict(trajectory.request or {})
    body = {**stored, "model": model or trajectory.model, "stream": False}
    jetty = dict(body.get("jetty") or {})
    jetty.pop("runbook_url", None)
    jetty["runbook"] = (trajectory.runbook or {}).get("text") or ""
    body["jetty"] = jetty
    run_request = parse(body)
    prepared = await prepare_run(
        state, request.user, run_request, pinned=trajectory.runbook, replay_of=trajectory.id
    )
    run_id, _ = await service.submit(prepared, request.user, None)
    return Response(
        {**pending_answer(run_id, "queued"), "replay_of": trajectory.id},
        status_code=202,
        headers=_headers(run_id, True),
    )
