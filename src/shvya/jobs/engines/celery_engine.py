"""The Celery engine: Celery carries job ids to workers; the Job row stays the truth.

- After commit, a due job's id is published to its lane's queue (`shvya.p1`, `shvya.p2`);
  the enqueueing transaction already marked it `published_at`.
- The relay publishes what was not (broker down at commit, retries whose backoff has passed,
  jobs requeued after their worker died) and, when a lane's broker queue is empty while the
  table still holds jobs handed to it long ago, republishes them: the broker lost them.
- A task claims its job only if the row is still queued and due, so a redelivered or
  duplicated message runs nothing twice. Celery's retries and ETAs are never used: the due
  time lives in the row (no Redis visibility-timeout or RabbitMQ consumer-timeout repeats).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu.entity import Queue
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shvya.clock import Clock, SystemClock
from shvya.config import Settings, load_settings
from shvya.db.engine import make_engine, make_pooled_engine, make_session_factory
from shvya.jobs.engines.embedded import (
    claim_connection,
    open_worker_connection,
    worker_name,
)
from shvya.jobs.models import JobStatus
from shvya.jobs.runner import Handler, LeaseKeeper, run_claimed_job
from shvya.jobs.service import (
    ClaimedJob,
    EnqueuedJob,
    Lane,
    claim_jobs,
    clear_published,
    jobs_due_for_publishing,
    reap_expired_leases,
    stale_published_jobs,
)

logger = logging.getLogger(__name__)

TASK_NAME = "shvya.run_job"


def queue_name(settings: Settings, lane: Lane | str) -> str:
    return f"{settings.celery_queue_prefix}.{Lane(lane).value}"


def make_celery(settings: Settings) -> Celery:
    if not settings.celery_broker_url:
        raise RuntimeError(
            "SHVYA_JOB_ENGINE=celery needs CELERY_BROKER_URL, e.g. "
            "amqp://guest:guest@127.0.0.1:5672// or redis://127.0.0.1:6379/0"
        )
    app = Celery("shvya", broker=settings.celery_broker_url, set_as_current=False)
    transport_options: dict[str, Any] = {}
    if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        transport_options["confirm_publish"] = True  # a publish returns once RabbitMQ has it
    app.conf.update(
        task_queues=tuple(Queue(queue_name(settings, lane)) for lane in Lane),  # type: ignore[no-untyped-call]
        task_default_queue=queue_name(settings, Lane.p2),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # One message reserved per worker thread: a P2 backlog is never prefetched in front
        # of a P1 message, and a crash loses at most the messages being worked on (the relay
        # finds those from the table anyway).
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=TASK_NAME, ignore_result=True)(run_job_task)
    return app


class CeleryPublisher:
    """JobEngine for processes that enqueue (the API server, handlers): publish after commit.

    Publishing happens on a background thread, so a slow or unreachable broker never holds up
    a response; a job it could not publish is handed back to the relay (published_at cleared).
    After a failure the broker is left alone for a few seconds and jobs go straight to the
    relay, instead of every request waiting for a connection timeout.
    """

    publishes_on_commit = True
    backoff_seconds = 5.0

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.celery = make_celery(settings)
        self.settings = settings
        self.engine = engine
        self.clock: Clock = SystemClock()
        self._pending: queue.SimpleQueue[EnqueuedJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._broker_down_until = 0.0

    def jobs_committed(self, jobs: Sequence[EnqueuedJob]) -> None:
        now = self.clock.now()
        for job in jobs:
            if job.run_at <= now:
                self._pending.put(job)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._drain, name="shvya-celery-publisher", daemon=True
                )
                self._thread.start()

    def _drain(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            batch = [job]
            while not self._pending.empty():
                more = self._pending.get_nowait()
                if more is None:
                    self._pending.put(None)
                    break
                batch.append(more)
            failed = [j.id for j in batch if not self._try_publish(j)]
            if failed:
                logger.warning("celery.publish_failed", extra={"jobs": len(failed)})
                try:
                    with make_session_factory(self.engine)() as session:
                        clear_published(session, job_ids=failed)
                        session.commit()
                except Exception:  # the relay republishes them once they look stale
                    logger.exception("celery.clear_published_failed")

    def _try_publish(self, job: EnqueuedJob) -> bool:
        if time.monotonic() < self._broker_down_until:
            return False
        try:
            self.publish(job)
        except Exception:
            self._broker_down_until = time.monotonic() + self.backoff_seconds
            return False
        return True

    def declare_queues(self) -> None:
        with self.celery.connection_for_write() as conn:
            for lane in Lane:
                conn.default_channel.queue_declare(
                    queue=queue_name(self.settings, lane), durable=True, auto_delete=False
                )

    def publish(self, job: EnqueuedJob) -> None:
        self.celery.send_task(
            TASK_NAME, args=[str(job.id)], queue=queue_name(self.settings, job.lane), retry=False
        )

    def queue_depth(self, lane: Lane) -> int:
        """Messages waiting in the lane's broker queue (not those a worker holds)."""
        with self.celery.connection_for_write() as conn:
            # Not passive: Redis has no key for an empty queue, and a passive declare of an
            # empty Redis queue fails; declaring with Celery's own arguments is a no-op.
            declared = conn.default_channel.queue_declare(
                queue=queue_name(self.settings, lane), durable=True, auto_delete=False
            )
            return int(declared.message_count)

    def start(self) -> None:
        self._ensure_thread()

    def stop(self, grace_seconds: float | None = None) -> None:
        """Publish what is pending, then stop the thread."""
        self._pending.put(None)
        thread = self._thread
        if thread is not None:
            thread.join(timeout=grace_seconds if grace_seconds is not None else 10.0)


class CeleryRelay:
    """Hands the broker every due job it does not have, from the Job table."""

    def __init__(
        self, engine: Engine, *, settings: Settings, publisher: CeleryPublisher, clock: Clock
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        self.session_factory: sessionmaker[Session] = make_session_factory(engine)

    def run_once(self) -> int:
        now = self.clock.now()
        with self.session_factory() as session:
            reap_expired_leases(session, now=now)
            jobs = jobs_due_for_publishing(session, now=now, limit=1000)
            session.commit()
        published = self._publish(jobs)
        for lane in Lane:
            if self.publisher.queue_depth(lane) > 0:
                continue  # a backlog, not a loss: the broker still has work for this lane
            with self.session_factory() as session:
                lost = stale_published_jobs(
                    session,
                    lane=lane,
                    now=now,
                    older_than_seconds=self.settings.relay_republish_after_seconds,
                    limit=1000,
                )
                session.commit()
            if lost:
                logger.warning(
                    "celery.republish_lost", extra={"lane": lane.value, "jobs": len(lost)}
                )
            published += self._publish(lost)
        return published

    def _publish(self, jobs: Sequence[EnqueuedJob]) -> int:
        failed: list[uuid.UUID] = []
        for job in jobs:
            try:
                self.publisher.publish(job)
            except Exception:
                failed.append(job.id)
        if failed:
            with self.session_factory() as session:
                clear_published(session, job_ids=failed)
                session.commit()
            logger.warning("celery.relay_publish_failed", extra={"jobs": len(failed)})
        return len(jobs) - len(failed)

    def run_forever(self, stop: threading.Event, interval_seconds: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("celery.relay_failed")
            stop.wait(interval_seconds)


# --- inside a Celery worker process -----------------------------------------------------------


@dataclass
class _Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    handlers: dict[str, Handler]
    clock: Clock
    leases: LeaseKeeper
    _local: threading.local = field(default_factory=threading.local)

    def claim_connection(self) -> Connection:
        """This Celery thread's own worker connection (embedded.open_worker_connection),
        kept between tasks: a task's claim and a completion that needs no transaction take
        no pool checkout."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = open_worker_connection(self.engine)
            self._local.conn = conn
        return conn

    def drop_claim_connection(self) -> None:
        """Never reuse a connection a statement failed on (the server may have gone away)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()


# Threads of this Celery node (`-c`), known at worker_init: each keeps a connection for its
# claims besides the ones its handlers use, and the pool must hold both.
_node_threads = 0


@cache
def _runtime() -> _Runtime:
    from shvya.jobs.runner import load_handlers

    settings = load_settings()
    pool_size = max(settings.db_pool_size, 2 * _node_threads + 2)
    engine = make_pooled_engine(settings.database_url, pool_size)
    clock = SystemClock()
    publisher = CeleryPublisher(settings, engine)
    runtime = _Runtime(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine, notifier=publisher),
        handlers=load_handlers(settings.job_handlers),
        clock=clock,
        leases=LeaseKeeper(engine, clock=clock, lease_seconds=settings.job_lease_seconds),
    )
    threading.Thread(target=_heartbeat, args=(runtime,), daemon=True, name="shvya-leases").start()
    return runtime


def _warm_up(sender: Any = None, **_kwargs: Any) -> None:
    """Build the runtime before the node consumes: importing the handlers (the AI stack among
    them) and opening the pool cost the first task of each node about 200 ms otherwise, and
    that first task may be a lead's P1 reply (bench/queue.py, priority)."""
    global _node_threads
    concurrency = getattr(sender, "concurrency", 0)
    _node_threads = concurrency if isinstance(concurrency, int) else 0  # `-c` as given
    try:
        _runtime().engine.connect().close()  # one pooled connection, open before the first task
    except Exception:  # the first task builds it again (and says what is wrong)
        logger.exception("celery.warm_up_failed")


worker_init.connect(_warm_up, weak=False)


def _heartbeat(runtime: _Runtime) -> None:
    stop = threading.Event()
    while not stop.wait(max(0.5, runtime.settings.job_lease_seconds / 3)):
        try:
            runtime.leases.heartbeat()
        except Exception:
            logger.exception("celery.heartbeat_failed")


def run_job_task(job_id: str) -> str:
    runtime = _runtime()
    if runtime.engine.dialect.name != "postgresql":
        # SQLite: the claim's transaction holds the write lock; commit it before the handler.
        with claim_connection(runtime.engine) as conn:
            jobs = _claim_by_id(runtime, conn, job_id)
        return _run_task_job(runtime, jobs, autocommit=None)
    try:
        conn = runtime.claim_connection()
        try:
            jobs = _claim_by_id(runtime, conn, job_id)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The kept connection was cut while idle (a database restart): once more on a
            # new one, instead of leaving the job to the relay.
            runtime.drop_claim_connection()
            conn = runtime.claim_connection()
            jobs = _claim_by_id(runtime, conn, job_id)
        # The claim's connection also records a success that needs no transaction.
        return _run_task_job(runtime, jobs, autocommit=conn)
    except Exception:
        runtime.drop_claim_connection()
        raise


def _claim_by_id(runtime: _Runtime, conn: Connection, job_id: str) -> list[ClaimedJob]:
    return claim_jobs(
        conn,
        worker_id=f"{worker_name()}:{threading.current_thread().name}",
        now=runtime.clock.now(),
        lease_seconds=runtime.settings.job_lease_seconds,
        job_id=uuid.UUID(job_id),
    )


def _run_task_job(
    runtime: _Runtime, jobs: list[ClaimedJob], *, autocommit: Connection | None
) -> str:
    if not jobs:
        return "not claimable"  # already taken, finished, or not due: a duplicate message
    job = jobs[0]
    runtime.leases.add(job)
    try:
        run = run_claimed_job(
            job,
            session_factory=runtime.session_factory,
            handlers=runtime.handlers,
            clock=runtime.clock,
            settings=runtime.settings,
            autocommit=autocommit,
        )
    finally:
        runtime.leases.discard(job)
    return run.status.value if isinstance(run.status, JobStatus) else "lease lost"


def _module_app() -> Celery:
    # `celery -A shvya.jobs.engines.celery_engine:celery_app worker` imports this name.
    try:
        return make_celery(load_settings())
    except RuntimeError:
        return Celery("shvya", set_as_current=False)


celery_app = _module_app()


def _node_exit_code(returncode: int) -> int:
    """A node's exit status as ours. A node that was still starting when the stop came has no
    signal handler yet and ends by our SIGTERM itself: it had claimed nothing, so that is a
    clean stop. Any other death by a signal is a failure (never a negative exit status, which
    the shell would show as 241)."""
    if returncode == -signal.SIGTERM:
        return 0
    return 1 if returncode < 0 else returncode


def run_celery_workers(settings: Settings, *, threads: int, p1_threads: int) -> int:
    """`shvya worker --engine celery`: two Celery worker nodes (one for P1 only, one for any
    lane) and the relay, until SIGTERM or SIGINT."""
    make_celery(settings)  # fail early, with the message, when the broker is not configured
    common = [
        sys.executable, "-m", "celery", "-A", f"{__name__}:celery_app", "worker",
        "--pool", "threads", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", settings.log_level.upper(),
    ]  # fmt: skip
    # Handlers first: a stop that comes while the nodes start must still stop them.
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    p1, p2 = queue_name(settings, Lane.p1), queue_name(settings, Lane.p2)
    nodes = [(f"p1-{os.getpid()}@%h", [p1], p1_threads)]
    if threads > 0:
        nodes.append((f"any-{os.getpid()}@%h", [p1, p2], threads))
    processes = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [*common, "-n", name, "-Q", ",".join(queues), "-c", str(concurrency)]
        )
        for name, queues, concurrency in nodes
    ]
    engine = make_engine(settings.database_url, pool_size=2)
    relay = CeleryRelay(
        engine, settings=settings, publisher=CeleryPublisher(settings, engine), clock=SystemClock()
    )
    relay_thread = threading.Thread(target=relay.run_forever, args=(stop,), daemon=True)
    relay_thread.start()
    while not stop.wait(1.0):
        if any(process.poll() is not None for process in processes):
            logger.error("celery.worker_exited")
            stop.set()
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish running tasks
    code = 0
    for process in processes:
        try:
            code = code or _node_exit_code(
                process.wait(timeout=settings.shutdown_grace_seconds + 10)
            )
        except subprocess.TimeoutExpired:
            process.kill()
            code = 1
    relay_thread.join(timeout=5)
    engine.dispose()
    return code
