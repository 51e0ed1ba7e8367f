"""Fixtures for runbook runs: a scripted model upstream and gateways on real sandboxes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runbooks.scripted import ScriptedModel
from tests.support.gateway import GatewayProcess
from tests.support.upstream import UpstreamServer


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def model(upstream: UpstreamServer) -> ScriptedModel:
    return ScriptedModel(upstream)


def models_file(directory: Path, upstream: UpstreamServer) -> Path:
    path = directory / "models.yaml"
    path.write_text(
        f"""
model_list:
  - model_name: scripted
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{upstream.url}", api_key: sk-test-upstream-key}}
  - model_name: scripted-b
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream.url}", api_key: sk-test-upstream-key}}
"""
    )
    return path


def run_gateway_env(
    tmp: Path, upstream: UpstreamServer, backend: str, **extra: str
) -> dict[str, str]:
    return {
        "JETTY_MODELS_FILE": str(models_file(tmp, upstream)),
        "JETTY_SANDBOX_BACKEND": backend,
        "JETTY_SANDBOX_POOL_SIZE": "0",
        "JETTY_SYNC_WAIT_S": "60",
        **extra,
    }


@pytest.fixture(scope="module")
def local_gateway(
    upstream: UpstreamServer, model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway on SQLite running sandboxes with the local (bubblewrap) backend."""
    tmp = tmp_path_factory.mktemp("local-gw")
    process = GatewayProcess(env=run_gateway_env(tmp, upstream, "local")).start()
    yield process
    process.stop()
