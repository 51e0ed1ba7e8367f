"""Files in a sandbox: write, read, list, tar export, git diff."""

from __future__ import annotations

import io
import tarfile

import pytest

from sandboxes import Sandbox, SandboxFileError

pytestmark = pytest.mark.anyio


async def test_written_file_is_read_back_and_seen_by_commands(sandbox: Sandbox) -> None:
    await sandbox.write_file("notes/a.txt", b"hello\x00bytes")
    assert await sandbox.read_file("notes/a.txt") == b"hello\x00bytes"
    assert await sandbox.read_file("/app/notes/a.txt") == b"hello\x00bytes"
    assert (await sandbox.exec("wc -c < notes/a.txt")).stdout_text.strip() == "11"


async def test_list_files_shows_workspace_layout(sandbox: Sandbox) -> None:
    await sandbox.write_file("results/report.md", b"# done")
    top = {e.path: e for e in await sandbox.list_files(".")}
    assert {"results", "assets"} <= set(top) and top["results"].is_dir
    deep = {e.path: e for e in await sandbox.list_files(".", recursive=True)}
    assert deep["results/report.md"].size == 6 and not deep["results/report.md"].is_dir


async def test_missing_file_raises_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxFileError) as info:
        await sandbox.read_file("nope.txt")
    assert info.value.kind == "not_found"


async def test_archive_is_a_tar_of_the_workspace(sandbox: Sandbox) -> None:
    await sandbox.write_file("results/out.json", b"{}")
    with tarfile.open(fileobj=io.BytesIO(await sandbox.archive())) as tar:
        names = {name.removeprefix("./") for name in tar.getnames()}
        assert "results/out.json" in names
        member = tar.extractfile("./results/out.json")
        assert member is not None and member.read() == b"{}"


async def test_git_diff_is_none_outside_a_repo_and_lists_changes_inside(sandbox: Sandbox) -> None:
    assert await sandbox.git_diff() is None
    await sandbox.write_file("tracked.txt", b"old\n")
    setup = await sandbox.exec(
        "git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init"
    )
    assert setup.exit_code == 0, setup.stderr_text
    await sandbox.write_file("tracked.txt", b"new\n")
    await sandbox.write_file("untracked.txt", b"fresh\n")
    diff = await sandbox.git_diff()
    assert diff is not None
    assert "-old" in diff and "+new" in diff and "+fresh" in diff
    # the repository's own index is untouched
    assert "untracked.txt" in (await sandbox.exec("git status --porcelain")).stdout_text.split("?? ")[-1]
