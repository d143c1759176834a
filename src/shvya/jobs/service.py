"""The priority job queue: enqueue, claim, complete, retry, defer, dead-letter, replay, stats.

The Job row is the truth (docs/architecture.md rule 1). Delivery is at least once; a claim
counts the attempt and hands out a lease token, and every later change to a claimed row is
fenced on that token, so a worker that froze past its lease cannot overwrite what another did
since.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    CursorResult,
    Uuid,
    and_,
    bindparam,
    case,
    event,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from shvya.db.base import UTCDateTime, new_id, table_of
from shvya.db.queries import get_for_company, page_of
from shvya.db.statements import insert_many_or_ignore, insert_or_ignore
from shvya.errors import InvalidInput, NotFound
from shvya.events.service import append_lead_event
from shvya.jobs.models import Job, JobStatus
from shvya.jobs.waker import waker_for
from shvya.schemas import PageRequest

logger = logging.getLogger(__name__)


class JobType(StrEnum):
    ai_engage = "ai.engage"
    agent_reply = "agent.reply"
    channel_notice = "channel.notice"
    followup_bumpup = "followup.bumpup"
    ai_summary = "ai.summary"
    sequence_step = "sequence.step"
    email_sequence = "email.sequence"
    webhook_reminder = "webhook.reminder"
    kb_ingest = "kb.ingest"
    templates_sync = "templates.sync"
    templates_submit = "templates.submit"


# Types with their place in the priority table but no handler yet: nothing in SHVYA enqueues
# them, and a worker fails such a job ("no handler") rather than pretend it ran.
PLANNED_JOB_TYPES: frozenset[JobType] = frozenset()


class Lane(StrEnum):
    p1 = "p1"  # replies to live leads
    p2 = "p2"  # bulk: sequences, emails, reminders


# Fixed (docs/architecture.md, "The job queue"): a caller chooses a type, not a priority.
PRIORITIES: dict[JobType, int] = {
    JobType.ai_engage: 100,
    # A person's reply answers a live lead as an AI reply does: neither jumps the other, and
    # among equal priorities the earliest due goes first (README.md, "Job priorities").
    JobType.agent_reply: 100,
    JobType.channel_notice: 98,
    JobType.followup_bumpup: 95,
    JobType.ai_summary: 90,
    JobType.sequence_step: 70,
    JobType.email_sequence: 60,
    JobType.webhook_reminder: 50,
    JobType.kb_ingest: 45,
    JobType.templates_sync: 40,
    JobType.templates_submit: 40,
}
P1_MIN_PRIORITY = 90
# The n-th retry waits BACKOFF_SECONDS[n-1] (the last value repeats), give or take JITTER.
BACKOFF_SECONDS = (5, 20, 60, 180, 600)
BACKOFF_JITTER = 0.1
ERROR_MAX_CHARS = 2000


class UnknownJobType(InvalidInput):
    code = "unknown_job_type"


class JobNotFound(NotFound):
    code = "job_not_found"


class JobOutcome(Exception):
    """An outcome a handler raises instead of returning. `keep_work`: what the run wrote since
    its last call (the record of that call: a send's failed status, a provider call's usage, a
    refusal's event) is committed with the job's new status; otherwise it is rolled back."""

    def __init__(self, message: str, *, keep_work: bool = False) -> None:
        super().__init__(message)
        self.keep_work = keep_work


class PermanentJobError(JobOutcome):
    """Retrying cannot help (a bad template, a suppressed recipient): the job fails at once.
    `reason` is a short code kept in the JobFailed event (`outside_24h_window`, ...)."""

    def __init__(self, message: str, *, reason: str | None = None, keep_work: bool = False) -> None:
        super().__init__(message, keep_work=keep_work)
        self.reason = reason


class RetryJob(JobOutcome):
    """A failure worth another attempt after the queue's backoff (a provider's 429 or 5xx),
    raised where the run has a record to keep. `not_before`: the provider said when it will
    take the request again (a rate limit's reset); the retry waits at least until then."""

    def __init__(
        self, message: str, *, keep_work: bool = False, not_before: datetime | None = None
    ) -> None:
        super().__init__(message, keep_work=keep_work)
        self.not_before = not_before


class LeaseLost(Exception):
    """Another worker owns the job now (this one froze past its lease): stop, keep nothing."""


class DeferJob(JobOutcome):
    """The job cannot run yet (pacing, quiet hours): run it at `until`, no attempt counted."""

    def __init__(self, until: datetime, reason: str, *, keep_work: bool = False) -> None:
        super().__init__(reason, keep_work=keep_work)
        self.until = until
        self.reason = reason


def job_priority(job_type: str) -> int:
    try:
        return PRIORITIES[JobType(job_type)]
    except ValueError:
        known = ", ".join(t.value for t in JobType)
        raise UnknownJobType(f"unknown job type {job_type!r}; known types: {known}") from None


def lane_of(priority: int) -> Lane:
    return Lane.p1 if priority >= P1_MIN_PRIORITY else Lane.p2


def retry_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """How long a job waits after its `attempts`-th failed attempt."""
    base = BACKOFF_SECONDS[min(max(attempts, 1), len(BACKOFF_SECONDS)) - 1]
    jitter = (rng or random).uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
    return timedelta(seconds=base * (1 + jitter))


# --- enqueue and after-commit notification ----------------------------------------------------


@dataclass(frozen=True)
class EnqueuedJob:
    id: uuid.UUID
    lane: Lane
    run_at: datetime


class JobNotifier(Protocol):
    """Told about jobs once the transaction that wrote them has committed (the outbox)."""

    def jobs_committed(self, jobs: Sequence[EnqueuedJob]) -> None: ...


SESSION_ENQUEUED = "shvya.jobs.enqueued"
SESSION_NOTIFIER = "shvya.jobs.notifier"


@dataclass(frozen=True)
class PreparedJob:
    """A job's row, ready to insert, and what to do once it is inserted."""

    values: dict[str, Any]
    lane: Lane
    due: datetime


def prepare_job(
    session: Session,
    job_type: str,
    payload: dict[str, Any],
    *,
    company_id: uuid.UUID,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 5,
) -> PreparedJob:
    priority = job_priority(job_type)
    due = run_at or now
    lane = lane_of(priority)
    notifier = session.info.get(SESSION_NOTIFIER)
    # A publishing engine hands a due job to its broker right after commit; marking it here
    # costs nothing and keeps the relay from publishing it a second time.
    published_at = now if due <= now and getattr(notifier, "publishes_on_commit", False) else None
    return PreparedJob(
        values={
            "id": new_id(),
            "company_id": company_id,
            "lead_id": lead_id,
            "type": job_type,
            "priority": priority,
            "payload": payload,
            "status": JobStatus.queued.value,
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_at": due,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "published_at": published_at,
        },
        lane=lane,
        due=due,
    )


def job_inserted(session: Session, job: PreparedJob) -> None:
    """Bookkeeping once the row is in: the after-commit notice."""
    session.info.setdefault(SESSION_ENQUEUED, []).append(
        EnqueuedJob(id=job.values["id"], lane=job.lane, run_at=job.due)
    )


def enqueue_job(
    session: Session,
    job_type: str,
    payload: dict[str, Any],
    *,
    company_id: uuid.UUID,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 5,
) -> tuple[uuid.UUID, bool]:
    """Write a queued job in the caller's transaction; returns (job id, created).

    With an idempotency key, a second enqueue of the same (company, key) returns the first
    job and writes nothing: the unique index decides, also between concurrent transactions.
    """
    job = prepare_job(
        session,
        job_type,
        payload,
        company_id=company_id,
        now=now,
        lead_id=lead_id,
        idempotency_key=idempotency_key,
        run_at=run_at,
        max_attempts=max_attempts,
    )
    job_id = insert_or_ignore(
        session, table_of(Job), job.values, conflict_on=("company_id", "idempotency_key")
    )
    if job_id is None:
        existing = find_job_id(
            session, company_id=company_id, idempotency_key=idempotency_key or ""
        )
        assert existing is not None  # the conflict we just hit is this row
        return existing, False
    job_inserted(session, job)
    return job_id, True


def enqueue_prepared(session: Session, jobs: Sequence[PreparedJob]) -> set[uuid.UUID]:
    """Insert many prepared jobs (prepare_job) in one statement, in the caller's transaction;
    returns the ids of those that went in. A job whose (company, idempotency key) exists
    already is not written, exactly as with enqueue_job (a scheduler's batch)."""
    inserted = insert_many_or_ignore(
        session,
        table_of(Job),
        [job.values for job in jobs],
        conflict_on=("company_id", "idempotency_key"),
    )
    for job in jobs:
        if job.values["id"] in inserted:
            job_inserted(session, job)
    return inserted


@event.listens_for(Session, "after_commit")
def _notify_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: nothing is committed until the outer transaction is
    jobs = session.info.pop(SESSION_ENQUEUED, None)
    if not jobs:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # Workers in other processes LISTEN; told after the commit (jobs/waker.py says why).
        now = datetime.now(UTC)
        due = {job.lane.value for job in jobs if job.run_at <= now}
        if due:
            waker_for(bind.engine).poke(due)
    notifier: JobNotifier | None = session.info.get(SESSION_NOTIFIER)
    if jobs and notifier is not None:
        try:
            notifier.jobs_committed(jobs)
        except Exception:  # the jobs are committed; the relay or a poll will find them
            logger.exception("jobs.notify_failed", extra={"jobs": len(jobs)})


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(SESSION_ENQUEUED, None)


def find_job_id(
    session: Session, *, company_id: uuid.UUID, idempotency_key: str
) -> uuid.UUID | None:
    return session.scalar(
        select(Job.id).where(Job.company_id == company_id, Job.idempotency_key == idempotency_key)
    )


# --- claiming ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    company_id: uuid.UUID
    lead_id: uuid.UUID | None
    type: str
    priority: int
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    run_at: datetime
    lease_token: uuid.UUID

    @property
    def lane(self) -> Lane:
        return lane_of(self.priority)


# In ClaimedJob's field order: a claimed row becomes ClaimedJob(*row).
_CLAIM_COLUMNS = (
    Job.id,
    Job.company_id,
    Job.lead_id,
    Job.type,
    Job.priority,
    Job.payload,
    Job.attempts,
    Job.max_attempts,
    Job.run_at,
    Job.lease_token,
)


@dataclass(frozen=True)
class ClaimRequest:
    """What a worker thread claims: up to `limit` due jobs, P1 only with `min_priority`."""

    worker_id: str
    lease_seconds: float
    limit: int = 1
    min_priority: int | None = None
    # A worker's stop signal: once set, a completion made with this request claims nothing.
    stop: threading.Event | None = field(default=None, compare=False)

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def parameters(self, now: datetime) -> dict[str, Any]:
        return {
            "now": now,
            "claim_limit": self.limit,
            "worker_id": self.worker_id,
            "claim_until": now + timedelta(seconds=self.lease_seconds),
            "claim_token": uuid.uuid4(),
            "min_priority": self.min_priority,
        }


def claim_jobs(
    conn: Connection,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    limit: int = 1,
    min_priority: int | None = None,
    job_id: uuid.UUID | None = None,
) -> list[ClaimedJob]:
    """Claim up to `limit` due jobs, highest priority first, then the earliest due.

    One statement. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets any number of workers claim
    side by side without ever taking the same row; on SQLite the write lock serialises
    claimers. `job_id` claims that one job only if it is still queued and due (the Celery
    task's claim: a redelivered message finds the row taken and does nothing).
    """
    request = ClaimRequest(
        worker_id=worker_id, lease_seconds=lease_seconds, limit=limit, min_priority=min_priority
    )
    statement = _claim_statement(
        conn.dialect.name == "postgresql", min_priority is not None, job_id is not None
    )
    rows = conn.execute(statement, {**request.parameters(now), "job_id": job_id})
    return _in_claim_order([ClaimedJob(*row) for row in rows])


def _in_claim_order(jobs: list[ClaimedJob]) -> list[ClaimedJob]:
    jobs.sort(key=lambda job: (-job.priority, job.run_at))
    return jobs


_jobs = table_of(Job)
_NOW = bindparam("now", type_=UTCDateTime())


def _chosen_jobs(postgresql: bool, by_priority: bool, by_id: bool) -> Any:
    """The due jobs a claim takes, as a CTE. A CTE, not `id IN (subquery)`: PostgreSQL may
    evaluate an IN-subquery more than once and then claim more rows than LIMIT (seen here:
    two rows for LIMIT 1). A locking CTE is evaluated exactly once."""
    candidates = select(_jobs.c.id).where(
        _jobs.c.status == JobStatus.queued.value, _jobs.c.run_at <= _NOW
    )
    if by_id:
        candidates = candidates.where(_jobs.c.id == bindparam("job_id", type_=Uuid()))
    if by_priority:
        candidates = candidates.where(_jobs.c.priority >= bindparam("min_priority"))
    candidates = candidates.order_by(_jobs.c.priority.desc(), _jobs.c.run_at, _jobs.c.id).limit(
        bindparam("claim_limit")
    )
    if postgresql:
        candidates = candidates.with_for_update(skip_locked=True)
    return candidates.cte("chosen_jobs")


def _claim_update(chosen: Any, *conditions: Any) -> Any:
    return (
        update(_jobs)
        .where(_jobs.c.id == chosen.c.id, _jobs.c.status == JobStatus.queued.value, *conditions)
        .values(
            status=JobStatus.processing.value,
            attempts=_jobs.c.attempts + 1,
            locked_by=bindparam("worker_id"),
            locked_until=bindparam("claim_until", type_=UTCDateTime()),
            lease_token=bindparam("claim_token", type_=Uuid()),
            started_at=_NOW,
            published_at=None,
        )
        .returning(*(_jobs.c[column.key] for column in _CLAIM_COLUMNS))
    )


@cache
def _claim_statement(postgresql: bool, by_priority: bool, by_id: bool) -> Any:
    """Built once per variant: each worker claims many times a second."""
    return _claim_update(_chosen_jobs(postgresql, by_priority, by_id))


def extend_leases(
    conn: Connection, *, jobs: Sequence[ClaimedJob], now: datetime, lease_seconds: float
) -> int:
    """The running handler's heartbeat: push its leases forward. Returns how many held."""
    if not jobs:
        return 0
    until = now + timedelta(seconds=lease_seconds)
    held = 0
    for job in jobs:
        held += _changed(
            conn.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_token == job.lease_token)
                .values(locked_until=until)
            )
        )
    return held


# Every change to a claimed row is fenced on its lease token (docs/reliability.md F3), and built
# once: completing, failing, deferring and renewing happen for every job.
_FENCED = and_(
    _jobs.c.id == bindparam("job_id", type_=Uuid()),
    _jobs.c.lease_token == bindparam("token", type_=Uuid()),
    _jobs.c.status == JobStatus.processing.value,
)
_RELEASED: dict[str, Any] = {"locked_by": None, "locked_until": None, "lease_token": None}
_HOLD = (
    update(_jobs).where(_FENCED).values(locked_until=bindparam("locked_until", type_=UTCDateTime()))
)
# Bind names are never column names here: SQLAlchemy adds a SET clause for every execution
# parameter named like a column, also to the claim UPDATE in complete_and_claim's statement.
# A deferral's note ("deferred: quiet_period") said why a queued job waited; it is not an
# error of the job that then completed, so completion clears it (a failed attempt's stays).
DEFERRAL_NOTE = "deferred: "
_COMPLETE = (
    update(_jobs)
    .where(_FENCED)
    .values(
        status=JobStatus.completed.value,
        last_error=case(
            (_jobs.c.last_error.startswith(DEFERRAL_NOTE, autoescape=True), None),
            else_=_jobs.c.last_error,
        ),
        result=bindparam("job_result", type_=_jobs.c.result.type),
        finished_at=bindparam("finished", type_=UTCDateTime()),
        **_RELEASED,
    )
)
_RETRY = (
    update(_jobs)
    .where(_FENCED)
    .values(
        status=JobStatus.queued.value,
        last_error=bindparam("last_error"),
        run_at=bindparam("run_at", type_=UTCDateTime()),
        **_RELEASED,
    )
)
_FINISH_FAILED = (
    update(_jobs)
    .where(_FENCED)
    .values(
        status=bindparam("status"),
        last_error=bindparam("last_error"),
        finished_at=bindparam("finished_at", type_=UTCDateTime()),
        **_RELEASED,
    )
)
_DEFER = (
    update(_jobs)
    .where(_FENCED)
    .values(
        status=JobStatus.queued.value,
        run_at=bindparam("run_at", type_=UTCDateTime()),
        attempts=_jobs.c.attempts - 1,
        last_error=bindparam("last_error"),
        **_RELEASED,
    )
)
_RELEASE = (
    update(_jobs)
    .where(_FENCED)
    .values(status=JobStatus.queued.value, attempts=_jobs.c.attempts - 1, **_RELEASED)
)


def _fence(job: ClaimedJob, **values: Any) -> dict[str, Any]:
    return {"job_id": job.id, "token": job.lease_token, **values}


def hold_lease(session: Session, *, job: ClaimedJob, now: datetime, lease_seconds: float) -> bool:
    """In the handler's own transaction: still ours? Then renew the lease. Used before a
    checkpoint commit, so a stale worker never commits work (or calls a provider) late."""
    outcome = session.connection().execute(
        _HOLD, _fence(job, locked_until=now + timedelta(seconds=lease_seconds))
    )
    return _changed(outcome)


def _changed(result: Any) -> bool:
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


def _clip(error: str) -> str:
    return error if len(error) <= ERROR_MAX_CHARS else error[: ERROR_MAX_CHARS - 1] + "…"


def complete_job(
    target: Session | Connection, *, job: ClaimedJob, result: dict[str, Any], now: datetime
) -> bool:
    """Mark the job done: in the handler's own session (its transaction), or on an autocommit
    connection when the handler left nothing to commit. False: the lease was lost, and the
    caller must roll the handler's work back."""
    conn = target.connection() if isinstance(target, Session) else target
    return _changed(conn.execute(_COMPLETE, _fence(job, job_result=result, finished=now)))


def complete_and_claim(
    target: Session | Connection,
    *,
    job: ClaimedJob,
    result: dict[str, Any],
    now: datetime,
    claim: ClaimRequest,
) -> tuple[bool, list[ClaimedJob]]:
    """PostgreSQL: complete_job and, only if that held, the worker's next claim, in one
    statement (one round trip instead of two for every job a busy worker runs). In the
    handler's transaction the claim commits with the handler's work, or not at all; the
    caller must treat the jobs as claimed only once that commit went through."""
    conn = target.connection() if isinstance(target, Session) else target
    rows = conn.execute(
        _complete_and_claim_statement(claim.min_priority is not None),
        {**claim.parameters(now), **_fence(job, job_result=result, finished=now)},
    ).all()
    completed = bool(rows[0][0])
    claimed = [ClaimedJob(*row[1:]) for row in rows if row[1] is not None]
    return completed, _in_claim_order(claimed)


@cache
def _complete_and_claim_statement(by_priority: bool) -> Any:
    done = _COMPLETE.returning(_jobs.c.id).cte("completed_job")
    claimed = _claim_update(_chosen_jobs(True, by_priority, False), exists(select(done.c.id))).cte(
        "claimed_jobs"
    )
    # One row even when nothing was claimed: it says whether the completion held.
    one = select(literal_column("1").label("one")).subquery("one")
    return select(
        select(func.count()).select_from(done).scalar_subquery().label("completed"),
        *(claimed.c[column.key] for column in _CLAIM_COLUMNS),
    ).select_from(one.outerjoin(claimed, true()))


def fail_job(
    session: Session,
    *,
    job: ClaimedJob,
    error: str,
    now: datetime,
    permanent: bool = False,
    reason: str | None = None,
    rng: random.Random | None = None,
    not_before: datetime | None = None,
) -> JobStatus | None:
    """After a failed attempt: queued again after the backoff (and not before `not_before`),
    or `dlq` when the attempts are spent, or `failed` at once for a permanent error. None:
    the lease was lost."""
    if permanent:
        status = JobStatus.failed
    elif job.attempts >= job.max_attempts:
        status = JobStatus.dlq
    else:
        status = JobStatus.queued
    connection = session.connection()
    if status is JobStatus.queued:
        outcome = connection.execute(
            _RETRY,
            _fence(
                job,
                last_error=_clip(error),
                run_at=max(now + retry_delay(job.attempts, rng=rng), not_before or now),
            ),
        )
    else:
        outcome = connection.execute(
            _FINISH_FAILED,
            _fence(job, status=status.value, last_error=_clip(error), finished_at=now),
        )
    if not _changed(outcome):
        return None
    if status is not JobStatus.queued:
        _append_job_event(
            session,
            job=job,
            type="JobDeadLettered" if status is JobStatus.dlq else "JobFailed",
            data={
                "attempts": job.attempts,
                "error": _clip(error),
                **({"reason": reason} if reason else {}),
            },
            now=now,
        )
    return status


def defer_job(session: Session, *, job: ClaimedJob, until: datetime, reason: str) -> bool:
    """Reschedule without counting the attempt the claim counted."""
    outcome = session.connection().execute(
        _DEFER, _fence(job, run_at=until, last_error=_clip(f"{DEFERRAL_NOTE}{reason}"))
    )
    return _changed(outcome)


def release_job(conn: Connection, *, job: ClaimedJob) -> bool:
    """Give a claimed job back untouched (shutdown before or while running it)."""
    return _changed(conn.execute(_RELEASE, _fence(job)))


def reap_expired_leases(session: Session, *, now: datetime) -> tuple[int, int]:
    """Jobs whose worker died (its lease ran out): queued again, or to the DLQ when that was
    their last attempt, since the attempt was counted at claim. Returns (requeued, dead)."""
    expired = session.execute(
        select(*_CLAIM_COLUMNS)
        .where(Job.status == JobStatus.processing.value, Job.locked_until < now)
        .limit(500)
    ).all()
    requeued = dead = 0
    for row in expired:
        job = ClaimedJob(**row._mapping)
        status = fail_job(
            session,
            job=job,
            error=f"lease expired after attempt {job.attempts}: the worker stopped or died",
            now=now,
        )
        if status is JobStatus.dlq:
            dead += 1
        elif status is JobStatus.queued:
            requeued += 1
    if expired:
        logger.warning("jobs.leases_expired", extra={"requeued": requeued, "dead": dead})
    return requeued, dead


def _append_job_event(
    session: Session,
    *,
    job: ClaimedJob,
    type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    append_lead_event(
        session,
        company_id=job.company_id,
        lead_id=job.lead_id,
        type=type,
        data={"job_id": str(job.id), "job_type": job.type, **data},
        now=now,
    )


# --- reading, DLQ and stats -------------------------------------------------------------------


def get_job(session: Session, *, company_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    return get_for_company(session, Job, job_id, company_id=company_id, missing=JobNotFound)


def _dead_lettered(company_id: uuid.UUID | None, job_type: str | None) -> list[Any]:
    """Dead-lettered jobs: one company's (None: every company's), of one type or all."""
    where = [Job.status == JobStatus.dlq.value]
    if company_id is not None:
        where.append(Job.company_id == company_id)
    if job_type is not None:
        where.append(Job.type == job_type)
    return where


def list_dead_jobs(
    session: Session,
    *,
    company_id: uuid.UUID | None,
    job_type: str | None,
    page: PageRequest,
) -> tuple[Sequence[Job], int]:
    return page_of(
        session,
        Job,
        *_dead_lettered(company_id, job_type),
        order_by=(Job.finished_at.desc(), Job.id),
        page=page,
    )


def replay_dead_jobs(
    session: Session,
    *,
    company_id: uuid.UUID | None,
    job_type: str | None,
    limit: int | None,
    now: datetime,
) -> int:
    """DLQ jobs back to queued, due now, with their attempts reset."""
    if job_type is not None:
        job_priority(job_type)
    candidates = (
        select(Job.id)
        .where(*_dead_lettered(company_id, job_type))
        .order_by(Job.finished_at, Job.id)
    )
    if limit is not None:
        candidates = candidates.limit(limit)
    ids = list(session.scalars(candidates))
    if not ids:
        return 0
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.status == JobStatus.dlq.value)
        .values(
            status=JobStatus.queued.value,
            attempts=0,
            run_at=now,
            finished_at=None,
            published_at=None,
        )
    )
    enqueued = session.info.setdefault(SESSION_ENQUEUED, [])
    for job_id, lead_id, job_company_id, type_, priority in session.execute(
        select(Job.id, Job.lead_id, Job.company_id, Job.type, Job.priority).where(Job.id.in_(ids))
    ):
        append_lead_event(
            session,
            company_id=job_company_id,
            lead_id=lead_id,
            type="JobReplayed",
            data={"job_id": str(job_id), "job_type": type_},
            now=now,
        )
        enqueued.append(EnqueuedJob(id=job_id, lane=lane_of(priority), run_at=now))
    return len(ids)


@dataclass(frozen=True)
class LaneStats:
    queued_due: int
    oldest_due_age_seconds: float | None
    wait_p50_ms: float | None
    wait_p99_ms: float | None
    started_last_hour: int


@dataclass(frozen=True)
class QueueStats:
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    lanes: dict[str, LaneStats]


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def queue_stats(session: Session, *, company_id: uuid.UUID | None, now: datetime) -> QueueStats:
    scope = [] if company_id is None else [Job.company_id == company_id]
    by_status = {status.value: 0 for status in JobStatus}
    by_type: dict[str, dict[str, int]] = {}
    for job_type, status, count in session.execute(
        select(Job.type, Job.status, func.count()).where(*scope).group_by(Job.type, Job.status)
    ):
        by_status[status] = by_status.get(status, 0) + count
        by_type.setdefault(job_type, {})[status] = count

    lane_expr = case((Job.priority >= P1_MIN_PRIORITY, Lane.p1.value), else_=Lane.p2.value)
    due = {
        lane: (count, oldest)
        for lane, count, oldest in session.execute(
            select(lane_expr, func.count(), func.min(Job.run_at))
            .where(*scope, Job.status == JobStatus.queued.value, Job.run_at <= now)
            .group_by(lane_expr)
        )
    }
    # Wait = from due to started, for the jobs started in the last hour (the last start of
    # each job: a retried job's wait is that of its last attempt).
    since = now - timedelta(hours=1)
    waits: dict[str, list[float]] = {Lane.p1.value: [], Lane.p2.value: []}
    for priority, run_at, started_at in session.execute(
        select(Job.priority, Job.run_at, Job.started_at).where(
            *scope,
            Job.started_at >= since,
            or_(Job.status != JobStatus.queued.value, Job.run_at <= Job.started_at),
        )
    ):
        if started_at is not None and run_at is not None:
            waits[lane_of(priority).value].append(
                max(0.0, (started_at - run_at).total_seconds() * 1000)
            )
    lanes: dict[str, LaneStats] = {}
    for lane in Lane:
        count, oldest = due.get(lane.value, (0, None))
        ordered = sorted(waits[lane.value])
        lanes[lane.value] = LaneStats(
            queued_due=count,
            oldest_due_age_seconds=None
            if oldest is None
            else max(0.0, (now - _aware(oldest)).total_seconds()),
            wait_p50_ms=_percentile(ordered, 0.5),
            wait_p99_ms=_percentile(ordered, 0.99),
            started_last_hour=len(ordered),
        )
    return QueueStats(by_status=by_status, by_type=by_type, lanes=lanes)


def _aware(value: datetime | str) -> datetime:
    # func.min() bypasses the column type on SQLite and can hand back a naive value or text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def jobs_due_for_publishing(session: Session, *, now: datetime, limit: int) -> list[EnqueuedJob]:
    """For the Celery relay: due queued jobs not handed to the broker since they became due
    (broker down at commit, retries whose backoff passed, jobs requeued). Marks them."""
    return _mark_published(
        session,
        select(Job.id, Job.priority, Job.run_at).where(
            Job.status == JobStatus.queued.value,
            Job.run_at <= now,
            Job.published_at.is_(None),
        ),
        now=now,
        limit=limit,
    )


def stale_published_jobs(
    session: Session, *, lane: Lane, now: datetime, older_than_seconds: float, limit: int
) -> list[EnqueuedJob]:
    """Queued jobs of a lane handed to the broker long ago. Called only when that lane's
    broker queue is empty, so these are messages the broker lost. Marks them again."""
    lane_filter = (
        Job.priority >= P1_MIN_PRIORITY if lane is Lane.p1 else Job.priority < P1_MIN_PRIORITY
    )
    return _mark_published(
        session,
        select(Job.id, Job.priority, Job.run_at).where(
            Job.status == JobStatus.queued.value,
            Job.run_at <= now,
            Job.published_at < now - timedelta(seconds=older_than_seconds),
            lane_filter,
        ),
        now=now,
        limit=limit,
    )


def _mark_published(
    session: Session, statement: Any, *, now: datetime, limit: int
) -> list[EnqueuedJob]:
    statement = statement.order_by(Job.priority.desc(), Job.run_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    rows = session.execute(statement).all()
    if not rows:
        return []
    session.execute(
        update(Job).where(Job.id.in_([row.id for row in rows])).values(published_at=now)
    )
    return [EnqueuedJob(id=row.id, lane=lane_of(row.priority), run_at=row.run_at) for row in rows]


def clear_published(session: Session, *, job_ids: Sequence[uuid.UUID]) -> None:
    """A publish failed: let the relay pick these jobs up on its next tick."""
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.queued.value)
        .values(published_at=None)
    )
