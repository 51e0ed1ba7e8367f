"""Docker backend: one container per sandbox, driven through a long-lived agent.

Containers are labelled `jetty.sandbox=1`, `jetty.scope=<deployment>` (a hash of
the database URL: the reaper only ever sees its own deployment's containers, since
other gateways with other databases may share the engine), `jetty.instance=<service
instance>` and,
when created for a run, `jetty.run=<run id>` and `jetty.expires=<epoch>`. Labels
cannot change after creation, so a pooled container (`jetty.pool=1`) records the run
it is later given in its *name*: `jetty-<id>-run-<run id>` (a pooled one is
`jetty-<id>-pool`). The reaper reads both.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import time
from typing import Any

import anyio

from sandboxes._agent_sandbox import AgentSandbox
from sandboxes._channel import AGENT_SOURCE, AgentChannel
from sandboxes.errors import ImageMissing, SandboxError, SandboxUnavailable
from sandboxes.models import SandboxSpec
from sandboxes.protocol import Sandbox, SandboxRecord

logger = logging.getLogger(__name__)

LABEL = "jetty.sandbox"
SANDBOX_USER = "1000:1000"
API_TIMEOUT_S = 30.0
HELLO_TIMEOUT_S = 30.0
_NAME_RE = re.compile(r"^/?jetty-([0-9a-f]{12})-(?:run-(.+)|pool)$")
_RUN_ID_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,100}$")


def container_name(sandbox_id: str, run_id: str | None) -> str:
    return f"jetty-{sandbox_id}-run-{run_id}" if run_id else f"jetty-{sandbox_id}-pool"


def is_nameable(run_id: str) -> bool:
    """Docker names allow [a-zA-Z0-9_.-]; other run ids cannot ride in the name."""
    return bool(_RUN_ID_RE.match(run_id))


class DockerSandbox(AgentSandbox):
    backend = "docker"

    def __init__(self, *, container_id: str, api: Any, writer: asyncio.StreamWriter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.container_id = container_id
        self._api = api
        self._writer = writer

    async def _shutdown(self) -> None:
        self._writer.close()
        await anyio.to_thread.run_sync(_remove_container, self._api, self.container_id)


def _remove_container(api: Any, container_id: str) -> None:
    import docker.errors

    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # 409: auto-remove already in progress, which is what we want anyway.
        if exc.status_code != 409:
            raise SandboxError(f"could not remove container {container_id[:12]}: {exc.explanation}") from exc


class DockerBackend:
    """Creates, lists and removes sandbox containers on one Docker engine."""

    name = "docker"

    def __init__(self, *, default_image: str, instance: str, scope: str) -> None:
        self.default_image = default_image
        self.instance = instance
        # Gateways with different databases may share one engine; each reaps only its own.
        self.scope = scope
        self._api: Any = None
        self._images_seen: set[str] = set()

    def _client(self) -> Any:
        if self._api is None:
            import docker

            try:
                self._api = docker.from_env(timeout=int(API_TIMEOUT_S)).api
            except docker.errors.DockerException as exc:
                raise SandboxUnavailable(f"Docker engine unreachable: {exc}") from exc
        return self._api

    async def check(self) -> None:
        """Raise SandboxUnavailable unless the engine answers a ping."""

        def ping() -> None:
            import docker.errors
            import requests.exceptions

            try:
                self._client().ping()
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
                self._api = None
                raise SandboxUnavailable(f"Docker engine unreachable: {exc}") from exc

        await anyio.to_thread.run_sync(ping)

    async def has_image(self, image: str) -> bool:
        """True when the engine has `image` locally (never pulls)."""

        def inspect() -> bool:
            try:
                self._ensure_image(image)
                return True
            except ImageMissing:
                return False

        return await anyio.to_thread.run_sync(inspect)

    def _ensure_image(self, image: str) -> None:
        import docker.errors

        if image in self._images_seen:
            return
        try:
            self._client().inspect_image(image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(image) from None
        self._images_seen.add(image)

    def _start_container(self, spec: SandboxSpec, sandbox_id: str, run_id: str | None) -> tuple[str, socket.socket]:
        """Create, attach and start; attaching before start means no agent output is missed."""
        import docker.errors

        api = self._client()
        image = spec.image or self.default_image
        self._ensure_image(image)
        labels = {LABEL: "1", "jetty.scope": self.scope, "jetty.instance": self.instance, "jetty.sandbox_id": sandbox_id}
        if run_id is not None:
            labels["jetty.run"] = run_id
            labels["jetty.expires"] = f"{time.time() + spec.timeout_s:.0f}"
        else:
            labels["jetty.pool"] = "1"
        memory = f"{spec.memory_mb}m"
        host_config = api.create_host_config(
            network_mode=spec.network,
            mem_limit=memory,
            memswap_limit=memory,  # no swap: a hog must hit the OOM killer, not the disk
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids_limit,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,  # tini reaps orphans left by commands the agent killed
            auto_remove=True,
        )
        name = container_name(sandbox_id, run_id if run_id and is_nameable(run_id) else None)
        try:
            created = api.create_container(
                image,
                entrypoint=["python3"],
                command=["-u", "-c", AGENT_SOURCE, spec.workdir],
                user=SANDBOX_USER,
                working_dir=spec.workdir,
                environment={"HOME": spec.workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
                labels=labels,
                name=name,
                # Not detached + stdin_open gives StdinOnce: the agent sees EOF when we
                # disconnect, so a gateway crash ends the sandbox (auto_remove deletes it).
                stdin_open=True,
                host_config=host_config,
            )
        except docker.errors.NotFound as exc:
            raise SandboxError(f"cannot create sandbox: {exc.explanation}") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot create sandbox: {exc.explanation}") from exc
        cid = created["Id"]
        try:
            attached = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            raw = getattr(attached, "_sock", attached)
            sock = raw.dup()  # our own fd, so the SDK's response objects can be dropped safely
            attached.close()
            api.start(cid)
        except Exception:
            _remove_container(api, cid)
            raise
        return cid, sock

    async def create(self, spec: SandboxSpec, *, run_id: str | None) -> Sandbox:
        """Start a container with the agent in it; run_id None makes a pool container."""
        sandbox_id = secrets.token_hex(6)
        cid, sock = await anyio.to_thread.run_sync(self._start_container, spec, sandbox_id, run_id)
        try:
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        except Exception:
            sock.close()
            await anyio.to_thread.run_sync(_remove_container, self._api, cid)
            raise

        async def read_stdout() -> bytes:
            # Attach streams are multiplexed: 8-byte header (stream, 0, 0, 0, size32be).
            while True:
                header = await reader.readexactly(8)
                payload = await reader.readexactly(int.from_bytes(header[4:8], "big"))
                if header[0] == 1:
                    return payload
                logger.warning("sandbox agent stderr sandbox=%s text=%s", sandbox_id, payload[:500])

        async def read_or_eof() -> bytes:
            try:
                return await read_stdout()
            except asyncio.IncompleteReadError:
                return b""

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        channel = AgentChannel(read_or_eof, write, name=sandbox_id)
        sandbox = DockerSandbox(
            container_id=cid,
            api=self._api,
            writer=writer,
            sandbox_id=sandbox_id,
            spec=spec,
            channel=channel,
            run_id=run_id,
            isolated=True,
            workspace=spec.workdir,
        )
        try:
            hello = await channel.start(HELLO_TIMEOUT_S)
        except SandboxError as exc:
            await sandbox.destroy()
            raise SandboxError(
                f"sandbox agent failed to start in image {spec.image or self.default_image!r} "
                f"(it needs python3 on PATH): {exc}"
            ) from exc
        logger.info("sandbox created backend=docker sandbox=%s run_id=%s uid=%s", sandbox_id, run_id, hello.get("uid"))
        return sandbox

    async def assign(self, sandbox: Sandbox, run_id: str) -> None:
        """Rename the pooled container so the reaper can tell which run owns it."""
        assert isinstance(sandbox, DockerSandbox)
        if not is_nameable(run_id):
            raise SandboxError(f"run id {run_id!r} cannot be recorded on a pooled container")
        await anyio.to_thread.run_sync(self._client().rename, sandbox.container_id, container_name(sandbox.id, run_id))

    async def list_records(self) -> list[SandboxRecord]:
        def listing() -> list[dict[str, Any]]:
            return self._client().containers(all=True, filters={"label": [f"{LABEL}=1", f"jetty.scope={self.scope}"]})

        records = []
        for row in await anyio.to_thread.run_sync(listing):
            labels = row.get("Labels") or {}
            run_id = labels.get("jetty.run")
            if not run_id:
                for name in row.get("Names") or []:
                    match = _NAME_RE.match(name)
                    if match and match.group(2):
                        run_id = match.group(2)
            expires = labels.get("jetty.expires")
            records.append(
                SandboxRecord(
                    id=row["Id"],
                    run_id=run_id,
                    instance=labels.get("jetty.instance"),
                    expires_at=float(expires) if expires else None,
                    # A container still being created by a live service is not dead yet.
                    running=row.get("State") == "running"
                    or (row.get("State") == "created" and time.time() - float(row.get("Created", 0)) < 300),
                )
            )
        return records

    async def remove(self, record_id: str) -> None:
        await anyio.to_thread.run_sync(_remove_container, self._client(), record_id)

    async def close(self) -> None:
        if self._api is not None:
            await anyio.to_thread.run_sync(self._api.close)
            self._api = None
