"""Build the default sandbox image locally, from Debian packages only.

Hosts (CI included) reach no image registry, so `docker pull` is not an option: we
make a root filesystem with debootstrap and turn it into an image with
`docker import`. The result is cached by tag; building again is skipped unless
forced.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sandboxes.errors import SandboxError, SandboxUnavailable

logger = logging.getLogger(__name__)

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "git", "curl", "ca-certificates", "procps")
SANDBOX_UID = 1000
BUILD_BUILD_TIMEOUT_S = 900.0

# Parts of a Debian root filesystem that a sandbox never needs; dropping them keeps
# the image small and `docker import` quick.
_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log",
)


def image_exists(image: str, *, timeout_s: float = 10.0) -> bool:
    """True when the local engine has `image` (never pulls)."""
    result = subprocess.run(
        ["docker", "image", "inspect", image],
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    return result.returncode == 0


def _root_prefix() -> list[str]:
    """debootstrap must run as root; use `sudo -n` when we are not."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    raise SandboxUnavailable("building the sandbox image needs root (debootstrap); run as root or with sudo")


def _run(cmd: list[str], *, timeout_s: float, input_file: Path | None = None) -> None:
    logger.info("image build step cmd=%s", " ".join(cmd[:4]))
    stdin = open(input_file, "rb") if input_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        result = subprocess.run(cmd, stdin=stdin, capture_output=True, timeout=timeout_s, check=False)
    finally:
        if input_file:
            stdin.close()  # type: ignore[union-attr]
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).decode(errors="replace")[-2000:]
        raise SandboxError(f"{cmd[0]} failed (exit {result.returncode}): {tail}")


def _add_user(root: Path) -> None:
    """Create the `jetty` user by editing the account files (minbase has no useradd guarantees)."""
    entries = {
        "etc/passwd": f"jetty:x:{SANDBOX_UID}:{SANDBOX_UID}:jetty:/app:/bin/bash\n",
        "etc/group": f"jetty:x:{SANDBOX_UID}:\n",
        "etc/shadow": "jetty:!:19000:0:99999:7:::\n",
    }
    for rel, line in entries.items():
        path = root / rel
        existing = path.read_text() if path.exists() else ""
        if not any(row.startswith("jetty:") for row in existing.splitlines()):
            path.write_text(existing + line)
    for sub in ("app", "app/results", "app/assets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(root / sub, SANDBOX_UID, SANDBOX_UID)


def build_image(image: str, *, force: bool = False, suite: str = DEBIAN_SUITE, mirror: str = DEBIAN_MIRROR) -> bool:
    """Build `image` from debootstrap unless it exists; return True when a build ran."""
    if shutil.which("docker") is None:
        raise SandboxUnavailable("the docker CLI is not installed (apt-get install docker.io)")
    if not force and image_exists(image):
        logger.info("sandbox image present image=%s", image)
        return False
    if shutil.which("debootstrap") is None:
        raise SandboxUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    prefix = _root_prefix()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jetty-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        tarball = Path(tmp) / "rootfs.tar"
        _run(
            [
                *prefix,
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                suite,
                str(root),
                mirror,
            ],
            timeout_s=BUILD_BUILD_TIMEOUT_S,
        )
        if prefix:
            # Not root: let a root helper do the account edits and pruning.
            raise SandboxUnavailable("image build as non-root is not supported yet; run `sudo jetty sandbox build-image`")
        _add_user(root)
        for rel in _PRUNE:
            target = root / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(parents=True, exist_ok=True)
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], timeout_s=300)
        shutil.rmtree(root, ignore_errors=True)
        changes = [
            f"USER {SANDBOX_UID}:{SANDBOX_UID}",
            "WORKDIR /app",
            "ENV HOME=/app",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            "LABEL jetty.image=1",
            'CMD ["sleep", "infinity"]',
        ]
        cmd = ["docker", "import"]
        for change in changes:
            cmd += ["--change", change]
        _run([*cmd, "-", image], timeout_s=300, input_file=tarball)
    logger.info("sandbox image built image=%s seconds=%.1f", image, time.monotonic() - started)
    return True
