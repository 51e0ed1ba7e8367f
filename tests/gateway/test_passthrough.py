"""Passthrough over HTTP: the official OpenAI SDK against the gateway, a scripted upstream behind it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.net import free_port, wait_for
from tests.support.upstream import Reply, UpstreamServer

UPSTREAM_KEY = "sk-upstream-" + "9" * 24
MAX_BODY = 64 * 1024
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def primary() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def secondary() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(primary: UpstreamServer, secondary: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    models = tmp_path_factory.mktemp("models") / "models.yaml"
    models.write_text(
        f"""
model_list:
  - model_name: fast
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{primary.url}", api_key: os.environ/JETTY_TEST_UPSTREAM_KEY}}
  - model_name: balanced
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{primary.url}"}}
  - model_name: balanced
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{secondary.url}"}}
  - model_name: fallback
    litellm_params: {{model: openai/gpt-4o, api_base: "{dead}"}}
  - model_name: fallback
    litellm_params: {{model: openai/gpt-4o, api_base: "{secondary.url}"}}
  - model_name: dead
    litellm_params: {{model: openai/gpt-4o, api_base: "{dead}"}}
  - model_name: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
    litellm_params: {{model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, api_base: "{secondary.url}"}}
"""
    )
    process = GatewayProcess(
        env={
            "JETTY_MODELS_FILE": str(models),
            "JETTY_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
            "JETTY_UPSTREAM_TIMEOUT_S": "2",
            "JETTY_UPSTREAM_CONNECT_TIMEOUT_S": "2",
            "JETTY_UPSTREAM_MAX_RETRIES": "2",
            "JETTY_MAX_BODY_BYTES": str(MAX_BODY),
        }
    ).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_upstreams(primary: UpstreamServer, secondary: UpstreamServer) -> None:
    primary.reset()
    secondary.reset()


@pytest.fixture
def client(gateway: GatewayProcess) -> OpenAI:
    # max_retries=0: what the client sees is the gateway's doing, not the SDK's retries.
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0, timeout=30)


def _post(gateway: GatewayProcess, body: object, token: str | None = None, **kwargs: object) -> httpx.Response:
    with gateway.client(token or gateway.admin_token) as http:
        return http.post("/v1/chat/completions", json=body, **kwargs)  # type: ignore[arg-type]


# --- the happy paths -----------------------------------------------------------------


def test_plain_completion_is_relayed_with_deployment_model_and_key(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.completion("Hi there"))
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hi there"
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert raw.headers["x-jetty-trajectory-id"].startswith("trj_")
    assert raw.headers["x-request-id"].startswith("req_")  # upstream headers worth keeping are kept
    sent = primary.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {"model": "gpt-4o-mini", "messages": HELLO}
    # The upstream sees the deployment's key (from os.environ/...), never the caller's token.
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_unknown_fields_and_openai_parameters_pass_through_untouched(client: OpenAI, primary: UpstreamServer) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    client.chat.completions.create(
        model="fast",
        messages=HELLO,
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        stop=["\n\n"],
        logprobs=True,
        top_logprobs=2,
        temperature=0.25,
        extra_body={"vendor_knob": {"depth": 3, "ratio": 0.5}, "metadata": {"team": "a"}},
    )
    sent = primary.requests[0].json
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["n"], sent["stop"], sent["logprobs"], sent["top_logprobs"], sent["temperature"]) == (2, ["\n\n"], True, 2, 0.25)
    assert sent["vendor_knob"] == {"depth": 3, "ratio": 0.5}
    assert sent["metadata"] == {"team": "a"}


def test_model_name_equal_to_the_deployment_is_sent_byte_for_byte(gateway: GatewayProcess, secondary: UpstreamServer) -> None:
    raw = b'{"model": "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",  "messages": [{"role": "user", "content": "x"}], "x_odd": 1.50}'
    with gateway.admin() as http:
        response = http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    # `hosted_vllm/` is stripped for the upstream, so the body is re-encoded with the bare name.
    assert secondary.requests[0].json["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert secondary.requests[0].json["x_odd"] == 1.5


def test_tool_calls_come_back_to_the_sdk(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]))
    completion = client.chat.completions.create(model="fast", messages=HELLO)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_stream_chunks_arrive_as_the_upstream_sends_them(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.stream(["one ", "two ", "three"], delay_s=0.3))
    arrivals: list[tuple[float, str]] = []
    stream = client.chat.completions.create(model="fast", messages=HELLO, stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
        usage = chunk.usage or usage
    assert "".join(text for _, text in arrivals) == "one two three"
    # Relayed, not buffered: the first words were in hand well before the last.
    assert arrivals[-1][0] - arrivals[0][0] > 0.4
    assert usage is not None and usage.prompt_tokens == 11
    assert primary.requests[0].json["stream_options"] == {"include_usage": True}


def test_stream_ends_with_done_and_carries_tool_call_deltas(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    primary.push(Reply.stream(["Checking"], tool_calls=[("get_weather", {"city": "Oslo"})]))
    body = {"model": "fast", "messages": HELLO, "stream": True}
    with gateway.admin() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-jetty-trajectory-id"].startswith("trj_")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    arguments = "".join(
        call["function"].get("arguments") or ""
        for event in events
        for choice in event["choices"]
        for call in choice["delta"].get("tool_calls") or []
    )
    assert json.loads(arguments) == {"city": "Oslo"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_async_client_plain_and_streamed(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    async def run() -> tuple[str | None, str]:
        async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0) as client:
            plain = await client.chat.completions.create(model="fast", messages=HELLO)
            stream = await client.chat.completions.create(model="fast", messages=HELLO, stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return plain.choices[0].message.content, "".join(parts)

    primary.push(Reply.completion("async hello"), Reply.stream(["as", "ync"]))
    assert asyncio.run(run()) == ("async hello", "async")


def test_deployments_under_one_name_share_the_load(client: OpenAI, primary: UpstreamServer, secondary: UpstreamServer) -> None:
    for _ in range(4):
        client.chat.completions.create(model="balanced", messages=HELLO)
    assert len(primary.requests) == 2 and len(secondary.requests) == 2


def test_models_lists_routable_names_within_the_key_scope(gateway: GatewayProcess, client: OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data][:4] == ["fast", "balanced", "fallback", "dead"]
    assert all(m.object == "model" and m.created > 0 and m.owned_by for m in models.data)
    key = gateway.create_key(label="scoped", scopes={"models": ["fa*"]})
    scoped = OpenAI(base_url=f"{gateway.url}/v1", api_key=key["key"], max_retries=0)
    assert sorted(m.id for m in scoped.models.list().data) == ["fallback", "fast"]


# --- upstream failures ---------------------------------------------------------------


def test_429_is_retried_then_succeeds(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.error(429, "slow down", code="rate_limit_exceeded"), Reply.completion("second try"))
    completion = client.chat.completions.create(model="fast", messages=HELLO)
    assert completion.choices[0].message.content == "second try"
    assert len(primary.requests) == 2


def test_upstream_429_after_retries_reaches_the_client_in_openai_shape(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(*[Reply.error(429, "quota exhausted", code="insufficient_quota", headers={"Retry-After": "7"})] * 3)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    error = caught.value.response.json()["error"]
    assert error["message"] == "quota exhausted" and error["code"] == "insufficient_quota"
    assert len(primary.requests) == 3  # 1 + JETTY_UPSTREAM_MAX_RETRIES


def test_upstream_500_keeps_its_status(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(*[Reply.error(500, "model crashed")] * 3)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    assert caught.value.status_code == 500
    assert "model crashed" in caught.value.message
    assert caught.value.response.headers["x-jetty-trajectory-id"].startswith("trj_")


def test_upstream_400_is_not_retried(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.error(400, "bad temperature", code="invalid_value", type="invalid_request_error"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    assert caught.value.response.json()["error"]["message"] == "bad temperature"
    assert len(primary.requests) == 1


def test_dropped_connection_is_retried(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.close(), Reply.completion("after drop"))
    assert client.chat.completions.create(model="fast", messages=HELLO).choices[0].message.content == "after drop"


def test_unreachable_deployment_falls_back_to_the_next(client: OpenAI, secondary: UpstreamServer) -> None:
    for _ in range(2):  # whichever deployment comes first, the dead one is skipped
        completion = client.chat.completions.create(model="fallback", messages=HELLO)
        assert completion.choices[0].message.content == "Hello from upstream"
    assert len(secondary.requests) == 2


def test_unreachable_upstream_is_502_with_a_clear_message(client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="dead", messages=HELLO)
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert "Cannot reach the upstream of model 'dead' at 127.0.0.1:" in error["message"]


def test_upstream_timeout_is_504_and_the_upstream_request_is_closed(client: OpenAI, primary: UpstreamServer) -> None:
    primary.push(Reply.hang())
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["code"] == "upstream_timeout"
    assert len(primary.requests) == 1  # a timeout is not retried: the wait would double
    wait_for(primary.requests[0].closed_early.is_set, timeout_s=5, what="upstream to see the request closed")


# --- the client going away -----------------------------------------------------------


def test_client_disconnect_mid_stream_closes_the_upstream_request(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    primary.push(Reply.stream(["first"], hang_after=True))
    body = {"model": "fast", "messages": HELLO, "stream": True}
    with gateway.admin() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    # Well inside the gateway's own 2 s read timeout: the close is the client's doing.
    wait_for(primary.requests[0].closed_early.is_set, timeout_s=1, what="upstream to see the stream closed")


def test_client_giving_up_on_a_slow_answer_closes_the_upstream_request(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    primary.push(Reply.hang())
    with gateway.admin(timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "fast", "messages": HELLO})
    wait_for(primary.requests[0].closed_early.is_set, timeout_s=1, what="upstream to see the request closed")


# --- the caller's mistakes -----------------------------------------------------------


def test_unknown_model_is_404_model_not_found(client: OpenAI) -> None:
    for name in ("no-such-model", "nosuchprovider/model-x"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=name, messages=HELLO)
        error = caught.value.response.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_found", "model")


def test_bad_key_is_401(gateway: GatewayProcess) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="jty_not_a_real_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fast", messages=HELLO)


def test_key_scopes_limit_models_and_collections(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    key = gateway.create_key(label="team-a", scopes={"models": ["fast"], "collections": ["team-a"]})
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=key["key"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="balanced", messages=HELLO, extra_headers={"X-Jetty-Collection": "team-a"})
    assert caught.value.response.json()["error"]["code"] == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO, extra_headers={"X-Jetty-Collection": "team-b"})
    assert caught.value.response.json()["error"]["code"] == "collection_not_allowed"
    ok = client.chat.completions.create(model="fast", messages=HELLO, metadata={"collection": "team-a"})
    assert ok.choices[0].message.content
    assert len(primary.requests) == 1


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_body", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "invalid_body", "model"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "invalid_body", "model"),
        (b'{"model": "fast"}', "invalid_body", "messages"),
        (b'{"model": "fast", "messages": "hello"}', "invalid_body", "messages"),
        (b'{"model": "fast", "messages": ["hello"]}', "invalid_body", "messages[0].role"),
        (b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "invalid_body", "stream"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(gateway: GatewayProcess, body: bytes, code: str, param: str | None) -> None:
    with gateway.admin() as http:
        response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    if param:
        assert param.split(".")[0].split("[")[0] in error["message"]


def test_oversized_body_is_413(gateway: GatewayProcess, primary: UpstreamServer) -> None:
    big = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
    response = _post(gateway, {"model": "fast", "messages": big})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert primary.requests == []


def test_only_post_is_allowed(gateway: GatewayProcess) -> None:
    with gateway.admin() as http:
        response = http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_models_file_path_is_not_needed_for_provider_names_without_credentials(tmp_path: Path, start_gateway) -> None:  # noqa: ANN001
    """With no models file, `openai/...` is routable only once OPENAI_API_KEY is set: say so."""
    gateway = start_gateway(env={"OPENAI_API_KEY": ""})
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO)
    assert "OPENAI_API_KEY" in caught.value.response.json()["error"]["message"]
    assert client.models.list().data == []
