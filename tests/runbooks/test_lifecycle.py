"""Run lifecycle on the local backend: modes, limits, cancel, idempotency, replay, restart, errors."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx
import openai

from tests.runbooks.conftest import run_gateway_env
from tests.runbooks.scripted import ScriptedModel, bash, finish, tool_turn, write
from tests.runbooks.servers import FileServer
from tests.support.gateway import GatewayProcess
from tests.support.net import wait_for
from tests.support.upstream import UpstreamServer


def runbook(marker: str, front: str = "") -> str:
    return f"---\nversion: '1.0.0'\n{front}---\n# Task {marker}\nDo the thing.\n"


def jetty(marker: str, front: str = "", **extra: Any) -> dict[str, Any]:
    return {"collection": "ops", "runbook": runbook(marker, front), **extra}


def chat(
    gateway: GatewayProcess,
    block: dict[str, Any],
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    with gateway.admin(timeout=120) as admin:
        return admin.post(
            "/v1/chat/completions",
            json={"model": "scripted", "messages": [], "jetty": block, **body},
            headers=headers or {},
        )


def wait_status(
    gateway: GatewayProcess, run_id: str, statuses: tuple[str, ...], timeout_s: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        with gateway.admin() as admin:
            body = admin.get(f"/v1/trajectories/{run_id}").json()
        return body if body["status"] in statuses else None

    return wait_for(check, timeout_s=timeout_s, interval_s=0.1, what=f"{run_id} to be {statuses}")


def test_invalid_result_is_corrected_after_feedback(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    outputs = (
        "outputs:\n  type: object\n  properties: {count: {type: integer}}\n  required: [count]\n"
    )
    marker = model.script(
        "outputs", tool_turn(finish({"count": "three"})), tool_turn(finish({"count": 3}))
    )
    response = chat(local_gateway, jetty(marker, outputs))
    body = response.json()
    assert response.status_code == 200 and body["jetty"]["status"] == "succeeded", body
    assert body["jetty"]["outputs"] == {"count": 3}
    assert json.loads(body["choices"][0]["message"]["content"]) == {"count": 3}
    second = model.requests_for("outputs")[1]["messages"][-1]
    assert (
        second["role"] == "tool"
        and "result rejected" in second["content"]
        and "count" in second["content"]
    )


def test_step_limit_and_time_limit_end_the_run_with_the_reason(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    looping = model.script("loop", tool_turn(bash("echo again")))
    body = chat(local_gateway, jetty(looping, max_steps=3)).json()
    assert body["jetty"]["status"] == "failed" and body["jetty"]["error"]["code"] == "max_steps"
    slow = model.script("slow", tool_turn(bash("sleep 30")))
    started = time.monotonic()
    body = chat(local_gateway, jetty(slow, timeout_s=2)).json()
    assert body["jetty"]["status"] == "timed_out" and body["jetty"]["error"]["code"] == "timeout"
    assert time.monotonic() - started < 20


def test_async_run_answers_202_and_cancel_stops_it(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    marker = model.script("cancel", tool_turn(bash("sleep 120")))
    response = chat(local_gateway, jetty(marker, **{"async": True}))
    assert response.status_code == 202
    run_id = response.json()["trajectory_id"]
    assert response.json()["poll_url"] == f"/v1/trajectories/{run_id}"
    wait_for(
        lambda: any(
            s["type"] == "tool_call"
            for s in local_gateway.admin().get(f"/v1/trajectories/{run_id}").json()["steps"]
        ),
        timeout_s=30,
    )
    with local_gateway.admin() as admin:
        cancelled = admin.post(f"/v1/trajectories/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", (
            cancelled.text
        )
        again = admin.post(f"/v1/trajectories/{run_id}/cancel")
        assert again.status_code == 409
    steps = local_gateway.admin().get(f"/v1/trajectories/{run_id}").json()["steps"]
    assert any(s["type"] == "lifecycle" and s["data"].get("event") == "cancelled" for s in steps)


def test_sync_wait_turns_into_202_and_the_run_goes_on(
    upstream: UpstreamServer, model: ScriptedModel, start_gateway: Any, tmp_path: Any
) -> None:
    gateway = start_gateway(env=run_gateway_env(tmp_path, upstream, "local", JETTY_SYNC_WAIT_S="1"))
    marker = model.script("syncwait", tool_turn(bash("sleep 2")), tool_turn(finish({"ok": True})))
    response = chat(gateway, jetty(marker))
    assert response.status_code == 202 and response.json()["status"] in ("queued", "running")
    done = wait_status(gateway, response.json()["trajectory_id"], ("succeeded",))
    assert done["outputs"] == {"ok": True}


def test_stream_sends_a_chunk_per_step_then_the_result(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    marker = model.script("stream", tool_turn(bash("echo hi")), tool_turn(finish({"said": "hi"})))
    client = openai.OpenAI(
        api_key=local_gateway.admin_token, base_url=f"{local_gateway.url}/v1", max_retries=0
    )
    chunks = list(
        client.chat.completions.create(
            model="scripted", messages=[], stream=True, extra_body={"jetty": jetty(marker)}
        )
    )
    events = [c.model_extra.get("jetty") for c in chunks]
    kinds = [e.get("step", {}).get("type") for e in events if e and e.get("type") == "step"]
    assert "llm_call" in kinds and "tool_call" in kinds and "observation" in kinds
    last = chunks[-1]
    assert (
        last.choices[0].finish_reason == "stop"
        and last.model_extra["jetty"]["status"] == "succeeded"
    )
    assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks)) == {"said": "hi"}


def test_repeated_idempotency_key_returns_the_same_run(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    marker = model.script("idem", tool_turn(finish({"n": 1})))
    headers = {"Idempotency-Key": "idem-" + marker}
    first = chat(local_gateway, jetty(marker), headers)
    second = chat(local_gateway, jetty(marker), headers)
    assert first.json()["jetty"]["trajectory_id"] == second.json()["jetty"]["trajectory_id"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert len(model.requests_for("idem")) == 1


def test_replay_runs_the_pinned_runbook_on_another_model(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    marker = model.script(
        "replay", tool_turn(write("/app/results/summary.md", "done")), tool_turn(finish({"n": 2}))
    )
    first = chat(local_gateway, jetty(marker)).json()["jetty"]
    with local_gateway.admin() as admin:
        replay = admin.post(
            f"/v1/trajectories/{first['trajectory_id']}/replay", json={"model": "scripted-b"}
        )
        assert replay.status_code in (201, 202), replay.text
        replay_id = replay.json()["trajectory_id"]
    done = wait_status(local_gateway, replay_id, ("succeeded", "failed"))
    original = local_gateway.admin().get(f"/v1/trajectories/{first['trajectory_id']}").json()
    assert (
        done["status"] == "succeeded"
        and done["replay_of"] == first["trajectory_id"]
        and done["model"] == "scripted-b"
    )
    assert done["runbook"]["sha256"] == original["runbook"]["sha256"]
    assert model.requests_for("replay")[-1]["model"] == "gpt-4o"


def test_external_grades_are_added_and_listed(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    marker = model.script("grade", tool_turn(finish({"n": 3})))
    run_id = chat(local_gateway, jetty(marker)).json()["jetty"]["trajectory_id"]
    with local_gateway.admin() as admin:
        added = admin.post(
            f"/v1/trajectories/{run_id}/grades",
            json={"score": 0.8, "label": "good", "comment": "fine", "grader": "alice"},
        )
        assert added.status_code == 201 and added.json()["source"] == "external"
        assert (
            admin.post(f"/v1/trajectories/{run_id}/grades", json={"score": "high"}).status_code
            == 400
        )
        listed = admin.get(f"/v1/trajectories/{run_id}/grades").json()["data"]
    assert [(g["grader"], g["score"]) for g in listed] == [("alice", 0.8)]


def test_bad_requests_are_422_naming_the_field(local_gateway: GatewayProcess) -> None:
    needs = "inputs:\n  properties: {city: {type: string}}\n  required: [city]\nsecrets:\n  TOKEN: {required: true}\n"
    missing = chat(local_gateway, jetty("SCRIPT:none", needs))
    assert missing.status_code == 422 and missing.json()["error"]["details"] == {
        "missing_inputs": ["city"],
        "missing_secrets": ["TOKEN"],
    }
    agent = chat(local_gateway, jetty("SCRIPT:none", agent="claude-code"))
    assert agent.status_code == 422 and agent.json()["error"]["details"]["agents"] == ["jetty"]
    broken = chat(local_gateway, {"collection": "ops", "runbook": "---\nversion: [\n---\nbody\n"})
    assert broken.status_code == 422 and "line 2" in broken.json()["error"]["message"]
    nothing = chat(local_gateway, {"collection": "ops"})
    assert nothing.status_code == 422 and nothing.json()["error"]["param"] == "jetty.runbook_url"
    no_collection = chat(local_gateway, {"runbook": "x"})
    assert (
        no_collection.status_code == 422
        and no_collection.json()["error"]["param"] == "jetty.collection"
    )
    private = chat(
        local_gateway, {"collection": "ops", "runbook_url": "https://127.0.0.1/RUNBOOK.md"}
    )
    assert private.status_code == 400 and private.json()["error"]["code"] == "url_not_allowed"


def test_runbook_from_a_github_url_with_the_system_message_convention(
    upstream: UpstreamServer, model: ScriptedModel, start_gateway: Any, tmp_path: Any
) -> None:
    marker = model.script("github", tool_turn(finish({"from": "github"})))
    with FileServer({"acme/books@main:ops/RUNBOOK.md": runbook(marker)}, token="ghp_abc") as api:
        env = run_gateway_env(
            tmp_path,
            upstream,
            "local",
            JETTY_GITHUB_API_URL=api.url,
            JETTY_GITHUB_TOKEN="ghp_abc",
            JETTY_ALLOW_PRIVATE_URLS="1",
        )
        gateway = start_gateway(env=env)
        body = chat(
            gateway,
            {
                "collection": "ops",
                "runbook_url": "https://github.com/acme/books/blob/main/ops/RUNBOOK.md",
            },
        ).json()
        assert body["jetty"]["status"] == "succeeded", body
        legacy = chat(
            gateway,
            {"collection": "ops", "runbook": True},
            messages=[{"role": "system", "content": runbook(marker)}],
        ).json()
        assert legacy["jetty"]["outputs"] == {"from": "github"}


def test_runs_in_flight_at_a_crash_are_failed_on_restart(
    upstream: UpstreamServer, model: ScriptedModel, start_gateway: Any, tmp_path: Any
) -> None:
    env = run_gateway_env(tmp_path, upstream, "local")
    gateway = start_gateway(env=env)
    marker = model.script("crash", tool_turn(bash("sleep 120")))
    run_id = chat(gateway, jetty(marker, **{"async": True})).json()["trajectory_id"]
    wait_status(gateway, run_id, ("running",))
    wait_for(
        lambda: any(
            s["type"] == "tool_call"
            for s in gateway.admin().get(f"/v1/trajectories/{run_id}").json()["steps"]
        ),
        timeout_s=30,
    )
    gateway.stop(signal.SIGKILL)
    restarted = start_gateway(
        env={**env, "JETTY_ADMIN_TOKEN": gateway.admin_token}, data_dir=gateway.data_dir
    )
    restarted.admin_token = gateway.admin_token
    failed = wait_status(restarted, run_id, ("failed",), timeout_s=30)
    assert failed["error"]["code"] == "gateway_restart"


def test_jetty_run_cli_streams_progress_and_downloads_results(
    local_gateway: GatewayProcess, model: ScriptedModel, tmp_path: Any
) -> None:
    import os
    import subprocess
    import sys

    marker = model.script(
        "cli",
        tool_turn(bash("cat /app/assets/notes.txt")),
        tool_turn(
            write("/app/results/summary.md", "CLI run for {{who}}"),
            write("/app/results/out/data.json", "[1]"),
        ),
        tool_turn(finish({"ok": True})),
    )
    book = tmp_path / "RUNBOOK.md"
    book.write_text(runbook(marker).replace("Do the thing.", "Greet {{who}}."))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    env = {
        **os.environ,
        "JETTY_BASE_URL": local_gateway.url,
        "JETTY_API_KEY": local_gateway.admin_token,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            str(book),
            "--collection",
            "ops",
            "--input",
            "who=Ada",
            "--file",
            str(notes),
            "--model",
            "scripted",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "CLI run for {{who}}" in done.stdout
    assert "bash" in done.stderr and "succeeded" in done.stderr
    saved = list((tmp_path / "out").glob("trj_*/out/data.json"))
    assert saved and saved[0].read_text() == "[1]"
    sent = model.requests_for("cli")[0]["messages"]
    assert "Greet Ada." in json.dumps(sent)


def test_sandbox_shape_beyond_the_operators_policy_is_422(local_gateway: GatewayProcess) -> None:
    """Runbooks are third-party text: egress, other images and big limits are the operator's call."""
    host_net = chat(local_gateway, jetty("policy-net", sandbox={"network": "host"}))
    assert host_net.status_code == 422
    error = host_net.json()["error"]
    assert error["code"] == "sandbox_network_not_allowed" and error["param"] == "jetty.sandbox.network"
    assert error["details"]["allowed"] == ["none"]

    front = "sandbox:\n  network: bridge\n"
    from_runbook = chat(local_gateway, jetty("policy-front", front))
    assert from_runbook.status_code == 422
    assert from_runbook.json()["error"]["code"] == "sandbox_network_not_allowed"

    image = chat(local_gateway, jetty("policy-image", snapshot="python-3.12"))
    assert image.status_code == 422 and image.json()["error"]["code"] == "sandbox_image_not_allowed"
    memory = chat(local_gateway, jetty("policy-mem", sandbox={"memory": "64g"}))
    assert memory.status_code == 422 and memory.json()["error"]["param"] == "jetty.sandbox.memory"
    with local_gateway.admin() as admin:
        listed = admin.get("/v1/trajectories", params={"kind": "runbook", "limit": 100}).json()["data"]
    assert not any("policy-" in json.dumps(t["request"]) for t in listed)  # nothing started


def test_operator_allowed_snapshot_and_network_run(
    start_gateway, upstream: UpstreamServer, model: ScriptedModel, tmp_path
) -> None:  # noqa: ANN001
    env = run_gateway_env(
        tmp_path, upstream, "local", JETTY_SANDBOX_IMAGES="py=jetty-sandbox:bookworm", JETTY_SANDBOX_NETWORKS="bridge"
    )
    gateway = start_gateway(env=env)
    marker = model.script("allowed", tool_turn(finish({"ok": True})))
    response = chat(gateway, jetty(marker, snapshot="py", sandbox={"network": "bridge"}))
    assert response.status_code == 200, response.text
    assert response.json()["jetty"]["status"] == "succeeded"


def test_events_replay_past_steps_then_stream_live_ones_until_the_end(
    local_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    gate = threading.Event()

    def held_finish(_messages: list[dict[str, Any]]) -> Any:
        # The run waits here, mid-way, while the test subscribes; released below.
        gate.wait(timeout=60)
        return tool_turn(finish({"ok": True}))

    marker = model.script("sse", tool_turn(bash("echo first-step")), held_finish)
    try:
        response = chat(local_gateway, jetty(marker, **{"async": True}))
        assert response.status_code == 202
        run_id = response.json()["trajectory_id"]
        wait_for(
            lambda: any(
                s["type"] == "observation"
                for s in local_gateway.admin().get(f"/v1/trajectories/{run_id}").json()["steps"]
            ),
            timeout_s=30,
            what="the first observation",
        )
        events: list[dict[str, Any]] = []
        with local_gateway.admin(timeout=60) as admin, admin.stream(
            "GET", f"/v1/trajectories/{run_id}/events"
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                events.append(event)
                if event["type"] == "step" and event["step"]["type"] == "observation":
                    gate.set()  # everything so far was replayed: let the run go on, live
                if event["type"] == "end":
                    break
    finally:
        gate.set()
    steps = [e["step"] for e in events if e["type"] == "step"]
    seqs = [s["seq"] for s in steps]
    assert seqs == list(range(1, len(seqs) + 1))  # every step once, in order, from the start
    lifecycle = [s["data"].get("event") for s in steps if s["type"] == "lifecycle"]
    assert lifecycle[:4] == ["runbook_fetched", "sandbox_acquiring", "sandbox_ready", "agent_started"]
    observed = seqs[[s["type"] for s in steps].index("observation")]
    live = [s for s in steps if s["seq"] > observed]
    assert any(s["type"] == "tool_call" and s["data"].get("name") == "finish" for s in live)
    assert events[-1] == {"type": "end", "trajectory_id": run_id, "status": "succeeded"}
