"""`jetty runbook …`: work with RUNBOOK.md files locally.

Imports stay light (yaml and jsonschema only) because `gateway.cli` mounts this app
at import time and `jetty --help` must stay instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

runbook_app = typer.Typer(help="Check runbooks (RUNBOOK.md).", no_args_is_help=True)


@runbook_app.command("check")
def check(
    paths: list[Path] = typer.Argument(..., help="RUNBOOK.md files to parse."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file."),
) -> None:
    """Parse runbooks; print front matter, template variables and secrets, or the error with its line."""
    from gateway.errors import ApiError
    from runbooks.format import parse_runbook

    failed = 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            runbook = parse_runbook(
                text,
                default_name=path.parent.name if path.name.lower() == "runbook.md" else path.stem,
            )
        except (OSError, UnicodeDecodeError) as exc:
            failed += 1
            _print_error(path, f"cannot read: {exc}", None, as_json)
            continue
        except ApiError as exc:
            failed += 1
            line = exc.details.get("line") if isinstance(exc.details, dict) else None
            _print_error(path, exc.message, line, as_json)
            continue
        report = {
            "path": str(path),
            "ok": True,
            "name": runbook.name,
            "sha256": runbook.sha256,
            "front_matter": runbook.front_matter,
            "variables": list(runbook.variables),
            "secrets": {
                name: {
                    "env": runbook.secret_spec(name).env,
                    "required": runbook.secret_spec(name).required,
                    "expose_to_agent": runbook.secret_spec(name).expose_to_agent,
                    "expose_to_checks": runbook.secret_spec(name).expose_to_checks,
                }
                for name in dict.fromkeys([*runbook.secrets, *runbook.secret_refs])
            },
            "checks": [c.name for c in runbook.checks],
        }
        if as_json:
            typer.echo(json.dumps(report, default=str))
            continue
        typer.echo(f"{path}: ok ({runbook.name}, sha256 {runbook.sha256[:12]})")
        typer.echo("  front matter:")
        for key, value in runbook.front_matter.items():
            typer.echo(f"    {key}: {json.dumps(value, default=str)}")
        typer.echo(f"  template variables: {', '.join(runbook.variables) or '(none)'}")
        secrets = report["secrets"]
        typer.echo(f"  secrets: {', '.join(secrets) or '(none)'}")  # type: ignore[arg-type]
        if runbook.checks:
            typer.echo(f"  checks: {', '.join(c.name for c in runbook.checks)}")
    if failed:
        raise typer.Exit(1)


def _print_error(path: Path, message: str, line: int | None, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"path": str(path), "ok": False, "error": message, "line": line}))
    else:
        typer.echo(f"{path}: error: {message}", err=True)
