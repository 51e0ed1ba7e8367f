"""Prices per token from litellm's bundled cost table, read without importing litellm.

Importing litellm takes seconds; its price map is a plain JSON file shipped in the
package, so it is found with `importlib.util.find_spec` (which does not run the
package) and decoded once, lazily, with msgspec.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)

PRICE_FILE = "model_prices_and_context_window_backup.json"

_lock = threading.Lock()
_prices: dict[str, dict[str, Any]] | None = None
_providers: frozenset[str] = frozenset()


def _price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / PRICE_FILE
        if candidate.is_file():
            return candidate
    return None


def load_prices() -> dict[str, dict[str, Any]]:
    """The price map (model → entry), decoded on first use; empty when litellm is absent."""
    global _prices, _providers
    if _prices is not None:
        return _prices
    with _lock:
        if _prices is None:
            path = _price_file()
            table: dict[str, dict[str, Any]] = {}
            if path is not None:
                try:
                    raw = msgspec.json.decode(path.read_bytes())
                    table = {k: v for k, v in raw.items() if isinstance(v, dict) and k != "sample_spec"}
                except (OSError, msgspec.DecodeError) as exc:
                    log.warning("cannot read litellm price map error=%s", type(exc).__name__)
            _providers = frozenset(
                str(v["litellm_provider"]).split("-", 1)[0]
                for v in table.values()
                if isinstance(v.get("litellm_provider"), str)
            )
            _prices = table
    return _prices


def known_providers() -> frozenset[str]:
    """Provider prefixes litellm prices (`anthropic`, `gemini`, `bedrock`, ...)."""
    load_prices()
    return _providers


def price_entry(model: str) -> dict[str, Any] | None:
    """The price map entry for `model`, with or without its `provider/` prefix."""
    prices = load_prices()
    entry = prices.get(model)
    if entry is None and "/" in model:
        entry = prices.get(model.split("/", 1)[1])
    return entry


def cost_usd(models: Iterable[str | None], usage: Mapping[str, Any] | None) -> float | None:
    """Cost of `usage` at the first of `models` the table knows; None when none is known."""
    if not usage:
        return None
    for model in models:
        if not model:
            continue
        entry = price_entry(model)
        if entry is None:
            continue
        input_cost = entry.get("input_cost_per_token")
        output_cost = entry.get("output_cost_per_token")
        if input_cost is None and output_cost is None:
            continue
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        return round(prompt * float(input_cost or 0) + completion * float(output_cost or 0), 10)
    return None
