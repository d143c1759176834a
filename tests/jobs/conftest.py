from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from shvya.config import Settings
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.runner import Handler, JobContext
from tests.support import FakeClock


class Recorder:
    """Test handlers: record each run, and do what the test tells them to."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.behaviour: dict[str, Callable[[JobContext], Any]] = {}

    def handler(self, job_type: str) -> Handler:
        def handle(ctx: JobContext) -> Any:
            with self.lock:
                self.runs.append((str(ctx.job.id), ctx.job.attempts))
            action = self.behaviour.get(job_type)
            if action is not None:
                return action(ctx)
            return {"ok": True, "type": job_type}

        return handle


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_worker(
    engine: Engine, clock: FakeClock, settings: Settings, recorder: Recorder
) -> Iterator[Callable[..., EmbeddedWorker]]:
    from shvya.jobs.service import JobType

    started: list[EmbeddedWorker] = []

    def build(**kwargs: Any) -> EmbeddedWorker:
        handlers = {t.value: recorder.handler(t.value) for t in JobType}
        worker = EmbeddedWorker(
            engine, handlers=handlers, clock=kwargs.pop("clock", clock), settings=settings, **kwargs
        )
        started.append(worker)
        return worker

    yield build
    for worker in started:
        worker.stop(grace_seconds=5)


def terminate_worker_connections(engine: Engine) -> int:
    """What a database restart does to the worker connections: cut them (their last statement
    was a claim or a completion)."""
    with engine.connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    # this test session's schema only, never another run's on the same server
                    "AND application_name = current_setting('application_name') "
                    "AND (query LIKE '%chosen_jobs%' OR query LIKE 'UPDATE jobs SET status%')"
                )
            ).all()
        )
