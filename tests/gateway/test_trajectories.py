"""Every passthrough call becomes a trajectory: recorded, redacted, listed, watched, replayed."""

from __future__ import annotations

import concurrent.futures
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.net import wait_for
from tests.support.upstream import Reply, UpstreamServer

UPSTREAM_KEY = "sk-upstream-" + "7" * 24


def _models_file(directory: Path, upstream: UpstreamServer) -> Path:
    path = directory / "models.yaml"
    path.write_text(
        f"""
model_list:
  - model_name: fast
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{upstream.url}", api_key: os.environ/JETTY_TEST_UPSTREAM_KEY}}
  - model_name: other
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream.url}", api_key: os.environ/JETTY_TEST_UPSTREAM_KEY}}
"""
    )
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    upstream: UpstreamServer, database_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    url = request.getfixturevalue("postgres").create_database() if database_kind == "postgres" else None
    env = {
        "JETTY_MODELS_FILE": str(_models_file(tmp_path_factory.mktemp("models"), upstream)),
        "JETTY_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    process = GatewayProcess(database_url=url, env=env).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: UpstreamServer) -> None:
    upstream.reset()


def _sdk(gateway: GatewayProcess, token: str | None = None) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=token or gateway.admin_token, max_retries=0, timeout=30)


def _trajectory(gateway: GatewayProcess, trajectory_id: str, token: str | None = None) -> dict[str, Any]:
    """Poll until the recorder has written the trajectory (recording is asynchronous)."""
    with gateway.client(token or gateway.admin_token) as http:
        return wait_for(
            lambda: (r := http.get(f"/v1/trajectories/{trajectory_id}")).status_code == 200 and r.json(),
            timeout_s=10,
            what=f"trajectory {trajectory_id}",
        )


def _complete(gateway: GatewayProcess, token: str | None = None, **kwargs: Any) -> tuple[str, Any]:
    raw = _sdk(gateway, token).chat.completions.with_raw_response.create(**kwargs)
    return raw.headers["X-Jetty-Trajectory-Id"], raw.parse()


def test_completion_is_recorded_with_request_response_usage_and_timings(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.completion("Hi there", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}))
    trajectory_id, completion = _complete(
        gateway,
        model="fast",
        messages=[{"role": "user", "content": "Say hi"}],
        temperature=0.2,
        metadata={"team": "search", "collection": "demo"},
    )
    assert completion.choices[0].message.content == "Hi there"
    t = _trajectory(gateway, trajectory_id)
    assert t["id"] == trajectory_id and trajectory_id.startswith("trj_")
    assert (t["kind"], t["status"], t["model"], t["collection"]) == ("completion", "succeeded", "fast", "demo")
    assert t["labels"]["team"] == "search"
    assert t["request"]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert t["request"]["temperature"] == 0.2
    assert t["response"]["choices"][0]["message"]["content"] == "Hi there"
    assert t["usage"]["prompt_tokens"] == 11 and t["usage"]["completion_tokens"] == 3
    assert t["cost_usd"] is not None and t["cost_usd"] > 0  # gpt-4o-mini is in litellm's price table
    timings = t["timings"]
    assert timings["created_at"].endswith("Z") and timings["finished_at"].endswith("Z")
    assert timings["latency_ms"] >= 0
    assert t["key_id"] is None  # the admin token


def test_streamed_completion_is_assembled_for_the_record(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.stream(["Hel", "lo", " world"]))
    raw = _sdk(gateway).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers={"X-Jetty-Collection": "streams"}
    )
    trajectory_id = raw.headers["X-Jetty-Trajectory-Id"]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text == "Hello world"
    t = _trajectory(gateway, trajectory_id)
    assert t["status"] == "succeeded" and t["collection"] == "streams"
    assert t["response"]["choices"][0]["message"]["content"] == "Hello world"
    assert t["timings"]["first_token_at"] is not None
    assert t["usage"]["completion_tokens"] > 0  # counted when the upstream sends none


def test_failed_call_is_recorded_as_failed(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.error(400, "context too long", code="context_length_exceeded"))
    with gateway.admin() as http:
        response = http.post("/v1/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    t = _trajectory(gateway, response.headers["X-Jetty-Trajectory-Id"])
    assert t["status"] == "failed"
    assert t["error"]["status"] == 400 and "context too long" in t["error"]["message"]


def test_secrets_are_redacted_before_storage(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    key = gateway.create_key(label="redaction")["key"]
    secret_text = "my openai key is sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX and card 4242 4242 4242 4242, password: hunter2hunter2"
    upstream.push(Reply.completion(f"echo {UPSTREAM_KEY} and {key}"))
    trajectory_id, _ = _complete(gateway, key, model="fast", messages=[{"role": "user", "content": secret_text}])
    assert upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the upstream got the real key
    t = _trajectory(gateway, trajectory_id, key)
    stored = json.dumps(t)
    for secret in ("sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX", "4242 4242 4242 4242", "hunter2hunter2", UPSTREAM_KEY, key):
        assert secret not in stored
    content = t["request"]["messages"][0]["content"]
    assert "[REDACTED:api_key]" in content and "[REDACTED:card_number]" in content
    kinds = {(r["kind"], r["path"]) for r in t["redactions"]}
    assert ("card_number", "request.messages[0].content") in kinds
    assert any(path.startswith("response") for _, path in kinds)


def test_list_filters_and_pagination(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    key = gateway.create_key(label="lister")["key"]
    ids = []
    for model in ("fast", "other", "fast"):
        upstream.push(Reply.completion("ok"))
        ids.append(_complete(gateway, key, model=model, messages=[{"role": "user", "content": "x"}], extra_headers={"X-Jetty-Collection": "listing"})[0])
    for trajectory_id in ids:
        _trajectory(gateway, trajectory_id, key)
    with gateway.client(key) as http:
        everything = http.get("/v1/trajectories", params={"collection": "listing"}).json()
        assert [t["id"] for t in everything["data"]] == list(reversed(ids))
        fast = http.get("/v1/trajectories", params={"collection": "listing", "model": "other"}).json()["data"]
        assert [t["id"] for t in fast] == [ids[1]]
        first = http.get("/v1/trajectories", params={"collection": "listing", "limit": 2}).json()
        assert first["has_more"] is True and len(first["data"]) == 2
        second = http.get("/v1/trajectories", params={"collection": "listing", "limit": 2, "cursor": first["next_cursor"]}).json()
        assert [t["id"] for t in first["data"] + second["data"]] == list(reversed(ids))
        assert second["has_more"] is False
        after = everything["data"][-1]["timings"]["created_at"]
        later = http.get("/v1/trajectories", params={"collection": "listing", "created_after": after}).json()["data"]
        assert ids[0] not in [t["id"] for t in later]
        succeeded = http.get("/v1/trajectories", params={"status": "succeeded", "kind": "completion", "collection": "listing"}).json()
        assert len(succeeded["data"]) == 3
        bad = http.get("/v1/trajectories", params={"status": "finished"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
        bad_time = http.get("/v1/trajectories", params={"created_after": "tuesday"})
        assert bad_time.status_code == 400 and bad_time.json()["error"]["param"] == "created_after"


def test_a_key_sees_only_its_own_trajectories(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    alice = gateway.create_key(label="alice")
    bob = gateway.create_key(label="bob")
    upstream.push(Reply.completion("for alice"))
    alice_trajectory, _ = _complete(gateway, alice["key"], model="fast", messages=[{"role": "user", "content": "x"}])
    _trajectory(gateway, alice_trajectory, alice["key"])
    with gateway.client(bob["key"]) as http:
        assert http.get(f"/v1/trajectories/{alice_trajectory}").status_code == 404
        assert alice_trajectory not in [t["id"] for t in http.get("/v1/trajectories").json()["data"]]
        # A key cannot widen its view with the key filter.
        assert http.get("/v1/trajectories", params={"key": alice["id"]}).json()["data"] == []
    with gateway.admin() as http:
        mine = http.get("/v1/trajectories", params={"key": alice["id"]}).json()["data"]
        assert [t["id"] for t in mine] == [alice_trajectory]


def test_replay_resends_the_recorded_request_optionally_to_another_model(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.completion("first"))
    original, _ = _complete(gateway, model="fast", messages=[{"role": "user", "content": "replay me"}], max_tokens=7)
    _trajectory(gateway, original)
    upstream.push(Reply.completion("second"), Reply.completion("third"))
    with gateway.admin() as http:
        same = http.post(f"/v1/trajectories/{original}/replay")
        other = http.post(f"/v1/trajectories/{original}/replay", json={"model": "other"})
        missing = http.post("/v1/trajectories/trj_nope/replay")
    assert same.status_code == 201 and other.status_code == 201
    assert same.json()["choices"][0]["message"]["content"] == "second"
    sent = [r.json for r in upstream.requests]
    assert sent[0]["messages"] == sent[1]["messages"] == sent[2]["messages"] == [{"role": "user", "content": "replay me"}]
    assert sent[1]["max_tokens"] == 7 and sent[2]["model"] == "gpt-4o"
    replayed = _trajectory(gateway, same.json()["jetty"]["trajectory_id"])
    assert replayed["replay_of"] == original and replayed["model"] == "fast"
    assert _trajectory(gateway, other.json()["jetty"]["trajectory_id"])["model"] == "other"
    assert missing.status_code == 404


def test_events_of_a_finished_call_end_at_once(gateway: GatewayProcess, upstream: UpstreamServer) -> None:
    upstream.push(Reply.completion("done"))
    trajectory_id, _ = _complete(gateway, model="fast", messages=[{"role": "user", "content": "x"}])
    _trajectory(gateway, trajectory_id)
    with gateway.admin() as http, http.stream("GET", f"/v1/trajectories/{trajectory_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    assert "event: end" in body and '"status":"succeeded"' in body


def test_graceful_shutdown_flushes_every_queued_trajectory(
    start_gateway, upstream: UpstreamServer, tmp_path: Path, database_kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres").create_database() if database_kind == "postgres" else None
    env = {"JETTY_MODELS_FILE": str(_models_file(tmp_path, upstream)), "JETTY_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    data_dir = tmp_path / "data"
    first = start_gateway(url, env=env, data_dir=data_dir)

    def call(i: int) -> str:
        response = httpx.post(
            f"{first.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {first.admin_token}"},
            json={"model": "fast", "messages": [{"role": "user", "content": f"n{i}"}]},
            timeout=30,
        )
        assert response.status_code == 200
        return response.headers["X-Jetty-Trajectory-Id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(call, range(60)))
    first.stop(signal.SIGTERM)  # right away: some trajectories are still queued
    assert "trajectory flush timed out" not in first.logs()

    second = GatewayProcess(database_url=url, env={**env, "JETTY_ADMIN_TOKEN": first.admin_token}, data_dir=data_dir)
    second.admin_token = first.admin_token
    second.start()
    try:
        with second.admin() as http:
            for trajectory_id in ids:
                assert http.get(f"/v1/trajectories/{trajectory_id}").status_code == 200, trajectory_id
    finally:
        second.stop()
