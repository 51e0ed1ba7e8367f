"""Sandboxes: isolated workspaces where runbooks execute commands (DESIGN.md "Sandboxes").

Public names only; backends live in private modules.
"""

from sandboxes.errors import (
    ImageMissing,
    SandboxClosed,
    SandboxError,
    SandboxFileError,
    SandboxUnavailable,
)
from sandboxes.models import ExecResult, FileEntry, OutputChunk, SandboxSpec
from sandboxes.protocol import Sandbox, SandboxBackend, SandboxRecord
from sandboxes.service import SandboxService, make_backend, open_backend

__all__ = [
    "ExecResult",
    "FileEntry",
    "ImageMissing",
    "OutputChunk",
    "Sandbox",
    "SandboxBackend",
    "SandboxClosed",
    "SandboxError",
    "SandboxFileError",
    "SandboxRecord",
    "SandboxService",
    "SandboxSpec",
    "SandboxUnavailable",
    "make_backend",
    "open_backend",
]
