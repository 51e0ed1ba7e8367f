"""Model routing: a public model name → the deployments to try, in order.

Names come from the models file; any other `provider/model` litellm knows is routed
with the provider's usual environment variables, as `jetty serve` promises with no
configuration. Several deployments under one name share the load (round-robin or
least-busy); the order returned is also the fallback order.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping

from gateway.errors import ModelNotFound
from gateway.providers._deployments import (
    OPENAI_COMPATIBLE,
    Deployment,
    ModelsFile,
    ModelsFileError,
    build_deployment,
    split_provider,
)
from gateway.providers._prices import known_providers, price_entry

log = logging.getLogger(__name__)

MAX_DYNAMIC_ROUTES = 1024
LEAST_BUSY = "least-busy"


class ModelRouter:
    """Resolves model names to deployments; holds no per-request state but counters."""

    def __init__(self, models: ModelsFile, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._routes: dict[str, list[Deployment]] = {}
        for deployment in models.deployments:
            self._routes.setdefault(deployment.name, []).append(deployment)
        self._least_busy = models.routing_strategy == LEAST_BUSY
        self._turns = {name: itertools.count() for name in self._routes}
        self._dynamic: dict[str, list[Deployment]] = {}

    def names(self) -> list[str]:
        """Public model names from the models file, in file order."""
        return list(self._routes)

    def owners(self) -> dict[str, str]:
        """Each public model name with the provider of its first deployment (`owned_by`)."""
        return {name: group[0].provider for name, group in self._routes.items()}

    @property
    def deployments(self) -> list[Deployment]:
        return [d for group in self._routes.values() for d in group]

    @property
    def needs_litellm(self) -> bool:
        """Whether some configured deployment is called through litellm (worth preloading)."""
        return any(not d.is_openai_compatible for d in self.deployments)

    def route(self, name: str) -> list[Deployment]:
        """The deployments to try for `name`, best first; raise 404 `model_not_found`."""
        group = self._routes.get(name)
        if group is None:
            group = self._dynamic.get(name) or self._route_by_provider(name)
            return group
        if len(group) == 1:
            return group
        if self._least_busy:
            return sorted(group, key=lambda d: d.in_flight)
        start = next(self._turns[name]) % len(group)
        return group[start:] + group[:start]

    def _route_by_provider(self, name: str) -> list[Deployment]:
        provider, _ = split_provider(name)
        if provider is None:
            entry = price_entry(name)
            if entry is None or entry.get("mode") not in {None, "chat"}:
                raise _not_found(name)
            provider = str(entry.get("litellm_provider") or "openai")
            model = name if provider == "openai" else f"{provider}/{name}"
        elif provider in OPENAI_COMPATIBLE or provider in known_providers():
            model = name
        else:
            raise _not_found(name)
        compat = OPENAI_COMPATIBLE.get(provider)
        if compat is not None and compat.key_required and compat.key_env and not self._environ.get(compat.key_env):
            raise ModelNotFound(
                f"Model {name!r} is not routable: set {compat.key_env} on the gateway or add the model to the models file",
                param="model",
            )
        try:
            deployment = build_deployment(name, {"model": model}, self._environ)
        except ModelsFileError:
            raise _not_found(name) from None
        if len(self._dynamic) >= MAX_DYNAMIC_ROUTES:
            self._dynamic.pop(next(iter(self._dynamic)))
        self._dynamic[name] = [deployment]
        log.info("routing model by provider model=%s provider=%s", name, deployment.provider)
        return self._dynamic[name]


def _not_found(name: str) -> ModelNotFound:
    return ModelNotFound(
        f"The model {name!r} does not exist or is not routable by this gateway (see GET /v1/models)",
        param="model",
    )
