"""Shared fixtures: a real Postfix, a real PostgreSQL, the real gateway on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import RunningGateway, ScriptedMTA, base_config, write_config
from tests.support.postfix import PostfixInstance
from tests.support.postgres import PostgresServer

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


@pytest.fixture(scope="session")
def corpora() -> Path:
    assert CORPORA.is_dir(), f"shared corpora not found at {CORPORA}"
    return CORPORA


@pytest.fixture(scope="session")
def postfix() -> Iterator[PostfixInstance]:
    instance = PostfixInstance().start()
    yield instance
    instance.cleanup()


@pytest.fixture
def postfix_clean(postfix: PostfixInstance) -> PostfixInstance:
    postfix.clear()
    return postfix


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresServer().start()
    yield server
    server.stop()


_db_counter = 0


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    global _db_counter
    _db_counter += 1
    if isinstance(postgres_server, str):
        import psycopg

        name = f"gw_test_{os.getpid()}_{_db_counter}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return postgres_server.rsplit("/", 1)[0] + "/" + name
    return postgres_server.create_database(f"gw_test_{_db_counter}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of each engine: a SQLite file and a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def scripted_mta() -> Iterator[Callable[..., ScriptedMTA]]:
    started: list[ScriptedMTA] = []

    def make(behaviour: str = "accept") -> ScriptedMTA:
        mta = ScriptedMTA(behaviour).start()
        started.append(mta)
        return mta

    yield make
    for mta in started:
        mta.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """gateway(downstream_port, **config_overrides) -> a running gateway."""
    running: list[RunningGateway] = []

    def start(downstream_port: int, **overrides: Any) -> RunningGateway:
        config = base_config(tmp_path, downstream_port, **overrides)
        gw = RunningGateway(write_config(tmp_path, config))
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()
