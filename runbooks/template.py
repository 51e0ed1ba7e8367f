"""Fill a runbook's template variables; secrets go to the sandbox env, never the prompt.

`{{secrets.NAME}}` renders as `$ENV` (the variable the secret is injected as), so
the model sees how to use a secret without ever seeing its value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from gateway.errors import MissingInputs, Unprocessable
from runbooks.format import BUILTIN_VARIABLES, TEMPLATE_VARIABLE, Runbook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RenderedRunbook:
    """The prompt the agent gets and the environments its commands and checks run with."""

    prompt: str
    inputs: dict[str, Any]
    agent_env: dict[str, str] = field(default_factory=dict)
    check_env: dict[str, str] = field(default_factory=dict)
    secret_values: tuple[str, ...] = ()  # for redaction of everything recorded


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def resolve_inputs(
    runbook: Runbook, given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(inputs with schema defaults, missing names, other schema violations)."""
    schema = runbook.inputs_schema or {}
    values: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop:
            values[name] = prop["default"]
    values.update(given)
    missing = [name for name in schema.get("required") or [] if name not in values]
    for name in runbook.variables:
        if name not in values and name not in BUILTIN_VARIABLES and name not in missing:
            missing.append(name)
    problems: list[str] = []
    if schema:
        for error in Draft202012Validator(schema).iter_errors(values):
            if error.validator == "required":
                continue  # reported as missing
            where = ".".join(str(p) for p in error.absolute_path) or "inputs"
            problems.append(f"{where}: {error.message}")
    return values, missing, problems


def render_runbook(
    runbook: Runbook, inputs: Mapping[str, Any], secrets: Mapping[str, str]
) -> RenderedRunbook:
    """The prompt and envs for a run; 422 listing every missing input and secret at once."""
    values, missing_inputs, problems = resolve_inputs(runbook, inputs)
    missing_secrets = [name for name in runbook.required_secrets if name not in secrets]
    if missing_inputs or missing_secrets:
        parts = []
        if missing_inputs:
            parts.append(f"inputs: {', '.join(missing_inputs)}")
        if missing_secrets:
            parts.append(f"secrets: {', '.join(missing_secrets)}")
        raise MissingInputs(
            f"The runbook needs values it was not given ({'; '.join(parts)})",
            param="jetty.inputs" if missing_inputs else "jetty.collection",
            details={"missing_inputs": missing_inputs, "missing_secrets": missing_secrets},
        )
    if problems:
        raise Unprocessable(
            f"Inputs do not match the runbook's schema: {'; '.join(problems)}",
            code="invalid_inputs",
            param="jetty.inputs",
            details={"errors": problems},
        )
    variables = {**BUILTIN_VARIABLES, **{k: _as_text(v) for k, v in values.items()}}

    def substitute(match: Any) -> str:
        name = match.group(1)
        if name.startswith("secrets."):
            return "$" + runbook.secret_spec(name.split(".", 1)[1]).env
        return variables.get(name, match.group(0))

    prompt = TEMPLATE_VARIABLE.sub(substitute, runbook.body)
    agent_env: dict[str, str] = {}
    check_env: dict[str, str] = {}
    wanted = dict.fromkeys([*runbook.secrets, *runbook.secret_refs])
    for name in wanted:
        if name not in secrets:
            continue
        spec = runbook.secret_spec(name)
        if spec.expose_to_agent:
            agent_env[spec.env] = secrets[name]
        if spec.expose_to_checks:
            check_env[spec.env] = secrets[name]
    secret_values = tuple(v for v in secrets.values() if v)
    return RenderedRunbook(
        prompt=prompt,
        inputs=values,
        agent_env=agent_env,
        check_env=check_env,
        secret_values=secret_values,
    )
