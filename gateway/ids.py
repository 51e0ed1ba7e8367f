"""Prefixed, time-sortable identifiers: `trj_…`, `key_…`, `rtn_…`.

The body is 26 Crockford base32 characters (a ULID): 48 bits of milliseconds then
80 random bits, so ids sort by creation time as plain strings, which keeps
cursor pagination a simple `id < cursor` on every database.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, *, at_ms: int | None = None) -> str:
    """A new id `prefix_<ulid>`, ordered by creation time."""
    ms = int(time.time() * 1000) if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(ms, 10)}{_encode(rand, 16)}"
