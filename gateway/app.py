"""The composition root: builds the Litestar app from every slice and runs their services.

Only this module knows every slice. Each background service starts in the lifespan
in dependency order and stops in reverse, so a graceful shutdown (SIGTERM) lets the
later ones (recording, delivery) flush what they hold.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import __version__
from gateway.auth import PUBLIC_PATHS, Authenticator, BearerAuthMiddleware
from gateway.errors import handle_exception
from gateway.events import EventBus
from gateway.keys.routes import KeysController
from gateway.logs import configure_logging
from gateway.passthrough import (
    CompletionsFront,
    chat_completions,
    list_models,
    passthrough_lifespan,
)
from gateway.secrets_store import load_admin_token, load_secret_key
from gateway.settings import Settings
from gateway.status import read_status, register_status_count
from gateway.storage import Database, upgrade_schema
from gateway.trajectories import TrajectoriesController, TrajectoryRecorder
from runbooks.lifespan import runbooks_lifespan
from runbooks.routes import ROUTE_HANDLERS as runbook_routes

log = logging.getLogger(__name__)


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    db: Database = state.db
    async with db.session() as session:
        yield session


def _ensure_private_dir(path: Path) -> None:
    """The data dir is ours alone: it holds the database (request bodies, encrypted secrets) and tokens."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077 and path.stat().st_uid == os.geteuid():
        path.chmod(0o700)
        log.warning("data dir was readable by others, now 0700 path=%s previous_mode=%o", path, mode)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the gateway app from `settings` (read from the environment when omitted)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_json)
    _ensure_private_dir(settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        async with AsyncExitStack() as stack:
            url = settings.resolved_database_url
            await anyio.to_thread.run_sync(upgrade_schema, url)
            db = Database(url)
            stack.push_async_callback(db.dispose)
            state.db = db

            authenticator = Authenticator(
                db,
                load_admin_token(settings.data_dir, settings.admin_token),
                sync_interval_s=settings.key_sync_interval_s,
            )
            await authenticator.start()
            stack.push_async_callback(authenticator.stop)
            state.authenticator = authenticator
            state.secret_key = load_secret_key(settings.data_dir, settings.secret_key)

            events = EventBus()
            state.events = events
            recorder = TrajectoryRecorder(db, events)
            await recorder.start()
            stack.push_async_callback(recorder.stop)
            state.recorder = recorder
            register_status_count(state, "recording_queue_depth", lambda: recorder.queue_depth)
            await stack.enter_async_context(passthrough_lifespan(state, settings))
            await stack.enter_async_context(runbooks_lifespan(state, settings))

            log.info(
                "gateway ready version=%s database=%s", __version__, "sqlite" if db.is_sqlite else "postgresql"
            )
            yield
            log.info("gateway shutting down")

    state = State(
        {
            "settings": settings,
            "started_monotonic": time.monotonic(),
            "status_counts": {},
        }
    )
    route_handlers: list[Any] = [read_status, KeysController, TrajectoriesController, chat_completions, list_models]
    route_handlers += runbook_routes

    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        state=state,
        dependencies={
            "db_session": Provide(provide_db_session),
        },
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=[f"^{p}" for p in PUBLIC_PATHS])],
        exception_handlers={Exception: handle_exception},
        openapi_config=OpenAPIConfig(
            title="Jetty gateway",
            version=__version__,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.asgi_handler = CompletionsFront(app, app.asgi_handler)
    return app

