"""Starting and stopping the passthrough: the model router and the upstream pool."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from litestar.datastructures import State

from gateway.providers import ModelRouter, Upstreams, load_litellm, load_models_file, load_prices
from gateway.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def passthrough_lifespan(state: State, settings: Settings) -> AsyncIterator[None]:
    """Load the models file, open the upstream connection pool; close it on the way out.

    Sets `state.model_router` and `state.upstreams`. The price table (and litellm, when
    the models file needs translation) load in the background so the first call does
    not pay for them.
    """
    models = await anyio.to_thread.run_sync(load_models_file, settings.models_file)
    router = ModelRouter(models)
    upstreams = Upstreams(settings)
    await upstreams.open()
    state.model_router = router
    state.upstreams = upstreams
    state.models_listed_since = int(time.time())
    preload = asyncio.create_task(_preload(router.needs_litellm), name="passthrough-preload")
    log.info(
        "passthrough ready models=%d deployments=%d", len(router.names()), len(router.deployments)
    )
    try:
        yield
    finally:
        preload.cancel()
        with suppress(asyncio.CancelledError):
            await preload
        await upstreams.close()


async def _preload(needs_litellm: bool) -> None:
    try:
        await anyio.to_thread.run_sync(load_prices)
        if needs_litellm:
            await load_litellm()
    except Exception as exc:  # a first call retries; nothing is lost
        log.warning("passthrough preload failed error=%s", type(exc).__name__)
