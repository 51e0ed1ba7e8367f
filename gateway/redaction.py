"""Secret redaction before anything is stored.

`redact_secrets` walks a JSON-like value and replaces known secret values (the
upstream and gateway keys of the call, collection secrets) and anything that looks
like an API key, bearer token, password assignment, private key or card number.
It returns the cleaned value and a list saying what kind was found where, never
the value itself.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

MIN_KNOWN_SECRET_LEN = 6

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ),
    ("bearer_token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("api_key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}")),
    ("api_key", re.compile(r"\bjty_[A-Za-z0-9_-]{16,}")),
    ("api_key", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("api_key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("api_key", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
]
# `password: hunter2`, `api_key="…"`, `token=…`: keep the name, drop the value.
_ASSIGNMENT = re.compile(
    r"(?i)\b((?:pass(?:word|wd)?|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]{4,})"
)
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_SECRET_FIELD = re.compile(
    r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|password|passwd|secret|client[_-]?secret|access[_-]?token|refresh[_-]?token|token)$"
)


# Every pattern above needs one of these (lower-cased) substrings, or for a card
# number a match of `_CARD` itself (which needs no run of four digits: `4 1 1 1 …`).
# Most strings have none, and `in` checks cost far less than a dozen regex scans:
# redaction runs on the event loop for every call.
_HINTS = (
    "sk-",
    "jty_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "akia",
    "aiza",
    "xox",
    "eyj",
    "private key",
    "bearer",
    "pass",
    "pwd",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "token",
)

def _may_hold_secret(value: str) -> bool:
    lower = value.lower()
    for hint in _HINTS:
        if hint in lower:
            return True
    return _CARD.search(value) is not None


@functools.lru_cache(maxsize=4096)
def _is_secret_field(name: str) -> bool:
    return _SECRET_FIELD.match(name) is not None


def _gather(value: Any, strings: list[str]) -> bool:
    """Collect every non-empty string in `value`; True if a secret-named field holds one."""
    # Exact type checks first: decoded JSON has only these, and this runs per call.
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, dict)):
        named = False
        for key, item in value.items():
            item_kind = type(item)
            if item_kind is str or (item_kind not in _SCALARS and isinstance(item, str)):
                if item:
                    strings.append(item)
                    if isinstance(key, str) and _is_secret_field(key):
                        named = True
            elif item_kind not in _SCALARS and _gather(item, strings):
                named = True
        return named
    if kind is list or isinstance(value, list):
        named = False
        for item in value:
            item_kind = type(item)
            if item_kind is str:
                if item:
                    strings.append(item)
            elif item_kind not in _SCALARS and _gather(item, strings):
                named = True
        return named
    if isinstance(value, str) and value:
        strings.append(value)
    return False


_SCALARS = frozenset({int, float, bool, type(None)})


def _is_clean(value: Any, known: Iterable[str]) -> bool:
    """True when nothing in `value` can need redacting: one screen over all its strings.

    Every pattern needs a hint inside a single string, and the NUL separator cannot
    be part of one, so screening the joined strings misses nothing a per-string scan
    would find (a rare false alarm only sends the value down the precise walk).
    """
    strings: list[str] = []
    if _gather(value, strings):
        return False
    if not strings:
        return True
    text = "\x00".join(strings)
    for secret in known:
        if secret in text:
            return False
    return not _may_hold_secret(text)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        known = {s for s in secrets if s and len(s) >= MIN_KNOWN_SECRET_LEN}
        self.known = sorted(
            known, key=len, reverse=True
        )  # longest first: a key may contain another
        self.found: list[dict[str, str]] = []

    def text(self, value: str, path: str) -> str:
        for secret in self.known:
            if secret in value:
                value = value.replace(secret, _marker("secret"))
                self.found.append({"kind": "secret", "path": path})
        if not _may_hold_secret(value):
            return value
        for kind, pattern in _PATTERNS:
            value, count = pattern.subn(_marker(kind), value)
            if count:
                self.found.append({"kind": kind, "path": path})

        def assignment(match: re.Match[str]) -> str:
            if match.group(2).startswith("[REDACTED"):
                return match.group(0)
            self.found.append({"kind": "password", "path": path})
            return match.group(1) + _marker("password")

        value = _ASSIGNMENT.sub(assignment, value)

        def card(match: re.Match[str]) -> str:
            digits = re.sub(r"[ -]", "", match.group(0))
            if 13 <= len(digits) <= 19 and _luhn_ok(digits):
                self.found.append({"kind": "card_number", "path": path})
                return _marker("card_number")
            return match.group(0)

        return _CARD.sub(card, value)

    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self.text(value, path) if value else value
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                if (
                    isinstance(key, str)
                    and _is_secret_field(key)
                    and isinstance(item, str)
                    and item
                ):
                    out[key] = _marker("secret_field")
                    self.found.append({"kind": "secret_field", "path": child})
                else:
                    out[key] = self.walk(item, child)
            return out
        if isinstance(value, list):
            return [self.walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value


def redact_secrets(
    value: Any, secrets: Iterable[str] = (), *, path: str = ""
) -> tuple[Any, list[dict[str, str]]]:
    """`value` with secrets replaced by `[REDACTED:<kind>]` (a copy if any), and where they were.

    Most values hold no secret: one screen over their strings returns them as they are,
    without the per-string scans and the copy (redaction runs on the event loop).
    """
    redactor = _Redactor(secrets)
    if _is_clean(value, redactor.known):
        return value, []
    cleaned = redactor.walk(value, path)
    return cleaned, redactor.found
