"""Engines and sessions. The request or the job runner owns the session and commits once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000
# A pooled connection idle this long is pinged before use (see make_engine).
PING_AFTER_IDLE_SECONDS = 10.0


def make_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
) -> Engine:
    """`max_overflow` (default: as many as `pool_size`) connections are opened beyond the pool
    when it is empty and closed again when returned; the server passes 0 (config.py says why)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _make_sqlite_engine(database_url)
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_recycle=1800,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )

    # SQLAlchemy's pool_pre_ping pings on every checkout: one more round trip for every
    # request and every job claim, on connections that were in use a millisecond ago. Only a
    # connection that sat idle in the pool can have been cut (a database restart, a proxy's
    # idle timeout) without anyone noticing, so only those are pinged; a failed ping makes
    # the pool replace the connection before anyone uses it.
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < ping_after_idle:
            return  # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection was cut while idle: {exc}") from exc

    return engine


def make_pooled_engine(database_url: str, pool_size: int) -> Engine:
    """The engine of a long-running process (the server, a Celery worker): `pool_size`
    connections at most, kept open, no overflow (config.Settings.db_pool_size says why)."""
    return make_engine(database_url, pool_size=pool_size, max_overflow=0)


def _make_sqlite_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself: pysqlite's own transaction handling breaks
        # SAVEPOINT and would open transactions late.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock at BEGIN: a deferred transaction that later writes can
        # fail at once with "database is locked" instead of waiting for the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine, *, notifier: Any = None) -> sessionmaker[Session]:
    """Sessions that, once they commit, tell `notifier` (the job engine) about new jobs."""
    info = {} if notifier is None else {"shvya.jobs.notifier": notifier}
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)
