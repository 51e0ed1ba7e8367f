"""Shared fixtures: a real PostgreSQL server and real gateway processes.

Storage-facing tests use the `gateway` fixture, parametrised over SQLite and
PostgreSQL, so every behaviour is checked on both databases.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.postgres import PostgresServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _new_database(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "sqlite":
        return None  # the embedded default: a SQLite file in the gateway's data dir
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def database_url(database_kind: str, request: pytest.FixtureRequest) -> str | None:
    """A fresh database of the parametrised kind (None: the embedded SQLite file)."""
    return _new_database(database_kind, request)


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways with extra settings; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(database_url: str | None = None, env: dict[str, str] | None = None, **kwargs: object) -> GatewayProcess:
        gateway = GatewayProcess(database_url=database_url, env=env, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(database_kind: str, request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    """A running gateway shared by a module's tests, on SQLite and on PostgreSQL."""
    process = GatewayProcess(database_url=_new_database(database_kind, request)).start()
    yield process
    process.stop()
