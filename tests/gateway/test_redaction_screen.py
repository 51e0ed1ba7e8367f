"""The fast screen in front of redaction never lets through what the full walk would catch."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.redaction import _Redactor, redact_secrets

_PIECES = [
    "Hello, how are you?",
    "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX",
    "my password: hunter2hunter2",
    "4 2 4 2 4 2 4 2 4 2 4 2 4 2 4 2",
    "4242-4242-4242-4242",
    "Bearer abcdefghijklmnop",
    "the known-secret-value here",
    "call 555-0100 at 12:30",
    "ünïcödé İstanbul",
    "",
]
_KEYS = ["content", "role", "Authorization", "api_key", "max_tokens", "x"]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice([*_PIECES, 12, 3.5, None, True])
    if roll < 0.7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_KEYS): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _full_walk(value: Any, secrets: tuple[str, ...]) -> tuple[Any, list[dict[str, str]]]:
    redactor = _Redactor(secrets)
    return redactor.walk(value, ""), redactor.found


@pytest.mark.parametrize("seed", range(200))
def test_screened_redaction_matches_the_full_walk(seed: int) -> None:
    rng = random.Random(seed)
    value = {"request": _random_value(rng), "response": _random_value(rng)}
    secrets = ("known-secret-value",)
    assert redact_secrets(value, secrets) == _full_walk(value, secrets)


def test_card_number_with_a_space_between_every_digit_is_redacted() -> None:
    cleaned, found = redact_secrets({"content": "card 4 2 4 2 4 2 4 2 4 2 4 2 4 2 4 2 ok"})
    assert "[REDACTED:card_number]" in cleaned["content"]
    assert found == [{"kind": "card_number", "path": "content"}]


def test_clean_values_come_back_as_they_are() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    cleaned, found = redact_secrets(body, ("sk-upstream-key",))
    assert cleaned is body and found == []
