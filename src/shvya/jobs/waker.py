"""PostgreSQL NOTIFY after commit: workers in other processes hear at once that a job is due.

The NOTIFY is sent after the transaction that wrote the jobs has committed, never inside it.
Inside it, PostgreSQL takes its database-wide notify lock during that transaction's commit,
WAL flush included, so every transaction that enqueues a job commits one after another: the
inbound path lost a quarter of its throughput to that lock (bench/RESULTS.md, ingest).

Here each process has one waker per database: a thread with its own autocommit connection
(synchronous_commit off, so a NOTIFY holds the lock for microseconds, not a disk flush) that
sends one NOTIFY per lane for all the pokes that arrived while the previous one was on its
way. A lost NOTIFY (the connection broke) costs latency, not jobs: workers also poll.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable

import psycopg
from sqlalchemy import Engine, event

logger = logging.getLogger(__name__)

PG_CHANNEL = "shvya_jobs"
# An idle waker closes its connection and its thread; the next poke starts them again.
IDLE_SECONDS = 2.0
_NOTIFY = "SELECT pg_notify(%s, lane) FROM unnest(%s::text[]) AS lane"


def libpq_dsn(engine: Engine) -> str:
    """The engine's database as a libpq connection string (for psycopg used directly)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgWaker:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def poke(self, lanes: Iterable[str]) -> None:
        """Ask for a NOTIFY of each lane soon; returns at once."""
        with self._cond:
            if self._closed:
                return
            self._pending.update(lanes)
            # (A thread that is not alive was inherited through a fork.)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="shvya-waker", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _take(self) -> list[str] | None:
        """The lanes to announce, or None once idle (the thread then ends)."""
        with self._cond:
            if not self._pending and not self._closed:
                self._cond.wait(IDLE_SECONDS)
            if not self._pending or self._closed:
                self._thread = None
                return None
            lanes = sorted(self._pending)
            self._pending.clear()
            return lanes

    def _run(self) -> None:
        connection: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while (lanes := self._take()) is not None:
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
                        connection.execute("SET synchronous_commit = off")
                    connection.execute(_NOTIFY, (PG_CHANNEL, lanes))
                except psycopg.Error as exc:
                    logger.warning("jobs.notify_failed", extra={"error": str(exc)[:200]})
                    if connection is not None:
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()


_wakers: weakref.WeakKeyDictionary[Engine, PgWaker] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def waker_for(engine: Engine) -> PgWaker:
    with _lock:
        waker = _wakers.get(engine)
        if waker is None:
            waker = _wakers[engine] = PgWaker(libpq_dsn(engine))
            # A disposed engine's waker stops: no connection outlives the engine's pool.
            event.listen(engine, "engine_disposed", lambda _engine: waker.close())
        return waker
