"""Jobs that call out run in phases the runner owns (docs/architecture.md, "Phases of a job
that calls out"): prepare, committed and fenced before the call; the call, with no
transaction open; the record, committed with the job's outcome."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shvya.db.phases import Call, Phases
from shvya.events.models import Event
from shvya.events.service import append_event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.jobs.runner import JobContext
from shvya.jobs.service import DeferJob, PermanentJobError, RetryJob, enqueue_job
from tests.jobs.conftest import Recorder
from tests.support import FakeClock, Tenant

# run_engage(handler): one of Acme's ai.engage jobs, run by `handler`; the job's id.
RunEngage = Callable[[Callable[[JobContext], Any]], uuid.UUID]


def enqueue(factory: sessionmaker[Session], tenant: Tenant, clock: FakeClock) -> uuid.UUID:
    with factory() as session:
        job_id, _ = enqueue_job(
            session, "ai.engage", {}, company_id=tenant.company_id, now=clock.now()
        )
        session.commit()
        return job_id


def note(ctx: JobContext, what: str) -> None:
    append_event(
        ctx.session,
        company_id=ctx.job.company_id,
        entity_type="company",
        entity_id=ctx.job.company_id,
        type=what,
        data={},
        now=ctx.now,
    )


def notes(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event.type)
                .where(Event.type.in_(["Prepared", "Recorded"]))
                .order_by(Event.created_at, Event.id)
            )
        )


def load(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with factory() as session:
        return session.get_one(Job, job_id)


@pytest.fixture
def run_engage(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> RunEngage:
    """Enqueue one of Acme's ai.engage jobs, run by `handler`, and let a worker run until
    idle; the job's id."""

    def run(handler: Callable[[JobContext], Any]) -> uuid.UUID:
        recorder.behaviour["ai.engage"] = handler
        job_id = enqueue(session_factory, acme, clock)
        make_worker().run_until_idle()
        return job_id

    return run


def test_the_prepare_phase_is_committed_before_the_call_and_the_record_with_the_outcome(
    run_engage: RunEngage,
    session_factory: sessionmaker[Session],
) -> None:
    during_call: dict[str, Any] = {}

    def calls_out(ctx: JobContext) -> Phases[dict[str, Any]]:
        note(ctx, "Prepared")

        def work() -> str:
            # What another connection sees while the provider "thinks", and whether the job's
            # own session still holds a transaction.
            during_call["seen"] = notes(session_factory)
            during_call["in_transaction"] = ctx.session.in_transaction()
            return "the provider's answer"

        answer = yield Call("provider", work)
        note(ctx, "Recorded")
        return {"answer": answer}

    job_id = run_engage(calls_out)
    assert during_call == {"seen": ["Prepared"], "in_transaction": False}
    assert notes(session_factory) == ["Prepared", "Recorded"]
    job = load(session_factory, job_id)
    assert (job.status, job.result) == ("completed", {"answer": "the provider's answer"})


def test_a_failed_call_is_thrown_into_the_record_phase_which_keeps_what_it_says_to_keep(
    run_engage: RunEngage,
    session_factory: sessionmaker[Session],
) -> None:
    def fails_and_keeps(ctx: JobContext) -> Phases[None]:
        def work() -> None:
            raise TimeoutError("the provider did not answer")

        try:
            yield Call("provider", work)
        except TimeoutError as exc:
            note(ctx, "Recorded")  # e.g. the message's `failed` status
            raise PermanentJobError(str(exc), reason="timeout", keep_work=True) from exc

    kept = run_engage(fails_and_keeps)
    assert notes(session_factory) == ["Recorded"]
    job = load(session_factory, kept)
    assert (job.status, job.last_error) == ("failed", "the provider did not answer")

    def fails_and_drops(ctx: JobContext) -> Phases[None]:
        yield Call("provider", lambda: None)
        note(ctx, "Recorded")
        raise RetryJob("try again later")  # keep_work=False: the record is rolled back

    dropped = run_engage(fails_and_drops)
    assert notes(session_factory) == ["Recorded"]  # still only the first job's
    job = load(session_factory, dropped)
    assert (job.status, job.attempts, job.last_error) == ("queued", 1, "try again later")


def test_a_call_that_touches_the_database_fails_the_run_as_a_bug(
    run_engage: RunEngage,
    session_factory: sessionmaker[Session],
) -> None:
    def leaks(ctx: JobContext) -> Phases[None]:
        yield Call("provider", lambda: ctx.session.scalars(select(Job.id)).first())
        note(ctx, "Recorded")

    job_id = run_engage(leaks)
    job = load(session_factory, job_id)
    assert job.status == "queued"  # retried with backoff, like any other failure
    assert "CallTouchedDatabase" in (job.last_error or "")
    assert notes(session_factory) == []


def test_a_lost_lease_stops_the_run_before_its_call_and_keeps_nothing_more(
    run_engage: RunEngage,
    session_factory: sessionmaker[Session],
) -> None:
    called: list[str] = []

    def frozen(ctx: JobContext) -> Phases[None]:
        note(ctx, "Prepared")
        # Another worker took the job over meanwhile (this one froze past its lease).
        with session_factory() as other:
            other.execute(update(Job).where(Job.id == ctx.job.id).values(lease_token=uuid.uuid4()))
            other.commit()
        yield Call("provider", lambda: called.append("called"))
        note(ctx, "Recorded")

    run_engage(frozen)
    assert called == []  # no provider call for a job that is no longer ours
    assert notes(session_factory) == []


def test_a_deferred_job_that_then_completes_shows_no_error(
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    recorder: Recorder,
) -> None:
    waited: list[bool] = []

    def waits_once(ctx: JobContext) -> dict[str, bool]:
        if not waited:
            waited.append(True)
            raise DeferJob(ctx.now + timedelta(seconds=10), "pacing")
        return {"ok": True}

    recorder.behaviour["ai.engage"] = waits_once
    job_id = enqueue(session_factory, acme, clock)
    worker = make_worker()
    worker.run_until_idle()
    job = load(session_factory, job_id)
    assert (job.status, job.attempts, job.last_error) == ("queued", 0, "deferred: pacing")
    clock.advance(seconds=10)
    worker.run_until_idle()
    job = load(session_factory, job_id)
    # Why it waited was a note, not an error of the job that then completed.
    assert (job.status, job.attempts, job.last_error) == ("completed", 1, None)
