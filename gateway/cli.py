"""The `jetty` command line: serve the gateway, manage keys and the database.

Commands that talk to a running gateway use `JETTY_BASE_URL` (default
`http://127.0.0.1:8000`) and the token from `JETTY_API_KEY`, else
`~/.config/jetty/token` (written by `jetty setup`), else the admin token in the
local data dir. Heavy imports stay inside the commands so `jetty --help` is instant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Jetty gateway: one OpenAI-compatible endpoint for LLM calls and runbook agents.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

# The CLI, like gateway.app, is a composition root: it mounts every slice's commands.
from runbooks.cli import runbook_app  # noqa: E402  (light: yaml and jsonschema only)
from sandboxes.cli import doctor, sandbox_app  # noqa: E402  (the docker SDK loads inside the commands)

app.add_typer(runbook_app, name="runbook")
app.add_typer(sandbox_app, name="sandbox")
app.command("doctor")(doctor)

TOKEN_FILE = Path.home() / ".config" / "jetty" / "token"


def _settings() -> Any:
    from gateway.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        typer.echo(f"jetty: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _base_url() -> str:
    return os.environ.get("JETTY_BASE_URL", "http://127.0.0.1:8000").rstrip("/")


def _token() -> str:
    if token := os.environ.get("JETTY_API_KEY", "").strip():
        return token
    if TOKEN_FILE.is_file():
        return TOKEN_FILE.read_text().strip()
    settings = _settings()
    if settings.admin_token:
        return settings.admin_token
    admin_file = settings.data_dir / "admin_token"
    if admin_file.is_file():
        return admin_file.read_text().strip()
    typer.echo("jetty: no API key: set JETTY_API_KEY or run `jetty setup`", err=True)
    raise typer.Exit(2)


def _api(method: str, path: str, **kwargs: Any) -> Any:
    """Call the gateway; print the error envelope's message and exit 1 on failure."""
    import httpx

    try:
        response = httpx.request(
            method,
            f"{_base_url()}{path}",
            headers={"Authorization": f"Bearer {_token()}"},
            timeout=30,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"jetty: cannot reach the gateway at {_base_url()}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            typer.echo(f"jetty: {response.status_code} {error['code']}: {error['message']}", err=True)
        except (ValueError, KeyError, TypeError):
            typer.echo(f"jetty: HTTP {response.status_code}", err=True)
        raise typer.Exit(1)
    return response.json()


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to listen on (JETTY_HOST)."),
    port: int | None = typer.Option(None, help="Port to listen on (JETTY_PORT)."),
) -> None:
    """Run the gateway on the embedded defaults or the JETTY_* configuration."""
    import dataclasses

    import uvicorn

    from gateway.app import create_app
    from gateway.logs import RequestLogMiddleware

    settings = _settings()
    if host is not None or port is not None:
        settings = dataclasses.replace(
            settings, host=host or settings.host, port=settings.port if port is None else port
        )
    try:
        asgi = RequestLogMiddleware(create_app(settings))
    except Exception as exc:
        typer.echo(f"jetty: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(
        asgi,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        server_header=False,
    )


@app.command()
def version() -> None:
    """Print the gateway's version."""
    from gateway import __version__

    typer.echo(__version__)


@app.command()
def setup(
    token: str = typer.Option(..., prompt=True, hide_input=True, help="API key to store for the CLI."),
) -> None:
    """Store the CLI's API key in ~/.config/jetty/token (mode 0600)."""
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token.strip() + "\n")
    typer.echo(f"token saved to {TOKEN_FILE}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations to the configured database."""
    from gateway.storage import upgrade_schema

    settings = _settings()
    upgrade_schema(settings.resolved_database_url)
    typer.echo("database schema is up to date")


@keys_app.command("create")
def keys_create(
    label: str = typer.Option("", help="A name for the key."),
    collection: list[str] = typer.Option([], "--collection", help="Allowed collection (glob); repeatable."),
    model: list[str] = typer.Option([], "--model", help="Allowed model (glob); repeatable."),
    rpm: int | None = typer.Option(None, help="Requests per minute limit."),
    expires_in: int | None = typer.Option(None, help="Lifetime in seconds."),
) -> None:
    """Create a key and print it once."""
    body: dict[str, Any] = {"label": label, "rpm_limit": rpm, "expires_in_s": expires_in}
    body["scopes"] = {"collections": collection or None, "models": model or None}
    key = _api("POST", "/v1/keys", json=body)
    typer.echo(json.dumps(key, indent=2))
    typer.echo("store the key now: it is not shown again", err=True)


@keys_app.command("list")
def keys_list(include_revoked: bool = typer.Option(False, help="Show revoked keys too.")) -> None:
    """List keys (never their values)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, "include_revoked": include_revoked}
        if cursor:
            params["cursor"] = cursor
        page = _api("GET", "/v1/keys", params=params)
        for key in page["data"]:
            state = "revoked" if key["revoked_at"] else "active"
            typer.echo(f"{key['id']}\t{key['prefix']}…\t{state}\t{key['label']}")
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; it stops working at once."""
    key = _api("DELETE", f"/v1/keys/{key_id}")
    typer.echo(f"revoked {key['id']}")


@app.command("run")
def run(
    runbook: str = typer.Argument(..., help="RUNBOOK.md path, or an https:// / file:// URL the gateway fetches."),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to run in."),
    input: list[str] = typer.Option([], "--input", "-i", help="Template variable key=value; repeatable."),
    file: list[Path] = typer.Option([], "--file", "-f", help="File placed in /app/assets; repeatable."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model (else the collection's or the runbook's)."),
    output_dir: Path = typer.Option(Path("results"), "--output-dir", "-o", help="Where result files are saved."),
) -> None:
    """Run a runbook through the gateway with live progress, then save its result files."""
    from runbooks.run_cli import parse_inputs, run_remote

    try:
        inputs = parse_inputs(input)
        code = run_remote(
            base_url=_base_url(), token=_token(), runbook=runbook, collection=collection,
            inputs=inputs, files=file, model=model, output_dir=output_dir,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"jetty: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    app(prog_name="jetty")


if __name__ == "__main__":
    main()
