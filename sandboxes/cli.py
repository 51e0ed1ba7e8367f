"""`jetty sandbox run|build-image` and `jetty doctor` (mounted by gateway/cli.py).

Heavy imports (docker SDK, backends) stay inside the commands so `jetty --help` is fast.
"""

from __future__ import annotations

import asyncio
import sys

import typer

sandbox_app = typer.Typer(help="Run commands in sandboxes and build the sandbox image.", no_args_is_help=True)


def _settings():  # type: ignore[no-untyped-def]
    from gateway.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@sandbox_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    cmd: list[str] = typer.Argument(..., help="The command, after `--`."),
    backend: str = typer.Option(None, help="auto, docker or local (default: JETTY_SANDBOX_BACKEND)."),
    image: str = typer.Option(None, help="Image for the docker backend (default: JETTY_SANDBOX_IMAGE)."),
    network: str = typer.Option("none", help="`none`, or a Docker network name to allow egress."),
    memory: int = typer.Option(1024, help="Memory limit in MiB."),
    timeout: float = typer.Option(600.0, help="Wall-clock limit for the command, in seconds."),
) -> None:
    """Run one command in a fresh sandbox, print its output; exit with the command's status."""
    from sandboxes import SandboxError, SandboxSpec, open_backend

    settings = _settings()

    async def go() -> int:
        chosen = await open_backend(settings, backend=backend)
        spec = SandboxSpec(image=image, network=network, memory_mb=memory, exec_timeout_s=timeout, timeout_s=timeout + 60)
        sandbox = await chosen.create(spec, run_id=f"cli-{__import__('secrets').token_hex(4)}")
        try:
            result = None
            async for chunk in sandbox.exec_stream(cmd if len(cmd) > 1 else cmd[0]):
                if chunk.stream == "stdout":
                    sys.stdout.buffer.write(chunk.data)
                    sys.stdout.flush()
                elif chunk.stream == "stderr":
                    sys.stderr.buffer.write(chunk.data)
                    sys.stderr.flush()
                else:
                    result = chunk.result
        finally:
            await sandbox.destroy()
            await chosen.close()
        assert result is not None
        notes = [f"exit code {result.exit_code}", f"{result.duration_s:.2f}s", f"backend {chosen.name}"]
        notes += [flag for flag in ("timed_out", "oom_killed", "truncated") if getattr(result, flag)]
        if result.warning:
            notes.append(result.warning)
        typer.echo(f"[sandbox] {', '.join(notes)}", err=True)
        return result.exit_code

    try:
        code = asyncio.run(go())
    except SandboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(125) from None
    raise typer.Exit(code)


@sandbox_app.command("build-image")
def build_image_command(force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists.")) -> None:
    """Build the default sandbox image locally with debootstrap (no registry needed)."""
    import logging

    from sandboxes import SandboxError
    from sandboxes._image import build_image

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = _settings()
    try:
        built = build_image(settings.sandbox_image, force=force)
    except SandboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{settings.sandbox_image}: {'built' if built else 'already present (use --force to rebuild)'}")


def doctor() -> None:
    """Report which sandbox backends work on this machine, and why not."""
    from sandboxes import SandboxError, make_backend, open_backend
    from sandboxes._image import image_exists

    settings = _settings()

    async def probe(kind: str) -> str | None:
        try:
            chosen = make_backend(kind, settings, "doctor")
            await chosen.check()
            await chosen.close()
            return None
        except SandboxError as exc:
            return str(exc)

    async def go() -> bool:
        healthy = True
        docker_error = await probe("docker")
        if docker_error is None:
            try:
                present = image_exists(settings.sandbox_image)
            except (OSError, TimeoutError):
                present = False
            image_note = "present" if present else "MISSING, run: jetty sandbox build-image"
            typer.echo(f"docker: ok (image {settings.sandbox_image}: {image_note})")
        else:
            typer.echo(f"docker: unavailable: {docker_error}")
        local_error = await probe("local")
        if local_error is None:
            from sandboxes._cgroups import SandboxCgroups, detect
            from sandboxes._local import probe_bwrap

            unisolated = probe_bwrap()
            typer.echo("local: ok (bubblewrap)" if unisolated is None else f"local: ok but UNISOLATED ({unisolated})")
            cgroups = detect()
            if isinstance(cgroups, SandboxCgroups):
                typer.echo(f"local limits: {cgroups.description}")
            else:
                typer.echo(f"local limits: WEAK, rlimits only, no OOM kill or CPU limit: {cgroups}")
        else:
            typer.echo(f"local: unavailable: {local_error}")
        try:
            chosen = await open_backend(settings)
            typer.echo(f"selected ({settings.sandbox_backend}): {chosen.name}")
            await chosen.close()
        except SandboxError as exc:
            typer.echo(f"selected ({settings.sandbox_backend}): none: {exc}")
            healthy = False
        return healthy

    if not asyncio.run(go()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app = typer.Typer(no_args_is_help=True)
    app.add_typer(sandbox_app, name="sandbox")
    app.command("doctor")(doctor)
    app()
