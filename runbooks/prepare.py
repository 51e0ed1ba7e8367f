"""Everything decided before a run exists: runbook, model, secrets, files, sandbox, limits.

Doing it before the trajectory is created means a bad request is answered with a
4xx that names the problem, not with a run that fails later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.auth import Principal
from gateway.errors import Unprocessable
from gateway.storage import Database
from runbooks import collection_service, file_service
from runbooks.agent import Limits
from runbooks.format import Runbook, parse_memory_mb, parse_runbook, sha256_text
from runbooks.models import Collection
from runbooks.request import DEFAULT_TIMEOUT_S, RunRequest
from runbooks.sandbox_policy import apply_sandbox_policy
from runbooks.sources import fetch_runbook
from runbooks.template import RenderedRunbook, render_runbook
from sandboxes import SandboxSpec

log = logging.getLogger(__name__)

MAX_ASSET_BYTES = 50 * 1024 * 1024


@dataclass(slots=True)
class PreparedRun:
    request: RunRequest
    runbook: Runbook
    source: str  # the URL, or "inline"
    rendered: RenderedRunbook
    model: str
    task: str
    timeout_s: float
    spec: SandboxSpec
    limits: Limits
    assets: list[tuple[str, bytes]] = field(default_factory=list)
    file_ids: list[str] = field(default_factory=list)
    replay_of: str | None = None
    fetch_ms: float = 0.0

    def runbook_record(self) -> dict[str, Any]:
        """Pinned with the trajectory: a replay runs exactly this text."""
        return {
            "source": self.source,
            "sha256": self.runbook.sha256,
            "text": self.runbook.text,
            "name": self.runbook.name,
            "version": self.runbook.version,
            "evaluation": self.runbook.evaluation,
            "agent": self.runbook.agent,
            "primary_outputs": list(self.runbook.primary_outputs),
        }

    def stored_request(self) -> dict[str, Any]:
        """The request as recorded: inline files became uploaded file ids; no secret values."""
        jetty = {k: v for k, v in self.request.jetty.items() if k != "files"}
        jetty["files"] = list(self.file_ids)
        return {
            "model": self.request.model,
            "messages": self.request.messages,
            "stream": self.request.stream,
            "jetty": jetty,
        }

    def fetch_step(self) -> dict[str, Any]:
        return {
            "event": "runbook_fetched",
            "source": self.source,
            "sha256": self.runbook.sha256,
            "name": self.runbook.name,
            "duration_ms": self.fetch_ms,
            "message": f"runbook {self.runbook.name!r} ready",
        }


def _sandbox_spec(
    runbook: Runbook, collection: Collection | None, request: RunRequest, env: dict[str, str]
) -> SandboxSpec:
    merged: dict[str, Any] = {}
    if runbook.sandbox is not None:
        merged.update(runbook.sandbox.to_dict())
    defaults = (collection.defaults if collection else {}).get("sandbox") or {}
    for key, value in defaults.items():
        name = {"cpu": "cpus", "memory": "memory_mb", "timeout": "timeout_s"}.get(key, key)
        merged[name] = value
    merged.update(request.sandbox)
    spec = SandboxSpec(env=env)
    network = merged.get("network")
    if network in (False, "false", "off", "", None):
        network = "none"
    return replace(
        spec,
        image=merged.get("image") or None,
        network=str(network),
        cpus=float(merged.get("cpus") or spec.cpus),
        memory_mb=parse_memory_mb(merged["memory_mb"])
        if merged.get("memory_mb")
        else spec.memory_mb,
    )


async def prepare_run(
    state: Any,
    principal: Principal,
    request: RunRequest,
    *,
    pinned: dict[str, Any] | None = None,
    replay_of: str | None = None,
) -> PreparedRun:
    """Validate and resolve a run request; raises the 4xx a client should see."""
    principal.require_collection(request.collection, param="jetty.collection")
    db: Database = state.db
    async with db.session() as session:
        collection = await collection_service.find_collection(session, request.collection)
    started = time.monotonic()
    if pinned is not None:
        text, source = pinned["text"], pinned.get("source") or "inline"
        if sha256_text(text) != pinned.get("sha256"):
            raise Unprocessable(
                "The pinned runbook text does not match its hash", code="runbook_pin_mismatch"
            )
    elif request.runbook_text is not None:
        text, source = request.runbook_text, "inline"
    else:
        assert request.runbook_url is not None
        fetched = await fetch_runbook(request.runbook_url, state.settings)
        text, source = fetched.text, fetched.url
    fetch_ms = round((time.monotonic() - started) * 1000, 1)
    default_name = (
        "runbook"
        if source == "inline"
        else source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".md")
    )
    runbook = parse_runbook(text, default_name=default_name)
    secrets = collection_service.decrypt_secrets(collection, state.secret_key)
    rendered = render_runbook(runbook, request.inputs, secrets)
    defaults = collection.defaults if collection else {}
    model = request.model or defaults.get("model") or runbook.model
    if not model:
        raise Unprocessable(
            "No model: set `model` in the request, the collection's defaults or the runbook",
            code="model_required",
            param="model",
        )
    principal.require_model(model)
    state.model_router.route(model)  # 404 model_not_found before anything starts
    assets, file_ids = await _assets(state, principal, request)
    timeout_s = (
        request.timeout_s
        or defaults.get("timeout_s")
        or (runbook.sandbox.timeout_s if runbook.sandbox else None)
        or DEFAULT_TIMEOUT_S
    )
    spec = apply_sandbox_policy(_sandbox_spec(runbook, collection, request, rendered.agent_env), state.settings)
    spec = replace(
        spec, timeout_s=float(timeout_s) + 600.0
    )  # checks and collection run after the agent
    limits = Limits()
    if request.max_steps:
        limits.max_steps = request.max_steps
    if request.max_cost_usd:
        limits.max_cost_usd = request.max_cost_usd
    return PreparedRun(
        request=request,
        runbook=runbook,
        source=source,
        rendered=rendered,
        model=model,
        task=request.task or runbook.name,
        timeout_s=float(timeout_s),
        spec=spec,
        limits=limits,
        assets=assets,
        file_ids=file_ids,
        replay_of=replay_of,
        fetch_ms=fetch_ms,
    )


async def _assets(
    state: Any, principal: Principal, request: RunRequest
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Files for /app/assets; inline ones are stored as uploads so a replay has them too."""
    assets: list[tuple[str, bytes]] = []
    ids: list[str] = []
    total = 0
    async with state.db.session() as session:
        for i, file_id in enumerate(request.file_ids):
            try:
                row, content = await file_service.read_content(session, principal, file_id)
            except Exception as exc:
                raise Unprocessable(
                    f"jetty.files[{i}]: no file with id {file_id!r}",
                    code="file_not_found",
                    param=f"jetty.files[{i}]",
                ) from exc
            assets.append((row.filename, content))
            ids.append(row.id)
            total += len(content)
        for inline in request.inline_files:
            row = await file_service.create_file(
                session,
                principal,
                filename=inline.name,
                purpose="user_data",
                content=inline.content,
                max_bytes=MAX_ASSET_BYTES,
            )
            assets.append((row.filename, inline.content))
            ids.append(row.id)
            total += len(inline.content)
    if total > MAX_ASSET_BYTES:
        raise Unprocessable(
            f"jetty.files add up to more than {MAX_ASSET_BYTES} bytes",
            code="files_too_large",
            param="jetty.files",
        )
    return assets, ids
