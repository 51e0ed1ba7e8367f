"""API shapes of keys: what a client sends and what it gets back."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.keys.models import ApiKey
from gateway.storage import isoformat


class KeyScopes(msgspec.Struct, forbid_unknown_fields=False):
    """Glob patterns (`fnmatch`) a key may use; empty or absent means any."""

    collections: list[str] | None = None
    models: list[str] | None = None


class CreateKey(msgspec.Struct, forbid_unknown_fields=False):
    label: str = ""
    scopes: KeyScopes | None = None
    rpm_limit: int | None = None
    expires_at: str | None = None
    expires_in_s: int | None = None


def key_to_api(key: ApiKey) -> dict[str, Any]:
    scopes = key.scopes or {}
    return {
        "id": key.id,
        "object": "api_key",
        "label": key.label,
        "prefix": key.prefix,
        "scopes": {"collections": scopes.get("collections"), "models": scopes.get("models")},
        "rpm_limit": key.rpm_limit,
        "created_at": isoformat(key.created_at),
        "last_used_at": isoformat(key.last_used_at),
        "expires_at": isoformat(key.expires_at),
        "revoked_at": isoformat(key.revoked_at),
    }
