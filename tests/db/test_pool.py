"""The pool pings a connection that sat idle before handing it out (PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from shvya.db.engine import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def small_engine(postgres_schema_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_schema_url, pool_size=1, ping_after_idle=0.2)
    yield engine
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def cut(postgres_schema_url: str, pid: int) -> None:
    other = make_engine(postgres_schema_url, pool_size=1)
    try:
        with other.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        other.dispose()


def test_an_idle_connection_cut_by_the_server_is_replaced_before_use(
    small_engine: Engine, postgres_schema_url: str
) -> None:
    first = backend_pid(small_engine)
    cut(postgres_schema_url, first)  # a restart or a proxy's idle timeout, as seen by the pool
    time.sleep(0.3)
    # The pooled connection is dead; the ping finds out and the pool opens a new one, so the
    # caller never sees the error.
    assert backend_pid(small_engine) != first


def test_only_a_connection_idle_past_the_limit_is_pinged(
    small_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    ping = small_engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(small_engine.dialect, "do_ping", counted)
    for _ in range(5):
        backend_pid(small_engine)  # in steady use: no ping, no extra round trip
    assert pings == []
    time.sleep(0.3)
    backend_pid(small_engine)
    assert len(pings) == 1


def test_a_worker_connection_commits_without_waiting_and_goes_back_to_the_pool_durable(
    postgres_schema_url: str,
) -> None:
    from shvya.jobs.engines.embedded import close_worker_connection, open_worker_connection

    engine = make_engine(postgres_schema_url, pool_size=1, max_overflow=0)
    try:
        worker = open_worker_connection(engine)
        pid = worker.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert worker.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
        close_worker_connection(worker)
        # the pool's one connection: a handler's session that gets it commits durably again
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            assert connection.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    finally:
        engine.dispose()
