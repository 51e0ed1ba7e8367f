"""Where runbooks come from: GitHub blob URLs, raw https URLs, `file://` under a root.

A GitHub blob URL is read through the contents API (`Accept:
application/vnd.github.raw`) with `JETTY_GITHUB_TOKEN`, so private repositories and
GitHub Enterprise (`JETTY_GITHUB_API_URL`) work. Every other URL is fetched
directly, after checking that every address its host resolves to is public (and
again at each redirect), unless `JETTY_ALLOW_PRIVATE_URLS=1`: a runbook URL comes
from a client and must not reach the gateway's own network.

The text is pinned by its SHA-256, stored with the trajectory, so a replay runs
exactly the runbook the first run ran.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import anyio
import httpx

from gateway import __version__
from gateway.errors import RunbookFetchFailed, UrlNotAllowed
from gateway.settings import Settings
from runbooks.format import MAX_RUNBOOK_BYTES, sha256_text

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(15.0, connect=5.0)
MAX_REDIRECTS = 5
_GITHUB_HOSTS = ("github.com", "www.github.com")


@dataclass(frozen=True, slots=True)
class RunbookSource:
    """A fetched runbook: where it came from, its text and the hash that pins it."""

    url: str
    text: str
    sha256: str

    @property
    def default_name(self) -> str:
        path = urlsplit(self.url).path.rstrip("/")
        parts = [p for p in path.split("/") if p]
        if not parts:
            return "runbook"
        if parts[-1].lower() in ("runbook.md", "readme.md") and len(parts) > 1:
            return unquote(parts[-2])
        return unquote(parts[-1]).rsplit(".", 1)[0] or "runbook"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def check_public_url(url: str, settings: Settings) -> None:
    """Refuse a URL whose host is, or resolves to, a private/loopback/link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UrlNotAllowed(
            f"Unsupported runbook URL scheme {parts.scheme!r}", param="jetty.runbook_url"
        )
    if parts.scheme == "http" and not settings.allow_private_urls:
        raise UrlNotAllowed("Runbook URLs must use https", param="jetty.runbook_url")
    host = parts.hostname
    if not host:
        raise UrlNotAllowed("Runbook URL has no host", param="jetty.runbook_url")
    if settings.allow_private_urls:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or 443, type=socket.SOCK_STREAM
        )
    except OSError:
        raise RunbookFetchFailed(
            f"Cannot resolve runbook host {host!r}", param="jetty.runbook_url"
        ) from None
    addresses = {str(info[4][0]) for info in infos}
    blocked = sorted(a for a in addresses if not _is_public(a))
    if blocked or not addresses:
        raise UrlNotAllowed(
            f"Runbook host {host!r} resolves to a private, loopback or link-local address",
            param="jetty.runbook_url",
            details={"host": host, "addresses": blocked},
        )


def _github_blob(url: str) -> tuple[str, str, str, str] | None:
    """(owner, repo, ref, path) of a github.com blob URL or a raw.githubusercontent.com URL."""
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if parts.hostname in _GITHUB_HOSTS and len(segments) >= 5 and segments[2] in ("blob", "raw"):
        return segments[0], segments[1], segments[3], "/".join(segments[4:])
    if parts.hostname == "raw.githubusercontent.com" and len(segments) >= 4:
        return segments[0], segments[1], segments[2], "/".join(segments[3:])
    return None


async def _read_capped(response: httpx.Response, url: str) -> str:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > MAX_RUNBOOK_BYTES:
            raise RunbookFetchFailed(
                f"Runbook at {url} is larger than {MAX_RUNBOOK_BYTES} bytes",
                param="jetty.runbook_url",
            )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise RunbookFetchFailed(
            f"Runbook at {url} is not UTF-8 text", param="jetty.runbook_url"
        ) from None


def _fetch_failed(url: str, response: httpx.Response) -> RunbookFetchFailed:
    hint = (
        " (is the repository private? set JETTY_GITHUB_TOKEN)"
        if response.status_code == 404
        else ""
    )
    return RunbookFetchFailed(
        f"Fetching the runbook at {url} failed with HTTP {response.status_code}{hint}",
        param="jetty.runbook_url",
        details={"url": url, "status": response.status_code},
    )


async def _fetch_github(url: str, blob: tuple[str, str, str, str], settings: Settings) -> str:
    owner, repo, ref, path = blob
    api = f"{settings.github_api_url}/repos/{quote(owner)}/{quote(repo)}/contents/{quote(path)}"
    headers = {
        "Accept": "application/vnd.github.raw",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": f"jetty-gateway/{__version__}",
    }
    if settings.github_token:
        headers["Authorization"] = f"Bearer {settings.github_token}"
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", api, params={"ref": ref}, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise _fetch_failed(url, response)
            return await _read_capped(response, url)
    except httpx.HTTPError as exc:
        raise RunbookFetchFailed(
            f"Cannot reach the GitHub API for {url}: {type(exc).__name__}",
            param="jetty.runbook_url",
        ) from None


async def _fetch_https(url: str, settings: Settings) -> str:
    current = url
    headers = {
        "User-Agent": f"jetty-gateway/{__version__}",
        "Accept": "text/markdown, text/plain, */*",
    }
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_public_url(current, settings)
            try:
                async with client.stream("GET", current, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise _fetch_failed(url, response)
                    return await _read_capped(response, url)
            except httpx.HTTPError as exc:
                raise RunbookFetchFailed(
                    f"Cannot fetch the runbook at {url}: {type(exc).__name__}",
                    param="jetty.runbook_url",
                ) from None
    raise RunbookFetchFailed(f"Too many redirects fetching {url}", param="jetty.runbook_url")


def resolve_file_url(url: str, settings: Settings) -> Path:
    """The real path of a `file://` URL, refused unless it lies under a configured root."""
    if not settings.runbook_roots:
        raise UrlNotAllowed(
            "file:// runbooks are disabled (set JETTY_RUNBOOK_ROOTS)", param="jetty.runbook_url"
        )
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UrlNotAllowed("file:// URLs must name a local path", param="jetty.runbook_url")
    raw = unquote(parts.path)
    if ".." in Path(raw).parts:
        raise UrlNotAllowed("file:// paths may not contain `..`", param="jetty.runbook_url")
    try:
        real = Path(raw).resolve(strict=True)  # follows symlinks: the target must be under a root
    except (OSError, RuntimeError):
        raise RunbookFetchFailed(f"No runbook file at {raw}", param="jetty.runbook_url") from None
    for root in settings.runbook_roots:
        if real.is_relative_to(Path(root).resolve()):
            return real
    raise UrlNotAllowed(f"{raw} is not under an allowed runbook root", param="jetty.runbook_url")


async def fetch_runbook(url: str, settings: Settings) -> RunbookSource:
    """Fetch a runbook's text from `url` with every rule above; never follows a refused hop."""
    url = url.strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        path = resolve_file_url(url, settings)
        size = path.stat().st_size
        if size > MAX_RUNBOOK_BYTES:
            raise RunbookFetchFailed(f"Runbook at {url} is larger than {MAX_RUNBOOK_BYTES} bytes")
        try:
            text = await anyio.to_thread.run_sync(path.read_text, "utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RunbookFetchFailed(f"Cannot read {url}: {type(exc).__name__}") from None
    elif scheme in ("https", "http"):
        blob = _github_blob(url)
        text = await (_fetch_github(url, blob, settings) if blob else _fetch_https(url, settings))
    else:
        raise UrlNotAllowed(
            f"Unsupported runbook URL scheme {scheme!r} (use https:// or file://)",
            param="jetty.runbook_url",
        )
    log.info("runbook fetched url_host=%s bytes=%d", urlsplit(url).hostname or "file", len(text))
    return RunbookSource(url=url, text=text, sha256=sha256_text(text))
