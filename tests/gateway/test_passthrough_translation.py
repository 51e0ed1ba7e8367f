"""Providers that need translation (here Anthropic), through litellm, against a scripted upstream.

The upstream speaks Anthropic's Messages API; the client only ever sees OpenAI's format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Reply, UpstreamServer

ANTHROPIC_KEY = "sk-ant-test-" + "7" * 24
MODEL = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Say bonjour"}]


def _message(text: str) -> dict[str, object]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def _sse(event: str, data: dict[str, object]) -> str:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"


def _message_stream(parts: list[str]) -> list[str]:
    start = {**_message(""), "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    frames = [
        _sse("message_start", {"message": start}),
        _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    frames += [_sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}}) for p in parts]
    frames += [
        _sse("content_block_stop", {"index": 0}),
        _sse("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(parts)}}),
        _sse("message_stop", {}),
    ]
    return frames


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    models = tmp_path_factory.mktemp("models") / "models.yaml"
    models.write_text(
        f"""
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/{MODEL}
      api_base: "{upstream.base}"
      api_key: os.environ/JETTY_TEST_ANTHROPIC_KEY
"""
    )
    env = {"JETTY_MODELS_FILE": str(models), "JETTY_TEST_ANTHROPIC_KEY": ANTHROPIC_KEY, "JETTY_UPSTREAM_MAX_RETRIES": "1"}
    process = GatewayProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh(upstream: UpstreamServer) -> None:
    upstream.reset()


@pytest.fixture
def client(gateway: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0, timeout=60)


def test_anthropic_answer_comes_back_as_a_chat_completion(client: OpenAI, upstream: UpstreamServer) -> None:
    upstream.push(Reply.json(_message("Bonjour")))
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=HELLO, max_tokens=64)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    assert raw.headers["x-jetty-trajectory-id"].startswith("trj_")
    sent = upstream.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.json["model"] == MODEL and sent.json["max_tokens"] == 64


def test_anthropic_stream_is_translated_to_openai_chunks(client: OpenAI, upstream: UpstreamServer) -> None:
    upstream.push(Reply.sse(_message_stream(["Bon", "jour"])))
    stream = client.chat.completions.create(model="claude", messages=HELLO, max_tokens=64, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_anthropic_error_keeps_its_status_and_message(client: OpenAI, upstream: UpstreamServer) -> None:
    upstream.push(Reply.error(400, "max_tokens: must be positive", type="invalid_request_error"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude", messages=HELLO, max_tokens=64)
    error = caught.value.response.json()["error"]
    assert error["message"] == "max_tokens: must be positive"
    assert ANTHROPIC_KEY not in caught.value.response.text
    assert len(upstream.requests) == 1


def test_anthropic_overload_is_retried(client: OpenAI, upstream: UpstreamServer) -> None:
    upstream.push(Reply.error(529, "Overloaded", type="overloaded_error"), Reply.json(_message("enfin")))
    completion = client.chat.completions.create(model="claude", messages=HELLO, max_tokens=64)
    assert completion.choices[0].message.content == "enfin"
    assert len(upstream.requests) == 2
