"""Deployments: where a model name is served, read from LiteLLM's `model_list` YAML.

A deployment is one upstream for one public model name. OpenAI-compatible providers
get a ready-made URL and headers so the hot path relays bytes without looking them
up per call; every other provider is called through litellm, which translates.
`os.environ/NAME` references are resolved here, the one place besides settings.py
that reads the environment, because LiteLLM's format puts provider keys there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

ENV_PREFIX = "os.environ/"


@dataclass(frozen=True, slots=True)
class OpenAICompatible:
    """How to reach a provider that speaks the OpenAI wire format."""

    api_base: str | None
    key_env: str | None = None
    base_env: str | None = None
    key_required: bool = False


# Providers whose chat completions endpoint speaks the OpenAI format, so their
# bytes are relayed untranslated. Defaults mirror litellm's (same env variables).
OPENAI_COMPATIBLE: dict[str, OpenAICompatible] = {
    "openai": OpenAICompatible("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_API_BASE", True),
    "custom_openai": OpenAICompatible(None, "OPENAI_API_KEY"),
    "openai_like": OpenAICompatible(None),
    "hosted_vllm": OpenAICompatible(None, "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE"),
    "vllm": OpenAICompatible(None, "HOSTED_VLLM_API_KEY", "HOSTED_VLLM_API_BASE"),
    "ollama": OpenAICompatible("http://localhost:11434/v1", "OLLAMA_API_KEY", "OLLAMA_API_BASE"),
    "ollama_chat": OpenAICompatible("http://localhost:11434/v1", "OLLAMA_API_KEY", "OLLAMA_API_BASE"),
    "lm_studio": OpenAICompatible("http://localhost:1234/v1", "LM_STUDIO_API_KEY", "LM_STUDIO_API_BASE"),
    "openrouter": OpenAICompatible("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OPENROUTER_API_BASE", True),
    "groq": OpenAICompatible("https://api.groq.com/openai/v1", "GROQ_API_KEY", None, True),
    "deepseek": OpenAICompatible("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", None, True),
    "together_ai": OpenAICompatible("https://api.together.xyz/v1", "TOGETHERAI_API_KEY", None, True),
    "fireworks_ai": OpenAICompatible("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", None, True),
    "deepinfra": OpenAICompatible("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY", None, True),
    "xai": OpenAICompatible("https://api.x.ai/v1", "XAI_API_KEY", None, True),
    "cerebras": OpenAICompatible("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", None, True),
    "azure": OpenAICompatible(None, "AZURE_API_KEY", "AZURE_API_BASE", True),
}

# litellm_params keys that say how to connect, not what to send.
_CONNECTION_KEYS = {
    "model", "api_base", "base_url", "api_key", "api_version", "organization", "extra_headers",
    "timeout", "stream_timeout", "max_retries", "rpm", "tpm", "weight", "order",
}


@dataclass(slots=True, eq=False)
class Deployment:
    """One upstream serving a public model name; `in_flight` feeds least-busy routing."""

    name: str
    model: str
    provider: str
    upstream_model: str
    api_base: str | None
    api_key: str | None
    id: str
    # Set for OpenAI-compatible deployments: the relay posts here with these headers.
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Everything litellm needs for a translated call (api_key, api_base, api_version, ...).
    litellm_kwargs: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0

    @property
    def is_openai_compatible(self) -> bool:
        return self.url is not None

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


class ModelsFileError(ValueError):
    """The models file cannot be used; the message says where."""


def split_provider(model: str) -> tuple[str | None, str]:
    """`openai/gpt-4o` → (`openai`, `gpt-4o`); a bare name has no provider."""
    provider, sep, rest = model.partition("/")
    return (provider, rest) if sep and rest else (None, model)


def resolve_env_refs(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace `os.environ/NAME` strings (at any depth) by the variable's value, or None."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        resolved = environ.get(name)
        if resolved is None:
            log.warning("models file refers to unset environment variable name=%s", name)
        return resolved
    if isinstance(value, dict):
        return {k: resolve_env_refs(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, environ) for v in value]
    return value


def build_deployment(
    name: str, params: Mapping[str, Any], environ: Mapping[str, str], *, deployment_id: str | None = None
) -> Deployment:
    """A deployment from LiteLLM `litellm_params` (env references already resolved)."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise ModelsFileError(f"model {name!r}: litellm_params.model is required")
    provider, upstream_model = split_provider(model)
    api_base = params.get("api_base") or params.get("base_url")
    api_key = params.get("api_key")
    if provider is None:
        # LiteLLM's rule: a bare name is OpenAI's, or any OpenAI-format server at api_base.
        provider = "openai"
    compat = OPENAI_COMPATIBLE.get(provider)
    if compat is not None:
        if api_base is None and compat.base_env:
            api_base = environ.get(compat.base_env) or (environ.get("OPENAI_BASE_URL") if provider == "openai" else None)
        api_base = api_base or compat.api_base
        if api_key is None and compat.key_env:
            api_key = environ.get(compat.key_env)
    deployment = Deployment(
        name=name,
        model=model,
        provider=provider,
        upstream_model=upstream_model,
        api_base=str(api_base).rstrip("/") if api_base else None,
        api_key=str(api_key) if api_key else None,
        id=deployment_id or model,
    )
    extra_headers = {str(k): str(v) for k, v in (params.get("extra_headers") or {}).items()}
    if compat is not None:
        if deployment.api_base is None:
            raise ModelsFileError(f"model {name!r}: provider {provider!r} needs an api_base")
        deployment.url, deployment.headers = _relay_target(deployment, params, extra_headers)
    kwargs = {k: v for k, v in params.items() if k not in _CONNECTION_KEYS}
    for key in ("api_base", "api_version", "organization", "extra_headers"):
        if params.get(key) is not None:
            kwargs[key] = params[key]
    if api_key:
        kwargs["api_key"] = api_key
    deployment.litellm_kwargs = kwargs
    return deployment


def _relay_target(
    deployment: Deployment, params: Mapping[str, Any], extra_headers: dict[str, str]
) -> tuple[str, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    base = deployment.api_base or ""
    if deployment.provider == "azure":
        # Azure OpenAI: the deployment is in the path, the key in `api-key`.
        version = params.get("api_version") or "2024-10-21"
        url = f"{base}/openai/deployments/{deployment.upstream_model}/chat/completions?api-version={version}"
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
    else:
        if deployment.provider in {"ollama", "ollama_chat"} and not base.endswith("/v1"):
            base += "/v1"  # Ollama's OpenAI-compatible API lives under /v1
        url = f"{base}/chat/completions"
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
    if params.get("organization"):
        headers["OpenAI-Organization"] = str(params["organization"])
    headers.update(extra_headers)
    return url, headers


@dataclass(slots=True)
class ModelsFile:
    """What a models file declares: deployments in file order, and the routing strategy."""

    deployments: list[Deployment]
    routing_strategy: str = "round-robin"


def load_models_file(path: Path | None, environ: Mapping[str, str] | None = None) -> ModelsFile:
    """Parse a LiteLLM-style models file (`model_list`, `router_settings`); none → no deployments."""
    env = os.environ if environ is None else environ
    if path is None:
        return ModelsFile([])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelsFileError(f"{path}: cannot read models file: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_list", []), list):
        raise ModelsFileError(f"{path}: expected a mapping with a `model_list` list")
    deployments = []
    for index, entry in enumerate(raw.get("model_list") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            raise ModelsFileError(f"{path}: model_list[{index}] needs a `model_name`")
        params = resolve_env_refs(entry.get("litellm_params") or {}, env)
        if not isinstance(params, dict):
            raise ModelsFileError(f"{path}: model_list[{index}].litellm_params must be a mapping")
        info = entry.get("model_info") or {}
        deployment_id = str(info["id"]) if isinstance(info, dict) and info.get("id") else None
        try:
            deployments.append(build_deployment(entry["model_name"], params, env, deployment_id=deployment_id))
        except ModelsFileError as exc:
            raise ModelsFileError(f"{path}: model_list[{index}]: {exc}") from None
    settings = raw.get("router_settings") or {}
    strategy = str(settings.get("routing_strategy") or "round-robin") if isinstance(settings, dict) else "round-robin"
    return ModelsFile(deployments, strategy)
