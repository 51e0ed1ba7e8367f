"""Collections: named groups of runs, with write-only secrets and run defaults.

Secrets are stored as one Fernet token (AES-128-CBC + HMAC-SHA256) whose key is
derived from the gateway's secret key with HKDF, so a database dump alone does not
reveal them. They are never returned: the API shows their names only.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import ApiError, BadRequest, NotFound
from gateway.storage import isoformat, utcnow
from runbooks.format import parse_duration, parse_memory_mb
from runbooks.models import Collection

log = logging.getLogger(__name__)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SECRET_BYTES = 64 * 1024
MAX_SECRETS = 100
DEFAULT_KEYS = ("model", "sandbox", "timeout_s")
SANDBOX_KEYS = ("image", "network", "cpu", "cpus", "memory", "memory_mb", "timeout", "timeout_s")


def fernet_for(secret_key: str) -> Fernet:
    """The Fernet key for collection secrets, derived from the gateway's secret key."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"jetty", info=b"collection-secrets"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name or ""):
        raise BadRequest(
            "Collection names are 1-100 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            code="invalid_collection_name",
            param="collection",
        )
    return name


def _check_secrets(secrets: Any) -> dict[str, str]:
    if not isinstance(secrets, dict):
        raise BadRequest("secrets must be an object of NAME: value", param="secrets")
    if len(secrets) > MAX_SECRETS:
        raise BadRequest(f"At most {MAX_SECRETS} secrets per collection", param="secrets")
    for name, value in secrets.items():
        if not SECRET_NAME.match(name):
            raise BadRequest(
                f"Secret name {name!r} must be letters, digits and `_`", param=f"secrets.{name}"
            )
        if not isinstance(value, str):
            raise BadRequest(f"Secret {name!r} must be a string", param=f"secrets.{name}")
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise BadRequest(
                f"Secret {name!r} is longer than {MAX_SECRET_BYTES} bytes", param=f"secrets.{name}"
            )
    return dict(secrets)


def _check_defaults(defaults: Any) -> dict[str, Any]:
    if not isinstance(defaults, dict):
        raise BadRequest("defaults must be an object {model, sandbox}", param="defaults")
    cleaned: dict[str, Any] = {}
    for key, value in defaults.items():
        if key not in DEFAULT_KEYS or value is None:
            continue  # unknown fields are ignored, not rejected
        if key == "model" and not isinstance(value, str):
            raise BadRequest("defaults.model must be a string", param="defaults.model")
        if key == "timeout_s":
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise BadRequest(f"defaults.timeout_s: {exc}", param="defaults.timeout_s") from None
        if key == "sandbox":
            if not isinstance(value, dict):
                raise BadRequest("defaults.sandbox must be an object", param="defaults.sandbox")
            value = {k: v for k, v in value.items() if k in SANDBOX_KEYS and v is not None}
            try:
                if "memory" in value:
                    parse_memory_mb(value["memory"])
                if "timeout" in value:
                    parse_duration(value["timeout"])
            except ValueError as exc:
                raise BadRequest(f"defaults.sandbox: {exc}", param="defaults.sandbox") from None
        cleaned[key] = value
    return cleaned


def collection_to_api(collection: Collection) -> dict[str, Any]:
    return {
        "object": "collection",
        "name": collection.name,
        "description": collection.description,
        "secrets": sorted(collection.secret_names),
        "defaults": collection.defaults,
        "created_at": isoformat(collection.created_at),
        "updated_at": isoformat(collection.updated_at),
    }


async def put_collection(
    session: AsyncSession, secret_key: str, name: str, body: dict[str, Any]
) -> tuple[Collection, bool]:
    """Create or replace a collection; `secrets` omitted keeps the stored ones. (row, created)."""
    check_collection_name(name)
    row = await session.get(Collection, name)
    created = row is None
    now = utcnow()
    if row is None:
        row = Collection(name=name, created_at=now, updated_at=now)
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > 1000:
        raise BadRequest(
            "description must be a string of at most 1000 characters", param="description"
        )
    row.description = description
    row.defaults = _check_defaults(body.get("defaults") or {})
    if body.get("secrets") is not None:
        secrets = _check_secrets(body["secrets"])
        row.secrets_ciphertext = (
            fernet_for(secret_key).encrypt(json.dumps(secrets).encode()).decode()
        )
        row.secret_names = sorted(secrets)
    row.updated_at = now
    session.add(row)
    await session.commit()
    log.info("collection saved collection=%s secrets=%d", name, len(row.secret_names))
    return row, created


async def get_collection(session: AsyncSession, name: str) -> Collection:
    row = await session.get(Collection, check_collection_name(name))
    if row is None:
        raise NotFound(
            f"No collection named {name!r}", code="collection_not_found", param="collection"
        )
    return row


async def find_collection(session: AsyncSession, name: str) -> Collection | None:
    return await session.get(Collection, name)


async def list_collections(session: AsyncSession) -> list[Collection]:
    return list((await session.exec(select(Collection).order_by(col(Collection.name)))).all())


def decrypt_secrets(collection: Collection | None, secret_key: str) -> dict[str, str]:
    """The collection's secrets in clear, for injection into a sandbox (never for output)."""
    if collection is None or not collection.secrets_ciphertext:
        return {}
    try:
        return json.loads(fernet_for(secret_key).decrypt(collection.secrets_ciphertext.encode()))
    except InvalidToken:
        log.error(
            "collection secrets undecryptable collection=%s (JETTY_SECRET_KEY changed?)",
            collection.name,
        )
        raise ApiError(
            f"The secrets of collection {collection.name!r} cannot be decrypted; store them again",
            code="secrets_undecryptable",
        ) from None
