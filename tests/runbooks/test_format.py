"""RUNBOOK.md parsing and rendering: the published format, our additions, errors with lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import InvalidRunbook, MissingInputs, Unprocessable
from runbooks.format import parse_runbook
from runbooks.template import render_runbook

PUBLISHED = """---
version: "1.2.0"
evaluation: programmatic
agent: claude-code
model: anthropic/claude-sonnet-4
model_provider: anthropic
snapshot: python-3.12
primary_outputs:
  - report.md
  - data.csv
secrets:
  API_TOKEN:
    env: SERVICE_TOKEN
    description: Token for the service
    required: true
  CHECK_ONLY:
    description: only for checks
    expose_to_agent: false
origin: {repo: jettyio/runbooks, path: weather/RUNBOOK.md}
some_future_key: [1, 2]
inputs:
  properties:
    city: {type: string}
    days: {type: integer, default: 3, minimum: 1}
  required: [city]
outputs:
  type: object
  properties: {temperature: {type: number}}
  required: [temperature]
sandbox: {image: "python:3.12-slim", network: none, cpu: 2, memory: 2g, timeout: 10m}
checks:
  - name: report_exists
    command: test -s {{results_dir}}/report.md
  - python3 -c 'print(1)'
---
# Weather report

Fetch the weather for {{ city }} over {{days}} days with `curl -H "Authorization: {{secrets.API_TOKEN}}"`.
Write the report to {{results_dir}}/report.md. Helm-style {{ .Values.x }} stays as is.
"""


def test_published_runbook_parses_with_every_field() -> None:
    runbook = parse_runbook(PUBLISHED)
    assert runbook.name == "Weather report"
    assert runbook.version == "1.2.0" and runbook.evaluation == "programmatic"
    assert runbook.agent == "claude-code" and runbook.model == "anthropic/claude-sonnet-4"
    assert runbook.primary_outputs == ("report.md", "data.csv")
    assert runbook.secrets["API_TOKEN"].env == "SERVICE_TOKEN"
    assert runbook.secrets["CHECK_ONLY"].expose_to_agent is False
    assert runbook.front_matter["some_future_key"] == [1, 2]
    assert (
        runbook.sandbox is not None
        and runbook.sandbox.memory_mb == 2048
        and runbook.sandbox.timeout_s == 600
    )
    assert [c.name for c in runbook.checks] == ["report_exists", "check_2"]
    assert runbook.variables == ("city", "days", "results_dir")
    assert runbook.secret_refs == ("API_TOKEN",)
    assert len(runbook.sha256) == 64


def test_secret_placeholder_names_the_env_var_and_never_the_value() -> None:
    runbook = parse_runbook(PUBLISHED)
    rendered = render_runbook(
        runbook, {"city": "Oslo"}, {"API_TOKEN": "s3cr3t-value", "CHECK_ONLY": "c-only"}
    )
    assert "s3cr3t-value" not in rendered.prompt and "c-only" not in rendered.prompt
    assert "Authorization: $SERVICE_TOKEN" in rendered.prompt
    assert "Oslo over 3 days" in rendered.prompt
    assert "/app/results/report.md" in rendered.prompt
    assert "{{ .Values.x }}" in rendered.prompt
    assert rendered.agent_env == {"SERVICE_TOKEN": "s3cr3t-value"}
    assert rendered.check_env == {"SERVICE_TOKEN": "s3cr3t-value", "CHECK_ONLY": "c-only"}


def test_missing_inputs_and_secrets_are_listed_together() -> None:
    runbook = parse_runbook(PUBLISHED)
    with pytest.raises(MissingInputs) as caught:
        render_runbook(runbook, {}, {})
    assert caught.value.status == 422
    assert caught.value.details == {
        "missing_inputs": ["city"],
        "missing_secrets": ["API_TOKEN", "CHECK_ONLY"],
    }


def test_inputs_are_validated_against_the_schema() -> None:
    runbook = parse_runbook(PUBLISHED)
    with pytest.raises(Unprocessable) as caught:
        render_runbook(runbook, {"city": "Oslo", "days": 0}, {"API_TOKEN": "x", "CHECK_ONLY": "y"})
    assert caught.value.code == "invalid_inputs" and "days" in caught.value.message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("---\nversion: 1.0.0\nfoo: [1,\nbar: 2\n---\nbody\n", 3, "not valid YAML"),
        ("---\nversion: '1.0'\n---\nbody\n", 2, "semantic version"),
        ("---\nversion: '1.0.0'\nevaluation: vibes\n---\nbody\n", 3, "evaluation"),
        ("---\nversion: '1.0.0'\n\noutputs:\n  type: bogus\n---\nbody\n", 5, "JSON Schema"),
        ("---\nsecrets:\n  bad-name: {}\n---\nbody\n", 3, "secret name"),
        ("---\nversion: '1.0.0'\n", 1, "never closed"),
        ("---\nmodel: x\n---\n\nUse {{secrets.bad-name}} here\n", 5, "does not name a secret"),
        (
            "---\nchecks:\n  - name: a\n    timeout: soon\n    command: ls\n---\nbody\n",
            3,
            "timeout",
        ),
    ],
)
def test_errors_name_the_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(InvalidRunbook) as caught:
        parse_runbook(text)
    assert caught.value.status == 422
    assert caught.value.details["line"] == line, caught.value.message
    assert f"line {line}:" in caught.value.message and needle in caught.value.message


def test_runbook_without_front_matter_is_just_instructions() -> None:
    runbook = parse_runbook("Do {{thing}} please.\n", default_name="plain")
    assert (
        runbook.name == "plain" and runbook.variables == ("thing",) and runbook.front_matter == {}
    )


def test_check_command_prints_fields_and_fails_on_a_bad_runbook(tmp_path: Path) -> None:
    good = tmp_path / "weather" / "RUNBOOK.md"
    good.parent.mkdir()
    good.write_text(PUBLISHED)
    bad = tmp_path / "bad.md"
    bad.write_text("---\nversion: 1.0.0\nfoo: [1,\n---\nbody\n")
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "runbook", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "template variables: city, days, results_dir" in ok.stdout
    assert "secrets: API_TOKEN, CHECK_ONLY" in ok.stdout
    assert 'evaluation: "programmatic"' in ok.stdout
    both = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "runbook", "check", str(good), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 1
    assert f"{bad}: error: line 3:" in both.stderr
