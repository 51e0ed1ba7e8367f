"""The built-in `jetty` agent loop: model → tool calls → observations, until `finish`.

It runs in the gateway; only tools run in the sandbox. Every model call, tool call
and observation is a step. Limits (steps, tokens, cost) end the run as `failed`
with the reason; wall time is enforced by the caller (`timed_out`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from runbooks.format import RESULTS_DIR
from runbooks.model_client import ModelClient
from runbooks.tools import parse_arguments, run_tool, tool_definitions
from sandboxes import Sandbox

log = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 50
DEFAULT_MAX_TOKENS = 2_000_000
MAX_FINISH_ATTEMPTS = 3
MAX_NUDGES = 2

SYSTEM_PROMPT = """You are Jetty's runbook agent. You carry out the runbook below inside a Linux \
sandbox whose working directory is /app, using the tools you are given: `bash`, `read_file`, \
`write_file`, `list_files`. Uploaded files are in /app/assets. Write every deliverable into \
{results_dir}: by convention a `summary.md` of what you did and, when the runbook asks for \
validation, `validation_report.json` shaped as {{"stages": [{{"name", "passed", "message"}}], \
"results": {{"pass", "partial", "fail"}}, "overall_passed"}}. When the work is done, call `finish` \
with the run's result object. Secrets are available as environment variables and must never be \
printed or written to files."""

AddStep = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class Limits:
    max_steps: int = DEFAULT_MAX_STEPS
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_cost_usd: float | None = None


@dataclass(slots=True)
class AgentOutcome:
    """How the loop ended: `status` succeeded/failed, the `finish` result, what it used."""

    status: str
    result: Any = None
    reason: str | None = None
    message: str | None = None
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    cost_usd: float | None = None
    llm_calls: int = 0
    last_text: str | None = None
    overhead_ms: list[float] = field(default_factory=list)


def _hide(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED:secret]")
    return text


class AgentLoop:
    """One run's conversation with the model; `run()` returns the outcome."""

    def __init__(
        self,
        *,
        client: ModelClient,
        sandbox: Sandbox,
        prompt: str,
        extra_messages: list[dict[str, Any]],
        outputs_schema: dict[str, Any] | None,
        env: Mapping[str, str],
        secrets: tuple[str, ...],
        limits: Limits,
        add_step: AddStep,
    ) -> None:
        self.client = client
        self.sandbox = sandbox
        self.env = dict(env)
        self.secrets = secrets
        self.limits = limits
        self.add_step = add_step
        self.tools = tool_definitions(outputs_schema)
        self.validator = Draft202012Validator(outputs_schema) if outputs_schema else None
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT.format(results_dir=RESULTS_DIR)},
            {"role": "user", "content": prompt},
            *extra_messages,
        ]
        self.outcome = AgentOutcome(status="running")

    def _account(self, usage: dict[str, int], cost: float | None) -> None:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.outcome.usage[key] += usage.get(key, 0)
        if not self.outcome.usage["total_tokens"]:
            self.outcome.usage["total_tokens"] = (
                self.outcome.usage["prompt_tokens"] + self.outcome.usage["completion_tokens"]
            )
        if cost is not None:
            self.outcome.cost_usd = round((self.outcome.cost_usd or 0.0) + cost, 10)

    def _fail(self, reason: str, message: str) -> AgentOutcome:
        self.add_step("error", {"reason": reason, "message": message})
        self.outcome.status, self.outcome.reason, self.outcome.message = "failed", reason, message
        return self.outcome

    def _limit_hit(self) -> AgentOutcome | None:
        o, lim = self.outcome, self.limits
        if o.llm_calls >= lim.max_steps:
            return self._fail(
                "max_steps", f"the agent used its {lim.max_steps} steps without finishing"
            )
        if o.usage["total_tokens"] >= lim.max_tokens:
            return self._fail(
                "max_tokens",
                f"the agent used {o.usage['total_tokens']} tokens (limit {lim.max_tokens})",
            )
        if lim.max_cost_usd is not None and (o.cost_usd or 0) >= lim.max_cost_usd:
            return self._fail(
                "max_cost", f"the run cost ${o.cost_usd:.4f} (limit ${lim.max_cost_usd})"
            )
        return None

    async def run(self) -> AgentOutcome:
        finish_attempts = nudges = 0
        sent = 0  # messages already recorded as input of an earlier llm_call step
        while True:
            if (stop := self._limit_hit()) is not None:
                return stop
            turn = await self.client.complete(self.messages, self.tools)
            step_started = time.monotonic()
            self.outcome.llm_calls += 1
            self._account(turn.usage, turn.cost_usd)
            message = {
                k: v for k, v in turn.message.items() if k in ("role", "content", "tool_calls")
            }
            message["role"] = "assistant"
            self.add_step(
                "llm_call",
                {
                    "model": self.client.model,
                    "deployment": turn.deployment,
                    "input": self.messages[sent:],
                    "output": message,
                    "finish_reason": turn.finish_reason,
                    "usage": turn.usage,
                    "cost_usd": turn.cost_usd,
                    "latency_ms": turn.latency_ms,
                },
            )
            self.messages.append(message)
            sent = len(self.messages)
            if isinstance(message.get("content"), str) and message["content"].strip():
                self.outcome.last_text = message["content"]
            calls = message.get("tool_calls") or []
            tool_time = 0.0
            if not calls:
                nudges += 1
                if nudges > MAX_NUDGES:
                    if self.validator is None and self.outcome.last_text:
                        self.outcome.status, self.outcome.result = (
                            "succeeded",
                            {"message": self.outcome.last_text},
                        )
                        return self.outcome
                    return self._fail("no_finish", "the model stopped without calling `finish`")
                self.messages.append(
                    {
                        "role": "user",
                        "content": "Continue with the tools, and call `finish` with the result when the runbook is done.",
                    }
                )
                continue
            for call in calls:
                function = call.get("function") or {}
                name, call_id = function.get("name") or "", call.get("id") or ""
                try:
                    args = parse_arguments(function.get("arguments"))
                except ValueError as exc:
                    self.add_step(
                        "tool_call",
                        {"id": call_id, "name": name, "arguments": function.get("arguments")},
                    )
                    self._observe(call_id, name, {"error": str(exc)}, f"error: {exc}", True)
                    continue
                self.add_step("tool_call", {"id": call_id, "name": name, "arguments": args})
                if name == "finish":
                    finish_attempts += 1
                    result = args.get("result", args or None)
                    verdict = self._check_result(result)
                    if verdict is None:
                        self.outcome.status, self.outcome.result = "succeeded", result
                        self._observe(call_id, name, {"accepted": True}, "result accepted", False)
                        return self.outcome
                    self._observe(
                        call_id,
                        name,
                        {"accepted": False, "errors": verdict},
                        "result rejected: " + "; ".join(verdict),
                        True,
                    )
                    if finish_attempts >= MAX_FINISH_ATTEMPTS:
                        return self._fail(
                            "invalid_result",
                            "the result did not match the outputs schema: " + "; ".join(verdict),
                        )
                    continue
                started = time.monotonic()
                observation = await run_tool(self.sandbox, name, args, self.env)
                tool_time += time.monotonic() - started
                self._observe(
                    call_id, name, observation.data, observation.for_model, observation.is_error
                )
            self.outcome.overhead_ms.append(
                round((time.monotonic() - step_started - tool_time) * 1000, 3)
            )

    def _check_result(self, result: Any) -> list[str] | None:
        if self.validator is None:
            return None if result is not None else ["`result` is required"]
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or 'result'}: {e.message}"
            for e in self.validator.iter_errors(result)
        ]
        return errors or None

    def _observe(
        self, call_id: str, name: str, data: dict[str, Any], text: str, is_error: bool
    ) -> None:
        self.add_step(
            "observation", {"tool_call_id": call_id, "name": name, "is_error": is_error, **data}
        )
        self.messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": _hide(text, self.secrets)}
        )


def result_text(result: Any) -> str:
    return (
        json.dumps(result, ensure_ascii=False, indent=2) if not isinstance(result, str) else result
    )
