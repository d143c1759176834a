"""The Celery engine against the real RabbitMQ and Redis of this machine, on PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.clock import SystemClock
from shvya.config import Settings
from shvya.db.engine import make_session_factory
from shvya.jobs.engines.celery_engine import CeleryPublisher, queue_name
from shvya.jobs.models import Job
from shvya.jobs.service import EnqueuedJob, Lane, enqueue_job
from tests.conftest import IN_CI
from tests.jobs.conftest import terminate_worker_connections
from tests.jobs.test_workers import ledger_lines, statuses, wait_until
from tests.support import Tenant, post_inbound

REPO = Path(__file__).resolve().parents[2]
BROKERS = {
    "rabbitmq": os.environ.get("SHVYA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": os.environ.get("SHVYA_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"),
}

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 2):
            return True
    except OSError:
        return False


@pytest.fixture(params=list(BROKERS))
def celery_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    url = BROKERS[request.param]
    if not reachable(url):
        message = f"{request.param} not reachable at {url}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the Celery tests must run)", pytrace=False)
        pytest.skip(message)
    configured = settings.model_copy(
        update={
            "celery_broker_url": url,
            "celery_queue_prefix": f"shvya_test_{secrets.token_hex(4)}",
        }
    )
    yield configured
    publisher = CeleryPublisher(configured, engine=None)  # type: ignore[arg-type]
    with publisher.celery.connection_for_write() as conn:
        for lane in Lane:
            conn.default_channel.queue_delete(queue=queue_name(configured, lane))
    if request.param == "redis":
        # Kombu's Redis transport leaves its binding keys (and a queue list a worker
        # re-declared at shutdown) behind: remove everything this test's prefix named.
        import redis

        client = redis.Redis.from_url(url)
        prefix = configured.celery_queue_prefix
        leftovers = [key for key in client.scan_iter(match=f"*{prefix}*")]
        if leftovers:
            client.delete(*leftovers)
        client.close()


def start_celery_worker(
    settings: Settings, ledger: Path, *, republish_after: float = 1
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": settings.celery_broker_url or "",
        "SHVYA_CELERY_QUEUE_PREFIX": settings.celery_queue_prefix,
        "SHVYA_JOB_HANDLERS": "tests.jobs.ledger_handlers:handlers",
        "SHVYA_TEST_LEDGER": str(ledger),
        "SHVYA_RELAY_REPUBLISH_AFTER_SECONDS": str(republish_after),
        "SHVYA_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "shvya", "worker", "--engine", "celery", "--threads", "2"],
        cwd=REPO,
        env=env,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def statuses_published(factory: sessionmaker[Session], ids: list[uuid.UUID]) -> int:
    with factory() as session:
        return len(
            session.scalars(
                select(Job.id).where(Job.id.in_(ids), Job.published_at.is_not(None))
            ).all()
        )


def enqueue_with(
    factory: sessionmaker[Session], tenant: Tenant, count: int, job_type: str = "sequence.step"
) -> list[uuid.UUID]:
    now = SystemClock().now()
    with factory() as session:
        ids = [
            enqueue_job(session, job_type, {"i": i}, company_id=tenant.company_id, now=now)[0]
            for i in range(count)
        ]
        session.commit()
    return ids


def test_jobs_run_once_through_celery_even_when_the_broker_lost_or_duplicated_them(
    celery_settings: Settings,
    engine: Engine,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    publisher = CeleryPublisher(celery_settings, engine)
    publishing = make_session_factory(engine, notifier=publisher)

    # 1. broker unreachable at commit time: the publish fails, the job waits for the relay
    down = celery_settings.model_copy(update={"celery_broker_url": "redis://127.0.0.1:9/0"})
    unreachable = make_session_factory(engine, notifier=CeleryPublisher(down, engine))
    missed = enqueue_with(unreachable, acme, 5)
    wait_until(lambda: statuses_published(session_factory, missed) == 0, what="hand-back")
    # 2. published, then the broker loses its messages (Redis wiped, queues purged)
    publisher.declare_queues()
    lost = enqueue_with(publishing, acme, 5)
    wait_until(lambda: publisher.queue_depth(Lane.p2) == 5, what="5 messages in the broker")
    with publisher.celery.connection_for_write() as conn:
        for lane in Lane:
            conn.default_channel.queue_purge(queue=queue_name(celery_settings, lane))
    # 3. published three times over (a relay and a redelivery): runs once all the same
    doubled = enqueue_with(publishing, acme, 5, job_type="ai.engage")
    for job_id in doubled:
        for _ in range(2):
            publisher.publish(EnqueuedJob(id=job_id, lane=Lane.p1, run_at=SystemClock().now()))

    worker = start_celery_worker(celery_settings, ledger)
    try:
        wait_until(lambda: len(ledger_lines(ledger)) >= 15, timeout=60, what="15 deliveries")
        # 4. while it runs: the inbound path publishes after commit
        app = create_app(celery_settings, engine=engine, job_engine=publisher)
        with TestClient(app) as client:
            live = [
                post_inbound(client, acme, phone=f"+1415555012{i}").json()["job_id"]
                for i in range(5)
            ]
        wait_until(lambda: len(ledger_lines(ledger)) >= 20, timeout=60, what="20 deliveries")
        time.sleep(1.5)  # room for a duplicate to show up
    finally:
        stop(worker)
    deliveries = Counter(line[0] for line in ledger_lines(ledger))
    expected = {str(i) for i in missed + lost + doubled} | set(live)
    assert set(deliveries) == expected
    assert max(deliveries.values()) == 1
    assert statuses(session_factory) == Counter({"completed": 20})


def test_a_celery_thread_whose_connection_was_cut_runs_its_next_job_at_once(
    celery_settings: Settings,
    engine: Engine,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    publisher = CeleryPublisher(celery_settings, engine)
    publisher.declare_queues()
    publishing = make_session_factory(engine, notifier=publisher)
    # The relay would only republish a job whose message was spent after 10 minutes: a
    # job that runs within seconds ran from its own message.
    worker = start_celery_worker(celery_settings, ledger, republish_after=600)
    try:
        enqueue_with(publishing, acme, 4)
        wait_until(lambda: len(ledger_lines(ledger)) >= 4, timeout=60, what="4 deliveries")
        # The database drops the connections each Celery thread keeps between its tasks (a
        # restart, a proxy's idle timeout): their last statement was a job's completion.
        assert terminate_worker_connections(engine), "no worker connection found to cut"
        enqueue_with(publishing, acme, 4)
        wait_until(lambda: len(ledger_lines(ledger)) >= 8, timeout=20, what="8 deliveries")
    finally:
        stop(worker)
    assert statuses(session_factory) == Counter({"completed": 8})


def test_a_celery_worker_stopped_while_its_nodes_start_exits_cleanly(
    celery_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    # A deploy that stops a worker right after starting it (a rollout, a crash loop's restart)
    # sends SIGTERM before the Celery nodes have their handlers: that is a clean stop, with
    # exit status 0, not a node "killed by a signal" (status 241 in the shell).
    worker = start_celery_worker(celery_settings, tmp_path / "ledger")
    try:
        wait_until(lambda: len(child_pids(worker.pid)) >= 2, timeout=60, what="two nodes")
    finally:
        stop(worker)  # at once: the nodes are still importing, before any handler is set


def child_pids(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []
