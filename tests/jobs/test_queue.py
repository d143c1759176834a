"""The queue's rules on both databases, with an injected clock instead of sleeps."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker, claim_connection
from shvya.jobs.models import Job
from shvya.jobs.runner import JobContext
from shvya.jobs.service import (
    BACKOFF_SECONDS,
    P1_MIN_PRIORITY,
    ClaimRequest,
    DeferJob,
    PermanentJobError,
    UnknownJobType,
    claim_jobs,
    complete_and_claim,
    complete_job,
    enqueue_job,
    reap_expired_leases,
)
from tests.jobs.conftest import Recorder, terminate_worker_connections
from tests.support import FakeClock, Tenant


def enqueue(
    factory: sessionmaker[Session],
    tenant: Tenant,
    job_type: str,
    clock: FakeClock,
    **kwargs: object,
) -> uuid.UUID:
    with factory() as session:
        job_id, _ = enqueue_job(
            session,
            job_type,
            {"n": 1},
            company_id=tenant.company_id,
            now=clock.now(),
            **kwargs,  # type: ignore[arg-type]
        )
        session.commit()
        return job_id


def load(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with factory() as session:
        return session.get_one(Job, job_id)


def test_priority_comes_from_the_type_and_unknown_types_are_refused(
    session_factory: sessionmaker[Session], acme: Tenant, clock: FakeClock
) -> None:
    expected = {
        "ai.engage": 100,
        "followup.bumpup": 95,
        "ai.summary": 90,
        "sequence.step": 70,
        "email.sequence": 60,
        "webhook.reminder": 50,
    }
    for job_type, priority in expected.items():
        assert (
            load(session_factory, enqueue(session_factory, acme, job_type, clock)).priority
            == priority
        )
    with session_factory() as session, pytest.raises(UnknownJobType, match=r"ai\.engage"):
        enqueue_job(session, "ai.dance", {}, company_id=acme.company_id, now=clock.now())


def test_same_idempotency_key_returns_the_first_job(
    session_factory: sessionmaker[Session], acme: Tenant, globex: Tenant, clock: FakeClock
) -> None:
    first = enqueue(session_factory, acme, "sequence.step", clock, idempotency_key="step:1")
    again = enqueue(session_factory, acme, "sequence.step", clock, idempotency_key="step:1")
    other = enqueue(session_factory, globex, "sequence.step", clock, idempotency_key="step:1")
    assert first == again
    assert other != first
    with session_factory() as session:
        assert len(session.scalars(select(Job)).all()) == 2


def test_claims_highest_priority_then_earliest_due_and_only_due_jobs(
    engine: Engine, session_factory: sessionmaker[Session], acme: Tenant, clock: FakeClock
) -> None:
    late_p2 = enqueue(session_factory, acme, "webhook.reminder", clock)
    clock.advance(seconds=1)
    engage = enqueue(session_factory, acme, "ai.engage", clock)
    step_early = enqueue(
        session_factory, acme, "sequence.step", clock, run_at=clock.now() - timedelta(minutes=5)
    )
    step_late = enqueue(session_factory, acme, "sequence.step", clock)
    future = enqueue(
        session_factory, acme, "ai.engage", clock, run_at=clock.now() + timedelta(minutes=1)
    )
    order = []
    while True:
        with claim_connection(engine) as conn:
            jobs = claim_jobs(conn, worker_id="t", now=clock.now(), lease_seconds=60)
        if not jobs:
            break
        order.append(jobs[0].id)
    assert order == [engage, step_early, step_late, late_p2]
    assert load(session_factory, future).status == "queued"
    claimed = load(session_factory, engage)
    assert (claimed.status, claimed.attempts, claimed.locked_by) == ("processing", 1, "t")
    assert claimed.locked_until == clock.now() + timedelta(seconds=60)


def test_success_stores_result_and_finished_at(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
) -> None:
    job_id = enqueue(session_factory, acme, "ai.engage", clock)
    assert make_worker().run_until_idle() == 1
    job = load(session_factory, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert job.result == {"ok": True, "type": "ai.engage"}
    assert job.finished_at == clock.now()
    assert job.locked_by is None
    assert job.lease_token is None


def test_failures_retry_on_the_backoff_schedule_then_dead_letter(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    def boom(ctx: JobContext) -> None:
        raise RuntimeError(f"provider down (attempt {ctx.job.attempts})")

    recorder.behaviour["sequence.step"] = boom
    with session_factory() as session:
        lead_id = None
        job_id, _ = enqueue_job(
            session, "sequence.step", {}, company_id=acme.company_id, now=clock.now()
        )
        session.commit()
    worker = make_worker()
    delays = []
    for attempt in range(1, 6):
        before = clock.now()
        assert worker.run_until_idle() == 1
        job = load(session_factory, job_id)
        assert job.attempts == attempt
        assert job.last_error == f"RuntimeError: provider down (attempt {attempt})"
        if attempt < 5:
            assert job.status == "queued"
            delays.append((job.run_at - before).total_seconds())
            assert worker.run_until_idle() == 0  # not due yet
            clock.current = job.run_at
    assert job.status == "dlq"
    for delay, expected in zip(delays, BACKOFF_SECONDS, strict=False):
        assert expected * 0.9 <= delay <= expected * 1.1
    assert len(delays) == 4
    with session_factory() as session:
        events = session.scalars(select(Event).where(Event.type == "JobDeadLettered")).all()
    assert len(events) == 1
    assert events[0].entity_id == (lead_id or acme.company_id)
    assert events[0].data["job_id"] == str(job_id)
    assert events[0].data["attempts"] == 5


def test_permanent_error_fails_at_once(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    def refuse(ctx: JobContext) -> None:
        raise PermanentJobError("recipient is on the suppression list")

    recorder.behaviour["email.sequence"] = refuse
    job_id = enqueue(session_factory, acme, "email.sequence", clock)
    worker = make_worker()
    assert worker.run_until_idle() == 1
    clock.advance(hours=1)
    assert worker.run_until_idle() == 0
    job = load(session_factory, job_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.last_error == "recipient is on the suppression list"
    with session_factory() as session:
        assert session.scalars(select(Event.type).where(Event.type == "JobFailed")).all() == [
            "JobFailed"
        ]


def test_deferral_reschedules_without_counting_an_attempt(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    calls = []

    def quiet_hours(ctx: JobContext) -> dict[str, bool]:
        calls.append(ctx.now)
        if len(calls) == 1:
            raise DeferJob(ctx.now + timedelta(hours=8), "quiet hours")
        return {"sent": True}

    recorder.behaviour["email.sequence"] = quiet_hours
    job_id = enqueue(session_factory, acme, "email.sequence", clock)
    worker = make_worker()
    assert worker.run_until_idle() == 1
    job = load(session_factory, job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.run_at == clock.now() + timedelta(hours=8)
    assert job.last_error == "deferred: quiet hours"
    clock.advance(hours=8)
    assert worker.run_until_idle() == 1
    job = load(session_factory, job_id)
    assert (job.status, job.attempts, job.result) == ("completed", 1, {"sent": True})


def test_handler_work_rolls_back_with_a_failure(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    def half_done(ctx: JobContext) -> None:
        enqueue_job(ctx.session, "ai.summary", {}, company_id=acme.company_id, now=ctx.now)
        raise RuntimeError("crashed after enqueueing a follow-on job")

    recorder.behaviour["ai.engage"] = half_done
    enqueue(session_factory, acme, "ai.engage", clock)
    make_worker().run_until_idle()
    with session_factory() as session:
        assert session.scalars(select(Job.type)).all() == ["ai.engage"]


def test_expired_lease_is_claimed_again_counting_the_attempt_and_fenced(
    engine: Engine, session_factory: sessionmaker[Session], acme: Tenant, clock: FakeClock
) -> None:
    job_id = enqueue(session_factory, acme, "ai.engage", clock, max_attempts=2)
    with claim_connection(engine) as conn:
        [dead] = claim_jobs(conn, worker_id="dead", now=clock.now(), lease_seconds=30)
    clock.advance(seconds=31)
    with session_factory() as session:
        assert reap_expired_leases(session, now=clock.now()) == (1, 0)
        session.commit()
    job = load(session_factory, job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    assert "lease expired" in (job.last_error or "")
    clock.current = job.run_at
    with claim_connection(engine) as conn:
        [alive] = claim_jobs(conn, worker_id="alive", now=clock.now(), lease_seconds=30)
    assert alive.attempts == 2
    # the frozen first worker wakes up and tries to complete: nothing changes
    with session_factory() as session:
        assert complete_job(session, job=dead, result={"stale": True}, now=clock.now()) is False
        session.commit()
    assert load(session_factory, job_id).locked_by == "alive"
    # the second worker dies too: that was the last attempt
    clock.advance(seconds=31)
    with session_factory() as session:
        assert reap_expired_leases(session, now=clock.now()) == (0, 1)
        session.commit()
    assert load(session_factory, job_id).status == "dlq"


def test_jobs_are_announced_after_the_outer_commit_never_at_a_savepoint(
    engine: Engine, acme: Tenant, clock: FakeClock
) -> None:
    from shvya.db.engine import make_session_factory
    from shvya.jobs.service import EnqueuedJob

    heard: list[list[EnqueuedJob]] = []

    class Recording:
        def jobs_committed(self, jobs: list[EnqueuedJob]) -> None:
            heard.append(list(jobs))

    factory = make_session_factory(engine, notifier=Recording())
    with factory() as session:
        with session.begin_nested():
            job_id, _ = enqueue_job(
                session, "ai.engage", {}, company_id=acme.company_id, now=clock.now()
            )
        # the savepoint is released, the transaction is not committed: a Celery worker told
        # now would find no such job
        assert heard == []
        session.commit()
    assert [[job.id for job in jobs] for jobs in heard] == [[job_id]]
    with factory() as session:
        enqueue_job(session, "ai.engage", {}, company_id=acme.company_id, now=clock.now())
        session.rollback()
    assert len(heard) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_completion_claims_the_workers_next_job_only_if_the_job_was_still_its_own(
    engine: Engine, session_factory: sessionmaker[Session], acme: Tenant, clock: FakeClock
) -> None:
    first = enqueue(session_factory, acme, "ai.engage", clock)
    summary = enqueue(session_factory, acme, "ai.summary", clock)
    step = enqueue(session_factory, acme, "sequence.step", clock)
    p1_only = ClaimRequest(worker_id="w", lease_seconds=30, min_priority=P1_MIN_PRIORITY)
    with claim_connection(engine) as conn:
        [job] = claim_jobs(conn, worker_id="w", now=clock.now(), lease_seconds=30)
        assert job.id == first
        clock.advance(seconds=1)
        done, claimed = complete_and_claim(
            conn, job=job, result={"sent": 1}, now=clock.now(), claim=p1_only
        )
        assert done is True
        assert [c.id for c in claimed] == [summary]
        assert claimed[0].attempts == 1
        # a P1-only thread leaves the P2 step alone
        done, nothing = complete_and_claim(
            conn, job=claimed[0], result={}, now=clock.now(), claim=p1_only
        )
        assert (done, nothing) == (True, [])
        # a stale completion (the job is finished already) claims nothing
        done, claimed = complete_and_claim(
            conn,
            job=job,
            result={"sent": 2},
            now=clock.now(),
            claim=ClaimRequest(worker_id="w", lease_seconds=30),
        )
        assert (done, claimed) == (False, [])
    finished, second, left = (load(session_factory, i) for i in (first, summary, step))
    assert (finished.status, finished.result, finished.finished_at) == (
        "completed",
        {"sent": 1},
        clock.now(),
    )
    assert finished.lease_token is None
    assert (second.status, second.locked_by, second.started_at) == (
        "completed",
        None,
        clock.now(),
    )
    assert (left.status, left.attempts, left.started_at) == ("queued", 0, None)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_claim_made_in_the_handlers_transaction_is_undone_with_it(
    engine: Engine, session_factory: sessionmaker[Session], acme: Tenant, clock: FakeClock
) -> None:
    first = enqueue(session_factory, acme, "ai.engage", clock)
    second = enqueue(session_factory, acme, "ai.engage", clock)
    with claim_connection(engine) as conn:
        [job] = claim_jobs(conn, worker_id="w", now=clock.now(), lease_seconds=30)
    with session_factory() as session:
        done, claimed = complete_and_claim(
            session,
            job=job,
            result={},
            now=clock.now(),
            claim=ClaimRequest(worker_id="w", lease_seconds=30),
        )
        assert done and [c.id for c in claimed] == [second]
        session.rollback()  # the handler's commit failed
    assert load(session_factory, first).status == "processing"
    assert (load(session_factory, second).status, load(session_factory, second).attempts) == (
        "queued",
        0,
    )


def test_a_handlers_writes_commit_with_its_completion_and_vanish_with_a_lost_lease(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    def follow_on(ctx: JobContext) -> dict[str, bool]:
        if ctx.job.payload.get("steal"):
            # another worker takes the job meanwhile (this one froze past its lease)
            with ctx.session.get_bind().connect() as other:
                other.execute(
                    update(Job).where(Job.id == ctx.job.id).values(lease_token=uuid.uuid4())
                )
                other.commit()
        enqueue_job(ctx.session, "webhook.reminder", {}, company_id=acme.company_id, now=ctx.now)
        return {"followed": True}

    recorder.behaviour["ai.engage"] = follow_on
    kept = enqueue(session_factory, acme, "ai.engage", clock)
    assert make_worker().run_until_idle(max_jobs=1) == 1
    assert load(session_factory, kept).result == {"followed": True}
    with session_factory() as session:
        assert session.scalars(select(Job.type).order_by(Job.priority.desc())).all() == [
            "ai.engage",
            "webhook.reminder",
        ]
        job_id, _ = enqueue_job(
            session, "ai.engage", {"steal": True}, company_id=acme.company_id, now=clock.now()
        )
        session.commit()
    assert make_worker().run_until_idle(max_jobs=1) == 1
    stolen = load(session_factory, job_id)
    assert (stolen.status, stolen.result) == ("processing", None)
    with session_factory() as session:
        assert session.scalar(select(func.count()).where(Job.type == "webhook.reminder")) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_worker_whose_connection_is_cut_mid_batch_records_every_success(
    make_worker: Callable[..., EmbeddedWorker],
    engine: Engine,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    cuts: list[int] = []

    def restart_once(ctx: JobContext) -> dict[str, bool]:
        if not cuts:
            cuts.append(terminate_worker_connections(engine))
        return {"sent": True}

    recorder.behaviour["sequence.step"] = restart_once
    ids = [enqueue(session_factory, acme, "sequence.step", clock) for _ in range(3)]
    assert make_worker().run_until_idle() == 3
    assert cuts == [1]
    for job_id in ids:
        job = load(session_factory, job_id)
        assert (job.status, job.attempts, job.result) == ("completed", 1, {"sent": True})


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_stopping_worker_claims_nothing_more_with_its_last_completion(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    running, release = threading.Event(), threading.Event()

    def slow(ctx: JobContext) -> None:
        running.set()
        release.wait(10)

    recorder.behaviour["sequence.step"] = slow
    ids = [enqueue(session_factory, acme, "sequence.step", clock) for _ in range(3)]
    worker = make_worker(threads=1, p1_threads=0)
    worker.start()
    assert running.wait(10)
    stopper = threading.Thread(target=worker.stop, kwargs={"grace_seconds": 10})
    stopper.start()
    time.sleep(0.2)  # stop() has asked the threads to stop claiming
    release.set()
    stopper.join(15)
    jobs = [load(session_factory, job_id) for job_id in ids]
    assert [(j.status, j.attempts) for j in jobs] == [
        ("completed", 1),
        ("queued", 0),
        ("queued", 0),
    ]
    assert [j.started_at is None for j in jobs] == [False, True, True]
