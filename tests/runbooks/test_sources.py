"""Fetching runbooks: the GitHub contents API, raw URLs, file roots, and refusing private hosts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.errors import RunbookFetchFailed, UrlNotAllowed
from gateway.settings import Settings
from runbooks.format import sha256_text
from runbooks.sources import fetch_runbook
from tests.runbooks.servers import FileServer

TEXT = "---\nversion: '1.0.0'\n---\n# Hello\nSay hi.\n"


def fetch(url: str, **settings: object) -> object:
    return asyncio.run(fetch_runbook(url, Settings(**settings)))  # type: ignore[arg-type]


def test_github_blob_url_is_read_through_the_contents_api_with_the_token() -> None:
    with FileServer({"acme/private@main:runbooks/hello/RUNBOOK.md": TEXT}, token="ghp_test") as api:
        source = fetch(
            "https://github.com/acme/private/blob/main/runbooks/hello/RUNBOOK.md",
            github_api_url=api.url,
            github_token="ghp_test",
            allow_private_urls=True,
        )
        assert source.text == TEXT and source.sha256 == sha256_text(TEXT)
        assert source.default_name == "hello"
        assert api.requests[-1]["query"] == {"ref": "main"}
        with pytest.raises(RunbookFetchFailed) as caught:
            fetch(
                "https://github.com/acme/private/blob/main/nope.md",
                github_api_url=api.url,
                github_token="ghp_test",
            )
        assert caught.value.details["status"] == 404


def test_raw_url_follows_redirects_and_private_hosts_are_refused() -> None:
    with FileServer({"/rb.md": TEXT}) as raw:
        raw.redirects["/old.md"] = "/rb.md"
        assert fetch(f"{raw.url}/old.md", allow_private_urls=True).text == TEXT
        with pytest.raises(UrlNotAllowed) as caught:
            fetch(f"{raw.url}/rb.md")
        assert caught.value.status == 400
    for url in (
        "https://127.0.0.1/x.md",
        "https://[::1]/x.md",
        "https://169.254.169.254/latest",
        "https://10.1.2.3/r.md",
        "https://localhost/r.md",
    ):
        with pytest.raises(UrlNotAllowed):
            fetch(url)
    with pytest.raises(UrlNotAllowed):
        fetch("ftp://example.com/r.md")


def test_file_urls_only_under_a_root_and_symlinks_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (root / "team" / "RUNBOOK.md").write_text(TEXT)
    outside = tmp_path / "secret.md"
    outside.write_text("outside")
    os.symlink(outside, root / "team" / "link.md")
    roots = (str(root),)
    assert fetch(f"file://{root}/team/RUNBOOK.md", runbook_roots=roots).text == TEXT
    with pytest.raises(UrlNotAllowed):
        fetch(f"file://{root}/team/link.md", runbook_roots=roots)
    with pytest.raises(UrlNotAllowed):
        fetch(f"file://{root}/team/../../secret.md", runbook_roots=roots)
    with pytest.raises(UrlNotAllowed):
        fetch(f"file://{root}/team/RUNBOOK.md")  # no roots configured
    with pytest.raises(RunbookFetchFailed):
        fetch(f"file://{root}/team/missing.md", runbook_roots=roots)
