"""Running one claimed job: its handler in one unit of work, then the outcome on the row.

Both engines (embedded threads, Celery workers) run jobs through here, so retries, deferral,
dead-lettering and lease fencing behave the same whichever engine claimed the job.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shvya.clock import Clock
from shvya.config import Settings
from shvya.db.phases import Phases, has_work, run_phases
from shvya.jobs.models import JobStatus
from shvya.jobs.service import (
    ClaimedJob,
    ClaimRequest,
    DeferJob,
    JobOutcome,
    LeaseLost,
    PermanentJobError,
    RetryJob,
    complete_and_claim,
    complete_job,
    defer_job,
    extend_leases,
    fail_job,
    hold_lease,
    release_job,
)

logger = logging.getLogger(__name__)

# The job this thread is running, for the log records made meanwhile.
_running_job: ContextVar[ClaimedJob | None] = ContextVar("shvya_running_job", default=None)


def _stamp_running_job(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        job = _running_job.get()
        if job is not None:
            record.__dict__.update(job_id=str(job.id), job_type=job.type)
        return record

    make_record.shvya_job_stamp = True  # type: ignore[attr-defined]
    return make_record


def stamp_job_log_records() -> None:
    """Every log record made while a job runs, by any logger (ours, SQLAlchemy's, an SDK's),
    carries the job's `job_id` and `job_type` attributes. Installed once per process, by the
    runner's import: a record factory, so it holds whichever handler formats the record."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "shvya_job_stamp", False):
        logging.setLogRecordFactory(_stamp_running_job(factory))


stamp_job_log_records()


@contextmanager
def _job_logging(job: ClaimedJob) -> Iterator[None]:
    token = _running_job.set(job)
    try:
        yield
    finally:
        _running_job.reset(token)


@dataclass(frozen=True)
class JobContext:
    """What a handler gets: the job, a session it must not commit, the time, the settings."""

    session: Session
    job: ClaimedJob
    now: datetime
    clock: Clock
    settings: Settings


Outcome = Mapping[str, Any] | None
# A handler returns its outcome, or, when it calls out, yields its calls first (db/phases.py).
Handler = Callable[[JobContext], Outcome | Phases[Outcome]]


def load_handlers(reference: str) -> dict[str, Handler]:
    """The handlers a "module:function" reference returns (SHVYA_JOB_HANDLERS; by default
    shvya.handlers:default_handlers, the composition root's map). A reference, not an import,
    so that the queue depends on no domain."""
    module_name, _, function_name = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeError(
            f"SHVYA_JOB_HANDLERS={reference!r} does not name a function ({exc})"
        ) from None
    handlers: dict[str, Handler] = factory()
    return handlers


class LeaseKeeper:
    """The running jobs of one process, and the heartbeat that keeps their leases alive."""

    def __init__(self, engine: Engine, *, clock: Clock, lease_seconds: float) -> None:
        self.engine = engine
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._running: dict[uuid.UUID, ClaimedJob] = {}
        self._lock = threading.Lock()

    def add(self, job: ClaimedJob) -> None:
        with self._lock:
            self._running[job.id] = job

    def discard(self, job: ClaimedJob) -> None:
        with self._lock:
            self._running.pop(job.id, None)

    def running(self) -> list[ClaimedJob]:
        with self._lock:
            return list(self._running.values())

    def heartbeat(self) -> None:
        jobs = self.running()
        if not jobs:
            return
        with self.engine.begin() as conn:
            extend_leases(conn, jobs=jobs, now=self.clock.now(), lease_seconds=self.lease_seconds)

    def release_all(self) -> int:
        """Give back every job still running (shutdown past its grace period). Their handlers'
        late completions will find the lease gone and change nothing."""
        released = 0
        for job in self.running():
            with self.engine.begin() as conn:
                released += release_job(conn, job=job)
            self.discard(job)
        return released


@dataclass(frozen=True)
class JobRun:
    """The outcome of one run: the job's new status (None: the lease was lost meanwhile, and
    nothing of the run was kept), and the jobs claimed along with its completion."""

    status: JobStatus | None
    claimed: list[ClaimedJob] = field(default_factory=list)


def run_claimed_job(
    job: ClaimedJob,
    *,
    session_factory: sessionmaker[Session],
    handlers: Mapping[str, Handler],
    clock: Clock,
    settings: Settings,
    autocommit: Connection | None = None,
    then_claim: ClaimRequest | None = None,
) -> JobRun:
    """Run the handler (in its phases, when it calls out) and record the outcome; every line
    logged meanwhile carries the job's id and type (stamp_job_log_records)."""
    with _job_logging(job):
        return _run_claimed_job(
            job,
            session_factory=session_factory,
            handlers=handlers,
            clock=clock,
            settings=settings,
            autocommit=autocommit,
            then_claim=then_claim,
        )


def _run_claimed_job(
    job: ClaimedJob,
    *,
    session_factory: sessionmaker[Session],
    handlers: Mapping[str, Handler],
    clock: Clock,
    settings: Settings,
    autocommit: Connection | None,
    then_claim: ClaimRequest | None,
) -> JobRun:
    """Run the handler (in its phases, when it calls out) and record the outcome.

    `autocommit`, a connection in autocommit mode (PostgreSQL), records a success in one
    statement when the handler's session holds nothing to commit: it never touched the
    database, or its last phase wrote nothing. Otherwise the completion is written in the
    handler's own transaction, so its work and the job's `completed` commit together.

    `then_claim` (PostgreSQL): the worker's next claim, made by the completion's statement
    (service.complete_and_claim); the jobs it took are in the result once they are committed.
    """
    handler = handlers.get(job.type)
    session = session_factory()

    def end_prepare() -> None:
        """The phase before a call: committed only while the job is still ours."""
        if not has_work(session):
            return
        if not hold_lease(
            session, job=job, now=clock.now(), lease_seconds=settings.job_lease_seconds
        ):
            raise LeaseLost(f"job {job.id} is no longer ours")
        session.commit()

    try:
        if handler is None:
            raise PermanentJobError(
                f"no handler is registered for job type {job.type!r}", reason="no_handler"
            )
        result = handler(
            JobContext(session=session, job=job, now=clock.now(), clock=clock, settings=settings)
        )
        if isinstance(result, Generator):
            result = run_phases(result, session=session, end_prepare=end_prepare)
        outcome, now = dict(result or {}), clock.now()
        if then_claim is not None and then_claim.stopped:
            then_claim = None  # the worker began to stop while the handler ran
        in_session = autocommit is None or session.in_transaction()
        try:
            completed, claimed = _complete(
                session if in_session else autocommit, job, outcome, now, then_claim
            )
        except DBAPIError as exc:
            if in_session or not exc.connection_invalidated:
                raise
            # The worker's own connection was cut (a database restart): the handler succeeded,
            # so its outcome goes through the session's pooled connection instead, not down
            # as a failure. The worker sees its connection invalidated and opens a new one.
            in_session = True
            completed, claimed = _complete(session, job, outcome, now, then_claim)
        if completed:
            if in_session:
                session.commit()
            logger.info(
                "job.completed",
                extra={"attempt": job.attempts},
            )
            return JobRun(JobStatus.completed, claimed)
        session.rollback()
        logger.warning("job.lease_lost")
        return JobRun(None)
    except LeaseLost:
        session.rollback()
        logger.warning("job.lease_lost")
        return JobRun(None)
    except JobOutcome as raised:
        write = _outcome_writer(raised, job, clock)
        if raised.keep_work:
            # The run's last record stands with the job's new status, in one transaction.
            status = write(session)
            if status is None:
                session.rollback()
                logger.warning("job.lease_lost")
            else:
                session.commit()
            return JobRun(status)
        session.rollback()
        return _record(session_factory, job, write)
    except Exception as exc:  # any other handler failure is retried with backoff
        session.rollback()
        error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "job.failed",
            extra={"attempt": job.attempts},
            exc_info=True,
        )
        return _record(
            session_factory, job, lambda s: fail_job(s, job=job, error=error, now=clock.now())
        )
    finally:
        session.close()


def _outcome_writer(
    raised: JobOutcome, job: ClaimedJob, clock: Clock
) -> Callable[[Session], JobStatus | None]:
    """How an outcome a handler raised changes its job: deferred (no attempt counted), failed
    for good, or retried after the backoff."""
    if isinstance(raised, DeferJob):
        until, reason = raised.until, raised.reason
        return lambda s: (
            JobStatus.queued if defer_job(s, job=job, until=until, reason=reason) else None
        )
    error = str(raised) or type(raised).__name__
    if isinstance(raised, PermanentJobError):
        refusal = raised.reason
        return lambda s: fail_job(
            s, job=job, error=error, now=clock.now(), permanent=True, reason=refusal
        )
    if raised.__cause__ is not None:
        error = f"{type(raised.__cause__).__name__}: {raised.__cause__}"
    logger.warning("job.failed", extra={"attempt": job.attempts})
    not_before = raised.not_before if isinstance(raised, RetryJob) else None
    return lambda s: fail_job(s, job=job, error=error, now=clock.now(), not_before=not_before)


def _complete(
    target: Session | Connection | None,
    job: ClaimedJob,
    outcome: dict[str, Any],
    now: datetime,
    then_claim: ClaimRequest | None,
) -> tuple[bool, list[ClaimedJob]]:
    assert target is not None
    if then_claim is None:
        return complete_job(target, job=job, result=outcome, now=now), []
    return complete_and_claim(target, job=job, result=outcome, now=now, claim=then_claim)


def _record(
    session_factory: sessionmaker[Session],
    job: ClaimedJob,
    write: Callable[[Session], JobStatus | None],
) -> JobRun:
    with session_factory() as session:
        status = write(session)
        session.commit()
    if status is None:
        logger.warning("job.lease_lost")
    return JobRun(status)
