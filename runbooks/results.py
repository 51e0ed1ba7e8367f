"""What a run leaves behind: grades (checks, validation report, external) and result files.

Files in /app/results are copied into the database (each and in total size-capped)
so any replica can serve them after the sandbox is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import BadRequest, NotFound
from gateway.ids import new_id
from gateway.storage import Database, isoformat, utcnow
from runbooks.format import RESULTS_DIR, CheckSpec
from runbooks.models import RunFile, RunGrade
from runbooks.tools import STORE_CAP, cut
from sandboxes import Sandbox, SandboxError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_TOTAL_BYTES = 50 * 1024 * 1024
MAX_FILES = 500


def grade_to_api(grade: RunGrade) -> dict[str, Any]:
    return {
        "id": grade.id,
        "object": "grade",
        "trajectory_id": grade.trajectory_id,
        "name": grade.name,
        "source": grade.source,
        "passed": grade.passed,
        "score": grade.score,
        "label": grade.label,
        "comment": grade.comment,
        "grader": grade.grader,
        "details": grade.details,
        "created_at": isoformat(grade.created_at),
    }


def _grade(
    trajectory_id: str, name: str, source: str, passed: bool | None, **extra: Any
) -> RunGrade:
    return RunGrade(
        id=new_id("grd"),
        trajectory_id=trajectory_id,
        name=name[:200],
        source=source,
        passed=passed,
        score=extra.pop("score", 1.0 if passed else 0.0 if passed is not None else None),
        created_at=utcnow(),
        **extra,
    )


async def run_checks(
    sandbox: Sandbox, trajectory_id: str, checks: tuple[CheckSpec, ...], env: Mapping[str, str]
) -> list[RunGrade]:
    """Run each check command in the sandbox; exit 0 passes. One grade per check."""
    grades = []
    for check in checks:
        try:
            result = await sandbox.exec(
                check.command, timeout_s=check.timeout_s, env=dict(env), workdir="/app"
            )
            out, _ = cut(result.stdout_text, 4096)
            err, _ = cut(result.stderr_text, 4096)
            details = {
                "command": check.command,
                "exit_code": result.exit_code,
                "stdout": out,
                "stderr": err,
                "timed_out": result.timed_out,
            }
            passed = result.ok
            message = f"exit code {result.exit_code}" + (" (timed out)" if result.timed_out else "")
        except SandboxError as exc:
            details, passed, message = (
                {"command": check.command, "error": str(exc)},
                False,
                str(exc),
            )
        grades.append(
            _grade(
                trajectory_id,
                check.name,
                "check",
                passed,
                comment=message,
                grader="check",
                details=details,
            )
        )
    return grades


def grades_from_report(trajectory_id: str, raw: bytes) -> list[RunGrade]:
    """Grades from `validation_report.json`: one per stage, plus `overall`."""
    try:
        report = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return [
            _grade(
                trajectory_id,
                "validation_report",
                "validation_report",
                False,
                comment=f"not valid JSON: {exc}",
                grader="validation_report",
            )
        ]
    if not isinstance(report, dict):
        return [
            _grade(
                trajectory_id,
                "validation_report",
                "validation_report",
                False,
                comment="not a JSON object",
                grader="validation_report",
            )
        ]
    grades = []
    for i, stage in enumerate(report.get("stages") or []):
        if not isinstance(stage, dict):
            continue
        passed = stage.get("passed")
        grades.append(
            _grade(
                trajectory_id,
                str(stage.get("name") or f"stage_{i + 1}"),
                "validation_report",
                passed if isinstance(passed, bool) else None,
                comment=str(stage.get("message"))[:4000]
                if stage.get("message") is not None
                else None,
                grader="validation_report",
            )
        )
    overall = report.get("overall_passed")
    if isinstance(overall, bool):
        results = report.get("results") if isinstance(report.get("results"), dict) else {}
        grades.append(
            _grade(
                trajectory_id,
                "overall",
                "validation_report",
                overall,
                grader="validation_report",
                details={"results": results},
            )
        )
    return grades


async def collect_files(sandbox: Sandbox, trajectory_id: str) -> tuple[list[RunFile], list[str]]:
    """Copy /app/results into rows (caps apply); returns the rows and what was skipped."""
    try:
        entries = await sandbox.list_files(RESULTS_DIR, recursive=True)
    except SandboxError:
        return [], []
    rows: list[RunFile] = []
    skipped: list[str] = []
    total = 0
    for entry in sorted((e for e in entries if not e.is_dir), key=lambda e: e.path):
        path = entry.path.lstrip("./")
        if (
            len(rows) >= MAX_FILES
            or entry.size > MAX_FILE_BYTES
            or total + entry.size > MAX_TOTAL_BYTES
        ):
            skipped.append(path)
            continue
        try:
            content = await sandbox.read_file(f"{RESULTS_DIR}/{path}")
        except SandboxError:
            skipped.append(path)
            continue
        total += len(content)
        rows.append(
            RunFile(
                trajectory_id=trajectory_id,
                path=path,
                bytes=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                content=content,
                created_at=utcnow(),
            )
        )
    return rows, skipped


def files_to_api(trajectory_id: str, files: list[RunFile]) -> list[dict[str, Any]]:
    return [
        {
            "path": f.path,
            "bytes": f.bytes,
            "sha256": f.sha256,
            "url": f"/v1/trajectories/{trajectory_id}/files/{f.path}",
        }
        for f in files
    ]


async def store_results(
    db: Database, trajectory_id: str, grades: list[RunGrade], files: list[RunFile]
) -> None:
    async with db.session() as session:
        await session.exec(delete(RunFile).where(col(RunFile.trajectory_id) == trajectory_id))  # type: ignore[call-overload]
        for row in [*grades, *files]:
            session.add(row)
        await session.commit()


async def list_grades(session: AsyncSession, trajectory_id: str) -> list[RunGrade]:
    query = (
        select(RunGrade).where(RunGrade.trajectory_id == trajectory_id).order_by(col(RunGrade.id))
    )
    return list((await session.exec(query)).all())


async def list_run_files(session: AsyncSession, trajectory_id: str) -> list[dict[str, Any]]:
    query = (
        select(RunFile.path, RunFile.bytes, RunFile.sha256)
        .where(RunFile.trajectory_id == trajectory_id)
        .order_by(col(RunFile.path))
    )
    rows = (await session.exec(query)).all()  # type: ignore[call-overload]
    return [
        {"path": p, "bytes": b, "sha256": s, "url": f"/v1/trajectories/{trajectory_id}/files/{p}"}
        for p, b, s in rows
    ]


async def read_run_file(session: AsyncSession, trajectory_id: str, path: str) -> RunFile:
    row = await session.get(RunFile, (trajectory_id, path))
    if row is None:
        raise NotFound(
            f"No result file {path!r} in trajectory {trajectory_id!r}",
            code="file_not_found",
            param="path",
        )
    return row


async def add_external_grade(
    session: AsyncSession, trajectory_id: str, body: dict[str, Any]
) -> RunGrade:
    """A grade from outside (a human, an LLM judge): score, label, comment, grader."""
    score = body.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise BadRequest("score must be a number", param="score")
    passed = body.get("passed")
    if passed is not None and not isinstance(passed, bool):
        raise BadRequest("passed must be true or false", param="passed")
    for name in ("label", "comment", "grader", "name"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"{name} must be a string", param=name)
    if score is None and passed is None and not body.get("label"):
        raise BadRequest("give at least one of score, passed or label", param="score")
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    grade = _grade(
        trajectory_id,
        body.get("name") or body.get("grader") or "external",
        "external",
        passed,
        score=float(score) if score is not None else None,
        label=(body.get("label") or None),
        comment=body.get("comment"),
        grader=body.get("grader"),
        details=details,
    )
    session.add(grade)
    await session.commit()
    return grade


def summary_of(files: list[RunFile]) -> str | None:
    for f in files:
        if f.path == "summary.md":
            text, _ = cut(f.content.decode("utf-8", errors="replace"), STORE_CAP)
            return text
    return None
