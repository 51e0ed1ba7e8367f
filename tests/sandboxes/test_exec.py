"""Commands in a sandbox: output, exit codes, env, workdir, streaming, timeouts, user."""

from __future__ import annotations

import time

import pytest

from sandboxes import OutputChunk, Sandbox

pytestmark = pytest.mark.anyio


async def test_exec_returns_stdout_stderr_and_exit_code(sandbox: Sandbox) -> None:
    result = await sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.duration_s > 0 and not result.timed_out and not result.truncated
    assert result.isolated and result.warning is None


async def test_exec_takes_env_and_workdir(sandbox: Sandbox) -> None:
    await sandbox.exec("mkdir -p sub")
    result = await sandbox.exec(["sh", "-c", 'echo "$GREETING $(pwd)"'], env={"GREETING": "hi"}, workdir="/app/sub")
    assert result.stdout_text == "hi /app/sub\n"


async def test_unknown_command_exits_127_with_clear_stderr(sandbox: Sandbox) -> None:
    as_argv = await sandbox.exec(["no-such-tool", "--flag"])
    assert as_argv.exit_code == 127
    assert "command not found: no-such-tool" in as_argv.stderr_text
    as_shell = await sandbox.exec("no-such-tool")
    assert as_shell.exit_code == 127 and "not found" in as_shell.stderr_text


async def test_runs_as_non_root_and_system_is_read_only(sandbox: Sandbox) -> None:
    result = await sandbox.exec("id -u; id -g; touch /usr/evil 2>/dev/null && echo wrote || echo refused")
    assert result.stdout_text.split() == ["1000", "1000", "refused"]
    assert (await sandbox.exec("touch /app/results/ok")).exit_code == 0


async def test_sleep_past_timeout_is_killed_and_sandbox_stays_usable(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = await sandbox.exec("sleep 30", timeout_s=0.5)
    assert result.timed_out and result.exit_code == 137
    assert time.monotonic() - started < 5
    assert (await sandbox.exec("echo alive")).stdout == b"alive\n"


async def test_stream_yields_chunks_before_the_command_ends(sandbox: Sandbox) -> None:
    chunks: list[OutputChunk] = []
    arrivals: list[float] = []
    async for chunk in sandbox.exec_stream("echo one; sleep 0.4; echo two >&2; exit 4"):
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    assert [c.stream for c in chunks] == ["stdout", "stderr", "exit"]
    assert arrivals[1] - arrivals[0] > 0.3  # the first chunk came before the sleep ended
    result = chunks[-1].result
    assert result is not None and result.exit_code == 4
    assert (result.stdout, result.stderr) == (b"one\n", b"two\n")


async def test_huge_output_is_truncated_not_buffered(sandbox: Sandbox) -> None:
    result = await sandbox.exec("head -c 3000000 /dev/zero")
    assert result.truncated
    assert len(result.stdout) == sandbox.spec.max_output_bytes
