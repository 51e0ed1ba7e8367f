"""Sandbox errors: plain exceptions, mapped to HTTP (if ever) at the gateway edge."""

from __future__ import annotations


class SandboxError(Exception):
    """Anything that went wrong creating, using or destroying a sandbox."""


class SandboxUnavailable(SandboxError):
    """No backend can run here (engine unreachable, bwrap missing and unisolated not allowed)."""


class ImageMissing(SandboxError):
    """The sandbox image is not on this engine; the message says how to build it."""

    def __init__(self, image: str) -> None:
        super().__init__(f"sandbox image {image!r} is not present on this Docker engine; build it with: jetty sandbox build-image")
        self.image = image


class SandboxClosed(SandboxError):
    """The sandbox was destroyed (or its lifetime ran out) and cannot be used."""


class SandboxFileError(SandboxError):
    """A file operation failed inside the sandbox (missing file, a directory, permission)."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind
