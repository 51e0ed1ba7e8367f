"""`auto` picks docker only when it can really run sandboxes there."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway import REPO_ROOT


def doctor(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "doctor"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        timeout=60,
    )
    return result.stdout + result.stderr


def test_auto_uses_docker_when_the_engine_has_the_image() -> None:
    assert "selected (auto): docker" in doctor()


def test_auto_falls_back_to_local_when_the_image_is_missing() -> None:
    out = doctor(JETTY_SANDBOX_IMAGE="jetty-test-no-such-image:missing")
    assert "MISSING" in out and "jetty sandbox build-image" in out
    assert "selected (auto): local" in out
