"""RUNBOOK.md: Markdown with YAML front matter, in the published Jetty format.

Published runbooks carry `version`, `evaluation`, `agent`, `model`,
`model_provider`, `snapshot`, `primary_outputs`, `secrets` and `origin`; we add
optional `inputs`/`outputs` (JSON Schema), `sandbox` and `checks`. Unknown keys
are kept, never rejected, so runbooks written for newer versions still run.

Every parse error is an `InvalidRunbook` whose message names the line (1-based,
counted in the whole file) and whose `details` carry `line` and `field`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.errors import InvalidRunbook

log = logging.getLogger(__name__)

RESULTS_DIR = "/app/results"
ASSETS_DIR = "/app/assets"
MAX_RUNBOOK_BYTES = 1024 * 1024

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `{{name}}`, `{{ name }}`, `{{secrets.NAME}}`; anything else inside braces is left alone.
TEMPLATE_VARIABLE = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
EVALUATIONS = ("programmatic", "rubric")
BUILTIN_VARIABLES = {"results_dir": RESULTS_DIR, "assets_dir": ASSETS_DIR}


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """A secret the runbook needs; its value comes from the collection, never the prompt."""

    name: str
    env: str
    description: str = ""
    required: bool = True
    expose_to_agent: bool = True
    expose_to_checks: bool = True


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A command run in the sandbox after the agent; exit 0 passes. Each is one grade."""

    name: str
    command: str
    timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """The runbook's wishes for its sandbox; None means the gateway's default."""

    image: str | None = None
    network: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {
                "image": self.image,
                "network": self.network,
                "cpus": self.cpus,
                "memory_mb": self.memory_mb,
                "timeout_s": self.timeout_s,
            }.items()
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class Runbook:
    """A parsed runbook; `text` is exactly what was parsed and `sha256` pins it."""

    text: str
    sha256: str
    front_matter: dict[str, Any]
    body: str
    name: str
    version: str | None = None
    evaluation: str | None = None
    agent: str | None = None
    model: str | None = None
    model_provider: str | None = None
    snapshot: str | None = None
    origin: Any = None
    primary_outputs: tuple[str, ...] = ()
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    inputs_schema: dict[str, Any] | None = None
    outputs_schema: dict[str, Any] | None = None
    sandbox: SandboxOptions | None = None
    checks: tuple[CheckSpec, ...] = ()
    variables: tuple[str, ...] = ()  # template variables of the body, without `secrets.*`
    secret_refs: tuple[str, ...] = ()  # names used as `{{secrets.NAME}}` in the body

    @property
    def required_secrets(self) -> tuple[str, ...]:
        declared = [s.name for s in self.secrets.values() if s.required]
        return tuple(dict.fromkeys([*declared, *self.secret_refs]))

    def secret_spec(self, name: str) -> SecretSpec:
        return self.secrets.get(name) or SecretSpec(name=name, env=name)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _error(message: str, *, line: int | None, field_name: str | None = None) -> InvalidRunbook:
    where = f"line {line}: " if line is not None else ""
    return InvalidRunbook(
        f"{where}{message}", param=field_name, details={"line": line, "field": field_name}
    )


def _split_front_matter(text: str) -> tuple[str | None, str, int]:
    """(front matter YAML or None, body, 1-based line where the body starts)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None, text, 1
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise _error("front matter opened with `---` is never closed", line=1)


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    """Line of each top-level key (and `key.sub` one level down), for error messages."""
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        key = str(key_node.value)
        lines[key] = value_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, sub_value in value_node.value:
                lines[f"{key}.{sub_key.value}"] = sub_value.start_mark.line + 1
        elif isinstance(value_node, yaml.SequenceNode):
            for i, item in enumerate(value_node.value):
                lines[f"{key}.{i}"] = item.start_mark.line + 1
    return lines


def _load_yaml(raw: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for the `---`
        if mark is not None and mark.index >= len(raw.rstrip()):
            # "found end of stream": the construct left open is the problem, not the `---`.
            context = exc.context_mark
            if context is not None and context.index < len(raw.rstrip()):
                line = context.line + 2
            else:
                line = len(raw.rstrip().splitlines()) + 1
        problem = exc.problem or str(exc)
        raise _error(f"front matter is not valid YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise _error(f"front matter is not valid YAML: {exc}", line=None) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise _error("front matter must be a mapping of keys to values", line=2)
    # Shift to file lines: the YAML starts on line 2.
    return data, {k: v + 1 for k, v in _key_lines(node).items()}


def parse_duration(value: Any) -> float:
    """Seconds from 90, 1.5, "90s", "10m", "1h", "500ms"; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("must be positive")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90, 90s, 10m or 1h")
    number = float(match.group(1))
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    if number <= 0:
        raise ValueError("must be positive")
    return number * factor


def parse_memory_mb(value: Any) -> int:
    """Megabytes from 512, "512m", "2g", "1Gi", "1024MB"; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int | float):
        return int(value)
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory size like 512m or 2g")
    number = float(match.group(1))
    unit = (match.group(2) or "m").lower()[0]
    mb = number * {"b": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    if mb < 16:
        raise ValueError("must be at least 16 MB")
    return int(mb)


class _Parser:
    """Reads the front matter field by field, raising with the field's line."""

    def __init__(self, data: dict[str, Any], lines: dict[str, int]) -> None:
        self.data = data
        self.lines = lines

    def fail(self, key: str, message: str) -> InvalidRunbook:
        line = self.lines.get(key) or self.lines.get(key.split(".")[0])
        return _error(f"`{key}` {message}", line=line, field_name=key)

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool | dict | list):
            raise self.fail(key, "must be a string")
        return str(value)

    def version(self) -> str | None:
        value = self.data.get("version")
        if value is None:
            return None
        text = str(value)
        if not isinstance(value, str) or not _SEMVER.match(text):
            hint = "" if isinstance(value, str) else "; quote it"
            raise self.fail(
                "version", f"must be a semantic version like 1.0.0 (got {text!r}{hint})"
            )
        return text

    def evaluation(self) -> str | None:
        value = self.string("evaluation")
        if value is not None and value not in EVALUATIONS:
            raise self.fail(
                "evaluation", f"must be one of {', '.join(EVALUATIONS)} (got {value!r})"
            )
        return value

    def primary_outputs(self) -> tuple[str, ...]:
        value = self.data.get("primary_outputs")
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail("primary_outputs", "must be a list of file paths")
        return tuple(v.strip() for v in value)

    def secrets(self) -> dict[str, SecretSpec]:
        value = self.data.get("secrets")
        if value is None:
            return {}
        if isinstance(value, list):  # a bare list of names is accepted too
            value = {name: {} for name in value}
        if not isinstance(value, dict):
            raise self.fail("secrets", "must be a mapping NAME: {env, description, required}")
        specs: dict[str, SecretSpec] = {}
        for name, raw in value.items():
            key = f"secrets.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise self.fail(key, "is not a valid secret name (letters, digits and _)")
            raw = {} if raw is None else raw
            if isinstance(raw, str):
                raw = {"description": raw}
            if not isinstance(raw, dict):
                raise self.fail(key, "must be a mapping {env, description, required}")
            env = raw.get("env") or name
            if not isinstance(env, str) or not _NAME.match(env):
                raise self.fail(key, f"has an invalid `env` {env!r}")
            flags = {}
            for flag, default in (
                ("required", True),
                ("expose_to_agent", True),
                ("expose_to_checks", True),
            ):
                flag_value = raw.get(flag, default)
                if not isinstance(flag_value, bool):
                    raise self.fail(key, f"`{flag}` must be true or false")
                flags[flag] = flag_value
            specs[name] = SecretSpec(
                name=name, env=env, description=str(raw.get("description") or ""), **flags
            )
        return specs

    def schema(self, key: str) -> dict[str, Any] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, "must be a JSON Schema object")
        if "type" not in value and "properties" in value:
            value = {"type": "object", **value}
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise self.fail(
                key, f"is not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
            ) from None
        return value

    def sandbox(self) -> SandboxOptions | None:
        value = self.data.get("sandbox")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail("sandbox", "must be a mapping {image, network, cpu, memory, timeout}")
        try:
            cpus = value.get("cpu", value.get("cpus"))
            memory = value.get("memory", value.get("memory_mb"))
            timeout = value.get("timeout", value.get("timeout_s"))
            options = SandboxOptions(
                image=str(value["image"]) if value.get("image") else None,
                network=str(value["network"]) if value.get("network") is not None else None,
                cpus=float(cpus) if cpus is not None else None,
                memory_mb=parse_memory_mb(memory) if memory is not None else None,
                timeout_s=parse_duration(timeout) if timeout is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise self.fail("sandbox", f"is invalid: {exc}") from None
        if options.cpus is not None and not 0 < options.cpus <= 64:
            raise self.fail("sandbox", "`cpu` must be between 0 and 64")
        return options

    def checks(self) -> tuple[CheckSpec, ...]:
        value = self.data.get("checks")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("checks", "must be a list of commands or {name, command, timeout}")
        checks: list[CheckSpec] = []
        for i, item in enumerate(value):
            key = f"checks.{i}"
            if isinstance(item, str):
                item = {"command": item}
            if not isinstance(item, dict) or not isinstance(
                item.get("command", item.get("run")), str
            ):
                raise self.fail(key, "must be a command string or a mapping with `command`")
            command = str(item.get("command", item.get("run")))
            try:
                timeout = (
                    parse_duration(item["timeout"]) if item.get("timeout") is not None else 300.0
                )
            except ValueError as exc:
                raise self.fail(key, f"has an invalid timeout: {exc}") from None
            name = str(item.get("name") or f"check_{i + 1}")
            checks.append(CheckSpec(name=name, command=command, timeout_s=timeout))
        names = [c.name for c in checks]
        if len(set(names)) != len(names):
            raise self.fail("checks", "has two checks with the same name")
        return tuple(checks)


def _title(body: str) -> str | None:
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            return stripped[2:].strip() or None
    return None


def template_variables(body: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(plain variables, secret names) used in `body`, in order of first use."""
    plain: dict[str, None] = {}
    secrets: dict[str, None] = {}
    for match in TEMPLATE_VARIABLE.finditer(body):
        name = match.group(1)
        if name.startswith("secrets."):
            secrets[name.split(".", 1)[1]] = None
        elif "." not in name:
            plain[name] = None
    return tuple(plain), tuple(secrets)


def parse_runbook(text: str, *, default_name: str = "runbook") -> Runbook:
    """Parse a RUNBOOK.md; raise `InvalidRunbook` (422) naming the line of the first problem."""
    if len(text.encode("utf-8")) > MAX_RUNBOOK_BYTES:
        raise _error(f"runbook is larger than {MAX_RUNBOOK_BYTES} bytes", line=None)
    text = text.lstrip("\ufeff")
    raw, body, body_line = _split_front_matter(text)
    data, lines = _load_yaml(raw) if raw is not None else ({}, {})
    for i, line in enumerate(body.splitlines(), start=body_line):
        for match in re.finditer(r"\{\{\s*secrets\.([^}\s]*)\s*\}\}", line):
            if not _NAME.match(match.group(1)):
                raise _error(
                    f"`{match.group(0)}` does not name a secret", line=i, field_name="body"
                )
    if not body.strip():
        raise _error(
            "runbook has no instructions after the front matter", line=body_line, field_name="body"
        )
    parser = _Parser(data, lines)
    variables, secret_refs = template_variables(body)
    secrets = parser.secrets()
    name = parser.string("name") or parser.string("title") or _title(body) or default_name
    return Runbook(
        text=text,
        sha256=sha256_text(text),
        front_matter=data,
        body=body,
        name=name,
        version=parser.version(),
        evaluation=parser.evaluation(),
        agent=parser.string("agent"),
        model=parser.string("model"),
        model_provider=parser.string("model_provider"),
        snapshot=parser.string("snapshot"),
        origin=data.get("origin"),
        primary_outputs=parser.primary_outputs(),
        secrets=secrets,
        inputs_schema=parser.schema("inputs"),
        outputs_schema=parser.schema("outputs"),
        sandbox=parser.sandbox(),
        checks=parser.checks(),
        variables=tuple(v for v in variables if v not in ("secrets",)),
        secret_refs=secret_refs,
    )
