"""Every line logged while a job runs names the job: its id and type, whoever logs it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shvya.cli import LogFormatter
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.runner import JobContext
from shvya.jobs.service import enqueue_job
from tests.jobs.conftest import Recorder
from tests.support import FakeClock, Tenant

HANDLER_LOG = logging.getLogger("tests.a_handler")


def enqueue(
    factory: sessionmaker[Session], tenant: Tenant, job_type: str, clock: FakeClock
) -> uuid.UUID:
    with factory() as session:
        job_id, _ = enqueue_job(
            session, job_type, {}, company_id=tenant.company_id, now=clock.now()
        )
        session.commit()
        return job_id


def test_lines_logged_while_a_job_runs_carry_its_id_and_type(
    make_worker: Callable[..., EmbeddedWorker],
    recorder: Recorder,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def works(ctx: JobContext) -> dict[str, bool]:
        HANDLER_LOG.info("handler.working")
        return {"ok": True}

    def crashes(ctx: JobContext) -> None:
        HANDLER_LOG.info("handler.crashing")
        raise RuntimeError("boom")

    recorder.behaviour["sequence.step"] = works
    recorder.behaviour["webhook.reminder"] = crashes
    good = enqueue(session_factory, acme, "sequence.step", clock)
    bad = enqueue(session_factory, acme, "webhook.reminder", clock)

    caplog.set_level(logging.INFO)
    assert make_worker().run_until_idle() == 2
    HANDLER_LOG.info("after.the.jobs")

    stamps = {
        record.getMessage(): (getattr(record, "job_id", None), getattr(record, "job_type", None))
        for record in caplog.records
    }
    # the handler's own lines and the runner's, for the job that completed and the one that failed
    assert stamps["handler.working"] == (str(good), "sequence.step")
    assert stamps["job.completed"] == (str(good), "sequence.step")
    assert stamps["handler.crashing"] == (str(bad), "webhook.reminder")
    assert stamps["job.failed"] == (str(bad), "webhook.reminder")
    assert stamps["after.the.jobs"] == (None, None)  # nothing leaks past the run

    # What `shvya serve` and `shvya worker` print for such a line.
    [completed] = [r for r in caplog.records if r.getMessage() == "job.completed"]
    assert LogFormatter().format(completed) == (
        f"INFO shvya.jobs.runner job.completed job_id={good} job_type=sequence.step"
    )
    [after] = [r for r in caplog.records if r.getMessage() == "after.the.jobs"]
    assert LogFormatter().format(after) == "INFO tests.a_handler after.the.jobs"
