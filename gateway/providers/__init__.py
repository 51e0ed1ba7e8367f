"""Providers: where a model is served and how to call it.

Routing from LiteLLM's `model_list` format, the byte relay to OpenAI-compatible
upstreams, litellm translation for the others (imported lazily), and the price
table. Nothing here imports litellm at import time.
"""

from gateway.providers._deployments import (
    OPENAI_COMPATIBLE,
    Deployment,
    ModelsFile,
    ModelsFileError,
    build_deployment,
    load_models_file,
)
from gateway.providers._prices import cost_usd, known_providers, load_prices, price_entry
from gateway.providers._reply import UpstreamReply, error_from_upstream
from gateway.providers._router import ModelRouter
from gateway.providers._translate import load_litellm
from gateway.providers._upstreams import Upstreams, UpstreamTrace

__all__ = [
    "OPENAI_COMPATIBLE",
    "Deployment",
    "ModelRouter",
    "ModelsFile",
    "ModelsFileError",
    "UpstreamReply",
    "UpstreamTrace",
    "Upstreams",
    "build_deployment",
    "cost_usd",
    "error_from_upstream",
    "known_providers",
    "load_litellm",
    "load_models_file",
    "load_prices",
    "price_entry",
]
