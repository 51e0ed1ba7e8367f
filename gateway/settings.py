"""The one `Settings` object, read from the environment once at start.

Every `JETTY_*` variable is parsed and validated here; a bad value stops the start
with a one-line `SettingsError` naming the variable. Nothing else reads `os.environ`
for configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_SANDBOX_IMAGE = "jetty-sandbox:bookworm"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _parse_int(name: str, raw: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}={value} is above the maximum {maximum}")
    return value


def _parse_float(name: str, raw: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def _parse_csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_list(raw: str) -> tuple[str, ...]:
    """Paths: separated by commas or the OS path separator."""
    return tuple(part.strip() for part in raw.replace(os.pathsep, ",").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated gateway configuration (see DESIGN.md "Configuration")."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "share" / "jetty")
    database_url: str = ""
    admin_token: str | None = None
    secret_key: str | None = None
    models_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON when stderr is not a TTY
    max_body_bytes: int = 10 * 1024 * 1024
    # Auth cache: how often a replica polls for keys revoked elsewhere.
    key_sync_interval_s: float = 2.0
    # Passthrough
    upstream_timeout_s: float = 600.0
    upstream_connect_timeout_s: float = 10.0
    upstream_max_retries: int = 2
    # Sandboxes
    sandbox_backend: str = "auto"
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    sandbox_allow_unisolated: bool = False
    sandbox_pool_size: int | None = None  # None: 2 for docker, 0 for local
    sandbox_reap_interval_s: float = 60.0
    # What a run (its runbook, collection or request) may ask of a sandbox. Runbooks
    # come from third parties, so egress and other images are opt-in by the operator.
    sandbox_networks: tuple[str, ...] = ()
    sandbox_images: dict[str, str] = field(default_factory=dict)  # snapshot name -> image
    sandbox_max_cpus: float = 2.0
    sandbox_max_memory_mb: int = 4096
    # Runbooks
    sync_wait_s: float = 90.0
    runbook_roots: tuple[str, ...] = ()
    allow_private_urls: bool = False
    github_token: str | None = None
    github_api_url: str = "https://api.github.com"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jetty.db"

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL: the configured one, or the SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every `JETTY_*` variable; raise `SettingsError` on the first bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def get(name: str) -> str | None:
            raw = env.get(name)
            return raw if raw is not None and raw.strip() != "" else None

        if (raw := get("JETTY_HOST")) is not None:
            values["host"] = raw.strip()
        if (raw := get("JETTY_PORT")) is not None:
            values["port"] = _parse_int("JETTY_PORT", raw, minimum=0, maximum=65535)
        if (raw := get("JETTY_DATA_DIR")) is not None:
            values["data_dir"] = Path(raw).expanduser()
        if (raw := get("JETTY_DATABASE_URL")) is not None:
            values["database_url"] = _normalise_database_url(raw.strip())
        if (raw := get("JETTY_ADMIN_TOKEN")) is not None:
            if len(raw.strip()) < 16:
                raise SettingsError("JETTY_ADMIN_TOKEN must be at least 16 characters long")
            values["admin_token"] = raw.strip()
        if (raw := get("JETTY_SECRET_KEY")) is not None:
            if len(raw.strip()) < 16:
                raise SettingsError("JETTY_SECRET_KEY must be at least 16 characters long")
            values["secret_key"] = raw.strip()
        if (raw := get("JETTY_MODELS_FILE")) is not None:
            path = Path(raw).expanduser()
            if not path.is_file():
                raise SettingsError(f"JETTY_MODELS_FILE={raw!r}: no such file")
            values["models_file"] = path
        if (raw := get("JETTY_LOG_LEVEL")) is not None:
            level = raw.strip().upper()
            if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
                raise SettingsError(f"JETTY_LOG_LEVEL={raw!r} is not one of DEBUG, INFO, WARNING, ERROR")
            values["log_level"] = level
        if (raw := get("JETTY_LOG_JSON")) is not None:
            values["log_json"] = _parse_bool("JETTY_LOG_JSON", raw)
        if (raw := get("JETTY_MAX_BODY_BYTES")) is not None:
            values["max_body_bytes"] = _parse_int("JETTY_MAX_BODY_BYTES", raw, minimum=1024)
        if (raw := get("JETTY_KEY_SYNC_INTERVAL_S")) is not None:
            values["key_sync_interval_s"] = _parse_float("JETTY_KEY_SYNC_INTERVAL_S", raw, minimum=0.05)
        if (raw := get("JETTY_UPSTREAM_TIMEOUT_S")) is not None:
            values["upstream_timeout_s"] = _parse_float("JETTY_UPSTREAM_TIMEOUT_S", raw, minimum=0.1)
        if (raw := get("JETTY_UPSTREAM_CONNECT_TIMEOUT_S")) is not None:
            values["upstream_connect_timeout_s"] = _parse_float(
                "JETTY_UPSTREAM_CONNECT_TIMEOUT_S", raw, minimum=0.1
            )
        if (raw := get("JETTY_UPSTREAM_MAX_RETRIES")) is not None:
            values["upstream_max_retries"] = _parse_int("JETTY_UPSTREAM_MAX_RETRIES", raw, minimum=0, maximum=10)
        if (raw := get("JETTY_SANDBOX_BACKEND")) is not None:
            backend = raw.strip().lower()
            if backend not in {"auto", "docker", "local"}:
                raise SettingsError(f"JETTY_SANDBOX_BACKEND={raw!r} is not one of auto, docker, local")
            values["sandbox_backend"] = backend
        if (raw := get("JETTY_SANDBOX_IMAGE")) is not None:
            values["sandbox_image"] = raw.strip()
        if (raw := get("JETTY_SANDBOX_ALLOW_UNISOLATED")) is not None:
            values["sandbox_allow_unisolated"] = _parse_bool("JETTY_SANDBOX_ALLOW_UNISOLATED", raw)
        if (raw := get("JETTY_SANDBOX_POOL_SIZE")) is not None:
            values["sandbox_pool_size"] = _parse_int("JETTY_SANDBOX_POOL_SIZE", raw, minimum=0, maximum=64)
        if (raw := get("JETTY_SANDBOX_REAP_INTERVAL_S")) is not None:
            values["sandbox_reap_interval_s"] = _parse_float("JETTY_SANDBOX_REAP_INTERVAL_S", raw, minimum=1)
        if (raw := get("JETTY_SANDBOX_NETWORKS")) is not None:
            values["sandbox_networks"] = _parse_csv(raw)
        if (raw := get("JETTY_SANDBOX_IMAGES")) is not None:
            values["sandbox_images"] = _parse_images(raw)
        if (raw := get("JETTY_SANDBOX_MAX_CPUS")) is not None:
            values["sandbox_max_cpus"] = _parse_float("JETTY_SANDBOX_MAX_CPUS", raw, minimum=0.1)
        if (raw := get("JETTY_SANDBOX_MAX_MEMORY_MB")) is not None:
            values["sandbox_max_memory_mb"] = _parse_int("JETTY_SANDBOX_MAX_MEMORY_MB", raw, minimum=64)
        if (raw := get("JETTY_SYNC_WAIT_S")) is not None:
            values["sync_wait_s"] = _parse_float("JETTY_SYNC_WAIT_S", raw, minimum=0)
        if (raw := get("JETTY_RUNBOOK_ROOTS")) is not None:
            values["runbook_roots"] = tuple(str(Path(p).expanduser().resolve()) for p in _parse_list(raw))
        if (raw := get("JETTY_ALLOW_PRIVATE_URLS")) is not None:
            values["allow_private_urls"] = _parse_bool("JETTY_ALLOW_PRIVATE_URLS", raw)
        if (raw := get("JETTY_GITHUB_TOKEN")) is not None:
            values["github_token"] = raw.strip()
        if (raw := get("JETTY_GITHUB_API_URL")) is not None:
            url = raw.strip().rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"JETTY_GITHUB_API_URL={raw!r} is not an http(s) URL")
            values["github_api_url"] = url
        return cls(**values)  # type: ignore[arg-type]

    def redacted(self) -> dict[str, object]:
        """The settings as a dict safe to log: secrets replaced by a marker."""
        secret = {"admin_token", "secret_key", "github_token"}
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in secret and value else value
        if "@" in str(out.get("database_url", "")):
            out["database_url"] = _mask_url_password(str(out["database_url"]))
        return out


def _parse_images(raw: str) -> dict[str, str]:
    """`name=image,other=image2,image3`: snapshot names runs may ask for, and their images."""
    images: dict[str, str] = {}
    for part in _parse_csv(raw):
        name, sep, image = part.partition("=")
        name, image = name.strip(), image.strip()
        if sep and (not name or not image):
            raise SettingsError(f"JETTY_SANDBOX_IMAGES entry {part!r} is not name=image")
        images[name] = image if sep else name
    return images


def _normalise_database_url(url: str) -> str:
    """Map the usual spellings to async drivers: `postgresql://` → psycopg, `sqlite://` → aiosqlite."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    if url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
        return url
    raise SettingsError(
        f"JETTY_DATABASE_URL has an unsupported scheme {url.split('://', 1)[0]!r} "
        "(use postgresql:// or sqlite:///path)"
    )


def _mask_url_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
