"""What a run may ask of its sandbox, as the operator allows it.

A run's sandbox shape comes from the runbook's front matter (third-party text), the
collection's defaults and the request. None of them may widen what the operator
allows: egress only to the listed Docker networks (never `host` or another
container's namespace unless listed), only configured images (a `snapshot` name maps
to one), and CPU and memory within the caps.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.errors import Unprocessable
from gateway.settings import Settings
from sandboxes import SandboxSpec


def apply_sandbox_policy(spec: SandboxSpec, settings: Settings) -> SandboxSpec:
    """The spec with its image resolved, or a 422 naming what is not allowed."""
    if spec.network != "none" and spec.network not in settings.sandbox_networks:
        allowed = ["none", *settings.sandbox_networks]
        raise Unprocessable(
            f"Sandbox network {spec.network!r} is not allowed on this gateway (allowed: {', '.join(allowed)}); "
            "an operator allows networks with JETTY_SANDBOX_NETWORKS",
            code="sandbox_network_not_allowed",
            param="jetty.sandbox.network",
            details={"allowed": allowed},
        )
    image = spec.image
    if image is not None and image != settings.sandbox_image:
        if image in settings.sandbox_images:
            image = settings.sandbox_images[image]
        elif image not in settings.sandbox_images.values():
            allowed = [settings.sandbox_image, *settings.sandbox_images]
            raise Unprocessable(
                f"Sandbox image {image!r} is not configured on this gateway (allowed: {', '.join(allowed)}); "
                "an operator adds images with JETTY_SANDBOX_IMAGES",
                code="sandbox_image_not_allowed",
                param="jetty.sandbox.image",
                details={"allowed": allowed},
            )
    if spec.cpus > settings.sandbox_max_cpus:
        raise Unprocessable(
            f"Sandbox cpu {spec.cpus:g} is above this gateway's limit of {settings.sandbox_max_cpus:g}",
            code="sandbox_limit_exceeded",
            param="jetty.sandbox.cpu",
        )
    if spec.memory_mb > settings.sandbox_max_memory_mb:
        raise Unprocessable(
            f"Sandbox memory {spec.memory_mb} MB is above this gateway's limit of {settings.sandbox_max_memory_mb} MB",
            code="sandbox_limit_exceeded",
            param="jetty.sandbox.memory",
        )
    return replace(spec, image=image)
