"""What a passthrough call leaves behind: one trajectory per call, streams assembled, failures kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.net import wait_for
from tests.support.upstream import Reply, UpstreamServer

HELLO = [{"role": "user", "content": "Say hello"}]
UPSTREAM_KEY = "sk-upstream-" + "5" * 24


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    models = tmp_path_factory.mktemp("models") / "models.yaml"
    models.write_text(
        "model_list:\n"
        f"  - model_name: fast\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{upstream.url}', api_key: {UPSTREAM_KEY}}}\n"
    )
    process = GatewayProcess(env={"JETTY_MODELS_FILE": str(models), "JETTY_UPSTREAM_MAX_RETRIES": "0"}).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh(upstream: UpstreamServer) -> None:
    upstream.reset()


def _trajectory(gateway: GatewayProcess, trajectory_id: str, status: str | None = None) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        with gateway.admin() as http:
            response = http.get(f"/v1/trajectories/{trajectory_id}")
        if response.status_code != 200:
            return None
        body = response.json()
        return body if status is None or body["status"] == status else None

    return wait_for(read, timeout_s=10, what=f"trajectory {trajectory_id}")


def test_streamed_call_is_recorded_as_the_assembled_completion(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["Checking ", "the weather"], tool_calls=[("get_weather", {"city": "Oslo"})]))
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=HELLO, stream=True, stream_options={"include_usage": True}, metadata={"team": "a"}
    )
    list(raw.parse())
    trajectory = _trajectory(gateway, raw.headers["x-jetty-trajectory-id"], "succeeded")
    message = trajectory["response"]["choices"][0]["message"]
    assert message["content"] == "Checking the weather"
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert trajectory["response"]["choices"][0]["finish_reason"] == "tool_calls"
    assert trajectory["usage"]["prompt_tokens"] == 11
    assert trajectory["cost_usd"] and trajectory["cost_usd"] > 0
    assert trajectory["labels"] == {"team": "a"}
    assert trajectory["timings"]["first_token_at"] is not None
    assert trajectory["upstream"]["attempts"] == 1 and trajectory["upstream"]["status"] == 200
    assert UPSTREAM_KEY not in json.dumps(trajectory)


def test_failed_and_unknown_model_calls_are_recorded(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0)
    upstream.push(Reply.error(500, "boom"))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    failed = _trajectory(gateway, caught.value.response.headers["x-jetty-trajectory-id"], "failed")
    assert failed["error"]["status"] == 500 and "boom" in failed["error"]["message"]
    with pytest.raises(openai.NotFoundError) as caught_404:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    unknown = _trajectory(gateway, caught_404.value.response.headers["x-jetty-trajectory-id"], "failed")
    assert unknown["error"]["code"] == "model_not_found" and unknown["model"] == "no-such-model"


def test_client_disconnect_is_recorded_as_cancelled(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["partial "], hang_after=True))
    body = {"model": "fast", "messages": HELLO, "stream": True}
    with gateway.admin() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        trajectory_id = response.headers["x-jetty-trajectory-id"]
        next(line for line in response.iter_lines() if "partial" in line)
    trajectory = _trajectory(gateway, trajectory_id, "cancelled")
    assert trajectory["response"]["choices"][0]["message"]["content"] == "partial "


def test_no_body_no_trajectory_but_bad_request_is_plain_400(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.admin_token}"}) as http:
        response = http.post("/v1/chat/completions", content=b"nope")
    assert response.status_code == 400
    assert "x-jetty-trajectory-id" not in response.headers
