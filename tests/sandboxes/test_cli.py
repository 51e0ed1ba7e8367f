"""The CLI as a user runs it: `jetty sandbox run`, `jetty doctor`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import IMAGE

ROOT = Path(__file__).resolve().parents[2]


def jetty(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JETTY_DATA_DIR": str(data_dir), "JETTY_SANDBOX_IMAGE": IMAGE}
    return subprocess.run(
        [sys.executable, "-m", "sandboxes.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def test_sandbox_run_prints_output_and_exits_with_the_command_status(backend_name: str, tmp_path: Path) -> None:
    done = jetty("sandbox", "run", "--backend", backend_name, "--", "sh", "-c", "echo hi; id -u; exit 7", data_dir=tmp_path)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "hi\n1000\n"
    assert "exit code 7" in done.stderr


def test_sandbox_run_with_missing_image_tells_how_to_build(sandbox_image: str, tmp_path: Path) -> None:
    done = jetty("sandbox", "run", "--backend", "docker", "--image", "jetty-sandbox:nope", "--", "true", data_dir=tmp_path)
    assert done.returncode == 125
    assert "jetty sandbox build-image" in done.stderr


@pytest.mark.usefixtures("sandbox_image")
def test_doctor_reports_both_backends(tmp_path: Path) -> None:
    done = jetty("doctor", data_dir=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "docker: ok" in done.stdout and "local: ok (bubblewrap)" in done.stdout
