"""The CLI as a user runs it: `jetty sandbox run`, `jetty doctor`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from .conftest import IMAGE, IN_CI

ROOT = Path(__file__).resolve().parents[2]


def jetty(*args: str, data_dir: Path, wrap: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JETTY_DATA_DIR": str(data_dir), "JETTY_SANDBOX_IMAGE": IMAGE}
    return subprocess.run(
        [*wrap, sys.executable, "-m", "sandboxes.cli", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
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
    assert "local limits: " in done.stdout
    if IN_CI:  # root there, so the local backend must manage cgroups
        assert "local limits: cgroup v" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to hide the cgroup mounts")
def test_local_without_cgroups_falls_back_to_rlimits_and_says_so(tmp_path: Path) -> None:
    # A mount namespace without /sys/fs/cgroup, as in a container that mounts none.
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'umount -R /sys/fs/cgroup && exec "$@"', "sh"]
    hog = ["python3", "-c", "x = bytearray(1536 * 1024 * 1024); print('survived')"]
    done = jetty("sandbox", "run", "--backend", "local", "--memory", "128", "--", *hog, data_dir=tmp_path, wrap=hide)
    assert done.returncode == 1 and "MemoryError" in done.stderr and "oom_killed" not in done.stderr
    assert "weak resource limits: no cgroups" in done.stderr
    doctor = jetty("doctor", data_dir=tmp_path, wrap=hide)
    assert "local limits: WEAK, rlimits only" in doctor.stdout
