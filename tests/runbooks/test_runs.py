"""Runbook runs end to end: the real agent loop, a scripted model, real sandboxes.

The published-format runbook runs on both backends (local/bubblewrap on SQLite,
docker on PostgreSQL); the other behaviours run on the local backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.runbooks.conftest import docker_available, run_gateway_env
from tests.runbooks.scripted import ScriptedModel, bash, finish, tool_turn, write
from tests.support.gateway import GatewayProcess
from tests.support.upstream import UpstreamServer

SECRET = "tok-" + "s3cr3t" * 4

PUBLISHED = """---
version: "1.0.0"
evaluation: programmatic
agent: claude-code
model: scripted
snapshot: python-3.12
primary_outputs: [report.txt]
secrets:
  API_TOKEN: {env: API_TOKEN, description: Weather API token, required: true}
inputs:
  properties: {city: {type: string}}
  required: [city]
checks:
  - name: report_exists
    command: test -s /app/results/report.txt
  - name: checks_see_the_secret
    command: test -n "$API_TOKEN"
origin: {repo: jettyio/runbooks}
---
# Weather report SCRIPT:%s

Write the weather for {{city}} into {{results_dir}}/report.txt.
Call the API with `curl -H "Authorization: Bearer {{secrets.API_TOKEN}}"`.
"""

REPORT = {
    "stages": [
        {"name": "report_written", "passed": True, "message": "ok"},
        {"name": "units", "passed": False, "message": "no units"},
    ],
    "results": {"pass": 1, "partial": 0, "fail": 1},
    "overall_passed": True,
}


@pytest.fixture(scope="module", params=["local-sqlite", "docker-postgres"])
def any_gateway(
    request: pytest.FixtureRequest,
    upstream: UpstreamServer,
    model: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    backend, database = request.param.split("-")
    if backend == "docker" and not docker_available():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine: CI must run the docker backend (.ci/run starts dockerd)")
        pytest.skip("no Docker engine")
    url = request.getfixturevalue("postgres").create_database() if database == "postgres" else None
    process = GatewayProcess(
        database_url=url, env=run_gateway_env(tmp_path_factory.mktemp(backend), upstream, backend)
    ).start()
    yield process
    process.stop()


def sdk(gateway: GatewayProcess, token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=token or gateway.admin_token,
        base_url=f"{gateway.url}/v1",
        max_retries=0,
        timeout=120,
    )


def put_collection(gateway: GatewayProcess, name: str, **body: Any) -> None:
    with gateway.admin() as admin:
        assert admin.put(f"/v1/collections/{name}", json=body).status_code in (200, 201)


def test_published_runbook_runs_with_inputs_secret_files_checks_and_report(
    any_gateway: GatewayProcess, model: ScriptedModel
) -> None:
    gateway = any_gateway
    put_collection(gateway, "weather", secrets={"API_TOKEN": SECRET})
    marker = model.script(
        "published",
        tool_turn(bash('echo "token=$API_TOKEN"; cat /app/assets/data.csv; echo oops >&2; exit 3')),
        tool_turn(
            write("/app/results/report.txt", "Oslo: 3C\n"),
            write("/app/results/summary.md", "# Weather\nOslo is cold.\n"),
        ),
        tool_turn(
            bash(f"cat > /app/results/validation_report.json <<'EOF'\n{json.dumps(REPORT)}\nEOF")
        ),
        tool_turn(finish({"city": "Oslo", "temperature": 3})),
    )
    runbook = PUBLISHED % marker.split(":")[1]
    completion = sdk(gateway).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Please be brief."}],
        extra_body={
            "jetty": {
                "collection": "weather",
                "runbook": runbook,
                "inputs": {"city": "Oslo"},
                "files": [{"name": "data.csv", "content": "city,temp\nOslo,3\n"}],
            }
        },
    )
    jetty = completion.model_extra["jetty"]
    assert jetty["status"] == "succeeded", jetty
    assert completion.choices[0].message.content == "# Weather\nOslo is cold.\n"
    assert jetty["outputs"] == {"city": "Oslo", "temperature": 3}
    assert completion.usage is not None and completion.usage.total_tokens == 4 * 18
    grades = {g["name"]: g["passed"] for g in jetty["grades"]}
    assert grades == {
        "report_exists": True,
        "checks_see_the_secret": True,
        "report_written": True,
        "units": False,
        "overall": True,
    }
    assert sorted(f["path"] for f in jetty["files"]) == [
        "report.txt",
        "summary.md",
        "validation_report.json",
    ]
    run_id = jetty["trajectory_id"]
    with gateway.admin() as admin:
        assert admin.get(f"/v1/trajectories/{run_id}/files/report.txt").text == "Oslo: 3C\n"
        trajectory = admin.get(f"/v1/trajectories/{run_id}").json()
        atif = admin.get(f"/v1/trajectories/{run_id}", params={"format": "atif"}).json()
    # The secret reached the command (the model saw it redacted) and is stored nowhere.
    observation = next(s for s in trajectory["steps"] if s["type"] == "observation")
    assert observation["data"]["exit_code"] == 3 and observation["data"]["is_error"] is True
    assert (
        "token=[REDACTED" in observation["data"]["stdout"]
        and "Oslo,3" in observation["data"]["stdout"]
    )
    assert SECRET not in json.dumps(trajectory) and SECRET not in json.dumps(
        completion.model_dump()
    )
    sent = model.requests_for("published")
    assert SECRET not in json.dumps(sent)
    assert "Bearer $API_TOKEN" in json.dumps(
        sent[0]["messages"]
    ) and "for Oslo into /app/results/report.txt" in json.dumps(sent[0]["messages"])
    events = [s["data"].get("event") for s in trajectory["steps"] if s["type"] == "lifecycle"]
    assert events[:4] == ["runbook_fetched", "sandbox_acquiring", "sandbox_ready", "agent_started"]
    llm_steps = [s for s in trajectory["steps"] if s["type"] == "llm_call"]
    assert len(llm_steps) == 4 and all(
        s["data"]["usage"]["total_tokens"] == 18 and s["data"]["latency_ms"] >= 0 for s in llm_steps
    )
    assert trajectory["runbook"]["sha256"] and trajectory["labels"]["task"].startswith(
        "Weather report"
    )
    assert (
        atif["schema_version"] == "ATIF-v1.4" and atif["final_metrics"]["total_prompt_tokens"] == 44
    )
    assert any(step.get("tool_calls") for step in atif["steps"])
