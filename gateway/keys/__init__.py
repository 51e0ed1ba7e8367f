"""API keys: raw value shown once, SHA-256 stored, optional scopes and rate limits.

The routes live in `gateway.keys.routes` (imported by the app only), because
`gateway.auth` depends on this package's model and hashing.
"""

from gateway.keys.models import ApiKey
from gateway.keys.service import hash_key

__all__ = ["ApiKey", "hash_key"]
