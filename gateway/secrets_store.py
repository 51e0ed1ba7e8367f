"""Generated secrets that live in the data dir: the admin token and the signing key.

Each is created once, on first start, with mode 0600; only its location is logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin_token"
SECRET_KEY_FILE = "secret_key"


def _read_or_create(path: Path, make: str) -> tuple[str, bool]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        value = path.read_text().strip()
        if value:
            return value, False
    except FileNotFoundError:
        pass
    # O_EXCL: two processes starting together must not both write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make, True


def load_admin_token(data_dir: Path, configured: str | None) -> str:
    """`JETTY_ADMIN_TOKEN` when set, else the token in the data dir, generated on first start."""
    if configured:
        return configured
    path = data_dir / ADMIN_TOKEN_FILE
    token, created = _read_or_create(path, "jty_admin_" + secrets.token_urlsafe(32))
    if created:
        log.warning("generated admin token path=%s (read it from this file; it is not shown again)", path)
    return token


def load_secret_key(data_dir: Path, configured: str | None) -> str:
    """`JETTY_SECRET_KEY` when set, else a generated key kept in the data dir."""
    if configured:
        return configured
    value, _ = _read_or_create(data_dir / SECRET_KEY_FILE, secrets.token_urlsafe(48))
    return value
