"""The embedded engine: worker threads inside `shvya serve` or `shvya worker`.

At least one thread takes only P1 jobs, so a flood of P2 work cannot delay a reply to a live
lead. Idle threads sleep until woken: in-process by the after-commit hook of the session that
enqueued, across processes by PostgreSQL NOTIFY, and otherwise by a short poll (SQLite
written by another process, retries coming due).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.clock import Clock
from shvya.config import Settings
from shvya.db.engine import make_session_factory
from shvya.jobs.runner import Handler, LeaseKeeper, run_claimed_job
from shvya.jobs.service import (
    P1_MIN_PRIORITY,
    ClaimedJob,
    ClaimRequest,
    EnqueuedJob,
    Lane,
    claim_jobs,
    reap_expired_leases,
    release_job,
)
from shvya.jobs.waker import PG_CHANNEL, libpq_dsn

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_connection(engine: Engine) -> Any:
    """A connection for one claim statement: autocommit on PostgreSQL (one round trip, no
    transaction around it); SQLite's BEGIN IMMEDIATE transaction otherwise."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return engine.begin()


def open_worker_connection(engine: Engine) -> Connection:
    """A worker thread's own autocommit connection (PostgreSQL), kept while the thread runs,
    for its claims and for the completions that need no transaction.

    Its commits do not wait for the WAL flush (`synchronous_commit = off`; about 0.15 ms a
    statement here, bench/RESULTS.md). What a crash of the database server (not of a worker:
    the server has the commit by then) may lose this way is what at-least-once delivery
    allows anyway: a lost claim leaves its job queued for the next claim; a lost completion
    of a handler that wrote nothing runs that job again, as a kill between a side effect and
    its commit does, and side effects are keyed on stable ids. A handler's own work, and
    the completion that goes with it, commit durably in the handler's transaction (whose
    flush also covers every commit before it).
    """
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.exec_driver_sql("SET synchronous_commit = off")
    except Exception:
        conn.invalidate()
        conn.close()
        raise
    return conn


def close_worker_connection(conn: Connection) -> None:
    """Back to the pool with durable commits again (anyone may check it out next), or
    discarded when it cannot be reset."""
    if conn.closed:
        return
    if not conn.invalidated:
        try:
            conn.exec_driver_sql("RESET synchronous_commit")
        except Exception:
            conn.invalidate()
    conn.close()


class _Lane:
    def __init__(self, name: str, min_priority: int | None) -> None:
        self.name = name
        self.min_priority = min_priority
        self.wake = threading.Event()


class EmbeddedWorker:
    """Implements JobNotifier: the app's and the handlers' sessions tell it about new jobs."""

    def __init__(
        self,
        engine: Engine,
        *,
        handlers: Mapping[str, Handler],
        clock: Clock,
        settings: Settings,
        threads: int | None = None,
        p1_threads: int | None = None,
    ) -> None:
        self.engine = engine
        self.handlers = handlers
        self.clock = clock
        self.settings = settings
        self.name = worker_name()
        self.session_factory: sessionmaker[Session] = make_session_factory(engine, notifier=self)
        self.leases = LeaseKeeper(engine, clock=clock, lease_seconds=settings.job_lease_seconds)
        general = settings.worker_threads if threads is None else threads
        p1_only = settings.worker_p1_threads if p1_threads is None else p1_threads
        self._lanes = [_Lane(f"p1-{i}", P1_MIN_PRIORITY) for i in range(p1_only)] + [
            _Lane(f"any-{i}", None) for i in range(general)
        ]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- JobNotifier ---

    def jobs_committed(self, jobs: Sequence[EnqueuedJob]) -> None:
        now = self.clock.now()
        lanes = {job.lane for job in jobs if job.run_at <= now}
        self._wake(lanes)

    def _wake(self, lanes: set[Lane] | set[str]) -> None:
        for lane in self._lanes:
            if Lane.p1 in lanes or lane.min_priority is None:
                lane.wake.set()

    # --- running ---

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        for lane in self._lanes:
            thread = threading.Thread(
                target=self._work, args=(lane,), name=f"shvya-worker-{lane.name}", daemon=True
            )
            self._threads.append(thread)
        self._threads.append(
            threading.Thread(target=self._maintain, name="shvya-worker-leases", daemon=True)
        )
        if self.engine.dialect.name == "postgresql":
            self._threads.append(
                threading.Thread(target=self._listen, name="shvya-worker-listen", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        logger.info(
            "worker.started",
            extra={"worker": self.name, "threads": len(self._lanes), "engine": "embedded"},
        )

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming, let running jobs finish within the grace period, give back the rest."""
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self._stopping.set()
        for lane in self._lanes:
            lane.wake.set()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        released = self.leases.release_all()
        self._threads = []
        logger.info("worker.stopped", extra={"worker": self.name, "released": released})

    def run_until_idle(self, *, max_jobs: int = 10_000) -> int:
        """Claim and run due jobs in this thread until none is due (tests, `--once`), the way
        a worker thread does: on PostgreSQL with its own autocommit connection, each
        completion claiming the next job."""
        postgresql = self.engine.dialect.name == "postgresql"
        request = self._request(None, limit=1)
        ran = 0
        held = open_worker_connection(self.engine) if postgresql else None
        try:
            jobs: list[ClaimedJob] = []
            while ran < max_jobs:
                if held is not None:
                    held = self._usable(held)
                if not jobs:
                    jobs = self._claim(request, held)
                    if not jobs:
                        return ran
                more = postgresql and ran + 1 < max_jobs
                jobs = self._run(jobs.pop(), autocommit=held, then_claim=request if more else None)
                ran += 1
            return ran
        finally:
            if held is not None:
                close_worker_connection(held)

    def _request(self, min_priority: int | None, *, limit: int) -> ClaimRequest:
        """What the calling thread claims, as itself; nothing more once the worker stops."""
        return ClaimRequest(
            worker_id=f"{self.name}:{threading.current_thread().name}",
            lease_seconds=self.settings.job_lease_seconds,
            limit=limit,
            min_priority=min_priority,
            stop=self._stopping,
        )

    def _claim(self, request: ClaimRequest, held: Connection | None) -> list[ClaimedJob]:
        """Claim on `held` (a lane's own autocommit connection on PostgreSQL: one round trip,
        no pool checkout) or on a connection of its own."""
        with (
            contextlib.nullcontext(held)
            if held is not None
            else claim_connection(self.engine) as conn
        ):
            assert isinstance(conn, Connection)
            jobs = claim_jobs(
                conn,
                worker_id=request.worker_id,
                now=self.clock.now(),
                lease_seconds=request.lease_seconds,
                limit=request.limit,
                min_priority=request.min_priority,
            )
        for job in jobs:
            self.leases.add(job)
        return jobs

    def _run(
        self,
        job: ClaimedJob,
        autocommit: Connection | None = None,
        then_claim: ClaimRequest | None = None,
    ) -> list[ClaimedJob]:
        """Run one job; returns the jobs claimed along with its completion (`then_claim`)."""
        try:
            run = run_claimed_job(
                job,
                session_factory=self.session_factory,
                handlers=self.handlers,
                clock=self.clock,
                settings=self.settings,
                autocommit=autocommit,
                then_claim=then_claim,
            )
        finally:
            self.leases.discard(job)
        for claimed in run.claimed:
            self.leases.add(claimed)
        return run.claimed

    def _work(self, lane: _Lane) -> None:
        # PostgreSQL: each thread keeps one autocommit connection for its claims and for the
        # completions that need no transaction, and a busy thread claims its next jobs in the
        # statement that completes the last one (one round trip per job, not two).
        postgresql = self.engine.dialect.name == "postgresql"
        held: Connection | None = None
        request = self._request(lane.min_priority, limit=self.settings.job_claim_batch)
        jobs: list[ClaimedJob] = []
        try:
            while not self._stopping.is_set():
                try:
                    if postgresql:
                        held = self._usable(held)
                    if not jobs:
                        lane.wake.clear()
                        jobs = self._claim(request, held)
                        if not jobs:
                            lane.wake.wait(self.settings.job_poll_seconds)
                            continue
                    jobs = self._run_claimed(jobs, held, request if postgresql else None)
                except Exception:
                    # A failed claim, or a job whose outcome could not be written (the
                    # database went away): such a job's lease runs out and it runs again.
                    logger.exception("worker.failed", extra={"worker": self.name})
                    if held is not None:
                        # The server may have gone away: never reuse a broken connection.
                        held.invalidate()
                        held.close()
                        held = None
                    self._give_back_quietly(jobs)
                    jobs = []
                    self._stopping.wait(self.settings.job_poll_seconds)
        finally:
            self._give_back_quietly(jobs)
            if held is not None:
                close_worker_connection(held)

    def _give_back_quietly(self, jobs: Sequence[ClaimedJob]) -> None:
        """Claimed jobs this thread will not run: back to the queue now, or, if the database
        cannot be reached, when their leases run out."""
        try:
            self._give_back(jobs)
        except Exception:
            logger.exception("worker.give_back_failed", extra={"jobs": len(jobs)})
            for job in jobs:
                self.leases.discard(job)  # no longer renewed: its lease runs out

    def _run_claimed(
        self, jobs: list[ClaimedJob], held: Connection | None, request: ClaimRequest | None
    ) -> list[ClaimedJob]:
        """Run claimed jobs in order, taking each off `jobs` as it starts; the last one's
        completion makes the next claim. Returns the jobs that claim took."""
        following: list[ClaimedJob] = []
        while jobs:
            if self._stopping.is_set():
                self._give_back(jobs)
                jobs.clear()
                return []
            job = jobs.pop(0)
            if held is not None and held.invalidated:
                held = None  # cut under the last job: the session's pooled connection serves
            following = self._run(job, autocommit=held, then_claim=None if jobs else request)
        return following

    def _usable(self, held: Connection | None) -> Connection:
        """The thread's worker connection, new if it has none or its last one was cut."""
        if held is not None and not held.invalidated:
            return held
        if held is not None:
            close_worker_connection(held)
        return open_worker_connection(self.engine)

    def _give_back(self, jobs: Sequence[ClaimedJob]) -> None:
        for job in jobs:
            with self.engine.begin() as conn:
                release_job(conn, job=job)
            self.leases.discard(job)

    def _maintain(self) -> None:
        """Heartbeat the leases of running jobs; requeue the jobs of workers that died."""
        interval = max(0.5, self.settings.job_lease_seconds / 3)
        while not self._stopping.wait(interval):
            try:
                self.leases.heartbeat()
                with self.session_factory() as session:
                    reap_expired_leases(session, now=self.clock.now())
                    session.commit()
            except Exception:
                logger.exception("worker.maintenance_failed", extra={"worker": self.name})

    def _listen(self) -> None:
        """Wake the lanes on NOTIFY from any process that enqueued on this database."""
        dsn = libpq_dsn(self.engine)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {PG_CHANNEL}")
                    while not self._stopping.is_set():
                        # Wake on each notification as it arrives: notifies() only returns
                        # after its timeout, and a P1 job must not wait for that.
                        for notice in conn.notifies(timeout=1.0):
                            self._wake({notice.payload})
            except psycopg.Error:
                logger.warning("worker.listen_failed", extra={"worker": self.name})
                self._stopping.wait(self.settings.job_poll_seconds)
