"""Real threads and real processes: priority lanes, no double runs, kill -9, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.clock import SystemClock
from shvya.config import Settings
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.jobs.service import enqueue_job
from tests.jobs.conftest import Recorder
from tests.support import Tenant, post_inbound

REPO = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], *, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def enqueue_many(
    factory: sessionmaker[Session], tenant: Tenant, job_type: str, count: int
) -> list[uuid.UUID]:
    now = SystemClock().now()
    with factory() as session:
        ids = [
            enqueue_job(session, job_type, {"i": i}, company_id=tenant.company_id, now=now)[0]
            for i in range(count)
        ]
        session.commit()
    return ids


def statuses(factory: sessionmaker[Session]) -> Counter[str]:
    with factory() as session:
        return Counter(
            dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        )


def test_p1_jobs_run_while_p2_jobs_hold_every_general_thread(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    release = threading.Event()
    recorder = Recorder()
    recorder.behaviour["webhook.reminder"] = lambda ctx: release.wait(30) and {}
    from shvya.jobs.service import JobType

    worker = EmbeddedWorker(
        engine,
        handlers={t.value: recorder.handler(t.value) for t in JobType},
        clock=SystemClock(),
        settings=settings.model_copy(update={"job_poll_seconds": 0.05}),
        threads=2,
        p1_threads=1,
    )
    enqueue_many(session_factory, acme, "webhook.reminder", 50)
    worker.start()
    try:
        wait_until(lambda: statuses(session_factory)["processing"] == 2, what="P2 jobs to start")
        [engage] = enqueue_many(session_factory, acme, "ai.engage", 1)
        wait_until(
            lambda: statuses(session_factory)["completed"] == 1, what="the P1 job to complete"
        )
        with session_factory() as session:
            assert session.get_one(Job, engage).status == "completed"
        assert statuses(session_factory)["queued"] == 48  # the flood still waits
    finally:
        release.set()
        worker.stop(grace_seconds=10)


def test_several_threads_never_run_one_job_twice(
    engine: Engine, settings: Settings, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    recorder = Recorder()
    from shvya.jobs.service import JobType

    worker = EmbeddedWorker(
        engine,
        handlers={t.value: recorder.handler(t.value) for t in JobType},
        clock=SystemClock(),
        settings=settings.model_copy(update={"job_poll_seconds": 0.05}),
        threads=4,
        p1_threads=2,
    )
    ids = enqueue_many(session_factory, acme, "sequence.step", 150) + enqueue_many(
        session_factory, acme, "ai.engage", 150
    )
    worker.start()
    try:
        wait_until(lambda: statuses(session_factory)["completed"] == 300, what="300 jobs")
    finally:
        worker.stop(grace_seconds=10)
    runs = Counter(job_id for job_id, _ in recorder.runs)
    assert set(runs) == {str(i) for i in ids}
    assert max(runs.values()) == 1


def launch_worker_process(database_url: str, ledger: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs.worker_process", "--ledger", str(ledger), *args],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def start_worker_process(database_url: str, ledger: Path, *args: str) -> subprocess.Popen[str]:
    return wait_ready(launch_worker_process(database_url, ledger, *args))


def ledger_lines(ledger: Path) -> list[list[str]]:
    if not ledger.exists():
        return []
    return [line.split() for line in ledger.read_text().splitlines()]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_worker_processes_never_run_one_job_twice(
    database_url: str, session_factory: sessionmaker[Session], acme: Tenant, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    # Both workers are polling before the first job exists, and each job takes a few
    # milliseconds, so neither process can drain the queue before the other one looks.
    launched = [
        launch_worker_process(database_url, ledger, "--threads", "3", "--sleep", "0.005")
        for _ in range(2)
    ]
    workers = [wait_ready(process) for process in launched]
    try:
        ids = enqueue_many(session_factory, acme, "sequence.step", 400)
        wait_until(lambda: len(ledger_lines(ledger)) >= 400, timeout=60, what="400 deliveries")
        time.sleep(0.5)  # a duplicate would land in the ledger now
    finally:
        for process in workers:
            process.terminate()
            process.wait(timeout=30)
    deliveries = Counter(line[0] for line in ledger_lines(ledger))
    assert set(deliveries) == {str(i) for i in ids}
    assert max(deliveries.values()) == 1
    assert len({line[2] for line in ledger_lines(ledger)}) == 2  # both processes took jobs
    assert statuses(session_factory)["completed"] == 400


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_worker_in_another_process_starts_a_committed_job_at_once(
    database_url: str, session_factory: sessionmaker[Session], acme: Tenant, tmp_path: Path
) -> None:
    """The NOTIFY sent after commit reaches a worker that would otherwise poll only every
    30 s: P1 and P2 jobs start well within a second of their commit."""
    ledger = tmp_path / "ledger"
    worker = start_worker_process(database_url, ledger, "--poll", "30")
    try:
        time.sleep(0.5)  # the worker's first look found nothing; it waits for a wake-up now
        for n, job_type in enumerate(["ai.engage", "sequence.step", "ai.engage"], start=1):
            started = time.monotonic()
            enqueue_many(session_factory, acme, job_type, 1)
            wait_until(lambda n=n: len(ledger_lines(ledger)) == n, timeout=5, what=job_type)
            assert time.monotonic() - started < 2.0
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_job_whose_worker_was_killed_runs_again_after_its_lease(
    database_url: str,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    [job_id] = enqueue_many(session_factory, acme, "ai.engage", 1)
    victim = start_worker_process(database_url, ledger, "--sleep", "30", "--lease", "2")
    wait_until(lambda: statuses(session_factory)["processing"] == 1, what="the job to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    with session_factory() as session:
        assert session.get_one(Job, job_id).status == "processing"  # its owner is gone

    survivor = start_worker_process(database_url, ledger, "--lease", "2")
    try:
        wait_until(lambda: len(ledger_lines(ledger)) == 1, timeout=30, what="the re-run")
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)
    [(ran_id, attempt, _pid)] = ledger_lines(ledger)
    assert (ran_id, attempt) == (str(job_id), "2")
    with session_factory() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.attempts) == ("completed", 2)


def test_sigterm_lets_the_running_job_finish(
    database_url: str, session_factory: sessionmaker[Session], acme: Tenant, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    [job_id] = enqueue_many(session_factory, acme, "ai.engage", 1)
    process = start_worker_process(database_url, ledger, "--sleep", "1.5", "--grace", "20")
    wait_until(lambda: statuses(session_factory)["processing"] == 1, what="the job to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert [line[0] for line in ledger_lines(ledger)] == [str(job_id)]
    assert statuses(session_factory) == Counter({"completed": 1})


def test_sigterm_past_the_grace_period_gives_the_job_back(
    database_url: str, session_factory: sessionmaker[Session], acme: Tenant, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    [job_id] = enqueue_many(session_factory, acme, "ai.engage", 1)
    process = start_worker_process(database_url, ledger, "--sleep", "30", "--grace", "0.5")
    wait_until(lambda: statuses(session_factory)["processing"] == 1, what="the job to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    with session_factory() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.attempts, job.locked_by) == ("queued", 0, None)
    assert ledger_lines(ledger) == []


def test_serve_runs_the_inbound_job_in_its_own_worker_threads(
    engine: Engine, settings: Settings, acme: Tenant
) -> None:
    fast = settings.model_copy(update={"job_poll_seconds": 5.0})  # only a wake-up is fast
    worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=SystemClock(), settings=fast)
    app = create_app(fast, engine=engine, job_engine=worker)
    with TestClient(app) as client:
        # No quiet period: the reply is due at once, so only the wake-up can be fast.
        stage = client.get("/pipelines", headers=acme.agent).json()[0]["stages"][0]
        client.patch(
            f"/stages/{stage['id']}", json={"ai_config": {"quiet_seconds": 0}}, headers=acme.admin
        ).raise_for_status()
        job_id = post_inbound(client, acme, channel="sandbox").json()["job_id"]
        wait_until(
            lambda: (
                client.get(f"/jobs/{job_id}", headers=acme.agent).json()["status"] == "completed"
            ),
            timeout=4,
            what="the after-commit wake-up to run the job",
        )
        job = client.get(f"/jobs/{job_id}", headers=acme.agent).json()
    assert job["type"] == "ai.engage"
    # An empty knowledge base cannot price the plan: the AI hands off rather than guess.
    assert job["result"]["outcome"] == "handed_off"
