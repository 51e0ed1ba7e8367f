"""One run from start to end: sandbox, agent, checks, results, final status.

Whatever happens (timeout, cancel, model error, sandbox failure) the run ends in a
terminal status with a reason, and its sandbox is destroyed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.errors import ApiError
from gateway.storage import utcnow
from runbooks.agent import AgentLoop, AgentOutcome, result_text
from runbooks.format import ASSETS_DIR, RESULTS_DIR
from runbooks.model_client import ModelClient
from runbooks.response import completion_body
from runbooks.results import (
    collect_files,
    files_to_api,
    grades_from_report,
    run_checks,
    store_results,
    summary_of,
)
from sandboxes import Sandbox, SandboxError

if TYPE_CHECKING:
    from runbooks.runner import LocalRun, RunbookService

log = logging.getLogger(__name__)

RESULTS_TIMEOUT_S = 600.0
SALVAGE_TIMEOUT_S = 60.0


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


async def _start_sandbox(service: RunbookService, run_id: str, run: LocalRun) -> Sandbox:
    prepared = run.prepared
    sandboxes = getattr(service.state, "sandboxes", None)
    if sandboxes is None:
        raise SandboxError("no sandbox backend is available on this gateway")
    service.add_step(
        run_id,
        "lifecycle",
        {
            "event": "sandbox_acquiring",
            "backend": sandboxes.backend_name,
            "message": "acquiring a sandbox",
        },
    )
    started = time.monotonic()
    sandbox: Sandbox = await sandboxes.acquire(prepared.spec, run_id)
    await sandbox.exec(["mkdir", "-p", RESULTS_DIR, ASSETS_DIR], timeout_s=60)
    for name, content in prepared.assets:
        await sandbox.write_file(f"{ASSETS_DIR}/{name}", content)
    service.add_step(
        run_id,
        "lifecycle",
        {
            "event": "sandbox_ready",
            "sandbox_id": sandbox.id,
            "backend": sandbox.backend,
            "isolated": sandbox.isolated,
            "assets": [name for name, _ in prepared.assets],
            "duration_ms": _ms(started),
            "message": "sandbox ready",
        },
    )
    return sandbox


async def _results(
    service: RunbookService, run_id: str, run: LocalRun, sandbox: Sandbox, outcome: AgentOutcome
) -> tuple[list[Any], list[Any]]:
    """Checks and validation report (after a finished agent only), then the result files."""
    prepared = run.prepared
    grades = []
    if outcome.status == "succeeded":
        if prepared.runbook.checks:
            service.add_step(
                run_id,
                "lifecycle",
                {
                    "event": "checks_started",
                    "checks": [c.name for c in prepared.runbook.checks],
                    "message": "running checks",
                },
            )
            grades += await run_checks(
                sandbox, run_id, prepared.runbook.checks, prepared.rendered.check_env
            )
        try:
            report = await sandbox.read_file(f"{RESULTS_DIR}/validation_report.json")
        except SandboxError:
            report = None
        if report is not None:
            grades += grades_from_report(run_id, report)
    files, skipped = await collect_files(sandbox, run_id)
    await store_results(service.db, run_id, grades, files)
    service.add_step(
        run_id,
        "lifecycle",
        {
            "event": "results_collected",
            "files": [f.path for f in files],
            "skipped": skipped,
            "grades": [{"name": g.name, "passed": g.passed} for g in grades],
            "message": f"{len(files)} result file(s), {len(grades)} grade(s)",
        },
    )
    return grades, files


async def execute_run(service: RunbookService, run_id: str, run: LocalRun) -> list[float]:
    """Run to a terminal status; returns the gateway overhead (ms) of each agent step."""
    prepared = run.prepared
    service.update(run_id, status="running", started_at=utcnow())
    created = int(time.time())
    outcome = AgentOutcome(status="failed")
    sandbox: Sandbox | None = None
    status, error = "failed", None
    loop: AgentLoop | None = None
    try:
        async with asyncio.timeout(prepared.timeout_s):
            sandbox = await _start_sandbox(service, run_id, run)
            client = ModelClient(
                service.state.model_router, service.state.upstreams, prepared.model
            )
            loop = AgentLoop(
                client=client,
                sandbox=sandbox,
                prompt=prepared.rendered.prompt,
                extra_messages=[m for m in prepared.request.messages if m.get("role") == "user"],
                outputs_schema=prepared.runbook.outputs_schema,
                env=prepared.rendered.agent_env,
                secrets=prepared.rendered.secret_values,
                limits=prepared.limits,
                add_step=lambda kind, data: service.add_step(run_id, kind, data),
            )
            service.add_step(
                run_id,
                "lifecycle",
                {
                    "event": "agent_started",
                    "agent": "jetty",
                    "model": prepared.model,
                    "message": "agent started",
                },
            )
            outcome = await loop.run()
        status = outcome.status
        if outcome.status != "succeeded":
            error = {"code": outcome.reason, "message": outcome.message}
    except TimeoutError:
        status, error = (
            "timed_out",
            {"code": "timeout", "message": f"The run exceeded its {prepared.timeout_s:g} s limit"},
        )
        service.add_step(run_id, "error", {"reason": "timeout", "message": error["message"]})
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        reason = run.cancel_reason or "cancelled"
        if reason == "cancelled":
            status, error = "cancelled", {"code": "cancelled", "message": "Cancelled by request"}
        else:
            status, error = (
                "failed",
                {"code": reason, "message": "The gateway shut down while this run was in flight"},
            )
        service.add_step(run_id, "lifecycle", {"event": status, "message": error["message"]})
    except ApiError as exc:
        status, error = "failed", {"code": exc.code, "message": exc.message}
        service.add_step(run_id, "error", {"reason": exc.code, "message": exc.message})
    except SandboxError as exc:
        status, error = "failed", {"code": "sandbox_error", "message": str(exc)}
        service.add_step(run_id, "error", {"reason": "sandbox_error", "message": str(exc)})
    if loop is not None:
        outcome = loop.outcome  # usage so far, also when the run was cut short
    files: list[Any] = []
    try:
        if sandbox is not None and status != "cancelled" and sandbox.is_alive:
            budget = RESULTS_TIMEOUT_S if status == "succeeded" else SALVAGE_TIMEOUT_S
            async with asyncio.timeout(budget):
                _, files = await _results(service, run_id, run, sandbox, outcome)
    except (TimeoutError, SandboxError) as exc:
        log.warning(
            "collecting results failed trajectory_id=%s error=%s", run_id, type(exc).__name__
        )
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        status, error = "cancelled", {"code": "cancelled", "message": "Cancelled by request"}
    finally:
        if sandbox is not None:
            try:
                await service.state.sandboxes.release(sandbox)
            except Exception as exc:
                log.warning(
                    "sandbox release failed trajectory_id=%s error=%s", run_id, type(exc).__name__
                )
    summary = summary_of(files)
    if summary is not None:
        content = summary
    elif outcome.result is not None:
        content = result_text(outcome.result)
    else:
        content = (error or {}).get("message") or ""
    service.update(
        run_id,
        status=status,
        finished_at=utcnow(),
        outputs=outcome.result if status == "succeeded" else None,
        error=error,
        usage=outcome.usage,
        cost_usd=outcome.cost_usd,
        files=files_to_api(run_id, files),
        response=completion_body(run_id, prepared.model, created, content, outcome.usage),
    )
    log.info(
        "runbook run ended trajectory_id=%s status=%s steps=%d", run_id, status, outcome.llm_calls
    )
    return outcome.overhead_ms
