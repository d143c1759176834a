"""The measurements behind bench/queue.py (see its docstring for what and how to run)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import celery_anchor
import psycopg
import raw_loop
from common import (
    DEFAULT_AMQP_URL,
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    PROCESSES,
    PYTHON,
    REPO_DIR,
    ShvyaDb,
    broker_label,
    broker_reachable,
    cleanup_on_exit,
    delete_broker_queues,
    enqueue_jobs,
    fmt_rate,
    fmt_ratio,
    machine_description,
    markdown_table,
    migrated_shvya_db,
    now,
    percentile,
    pg_schema,
    say,
    shvya_env,
    shvya_worker_argv,
    unfinished_jobs,
    vacuum_analyze,
    wait_for_quiet_machine,
    wait_until,
    window_rate,
)
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from shvya.jobs.engines.celery_engine import CeleryPublisher, queue_name
from shvya.jobs.models import Job
from shvya.jobs.service import EnqueuedJob, Lane, enqueue_job

P2_TYPE = "sequence.step"  # priority 70, the bulk lane
P1_TYPE = "ai.engage"  # priority 100
PROCESSES_PER_ENGINE = 2
# Autovacuum settings the migration 0002 sets on `jobs` (PostgreSQL), reset for comparison.
AUTOVACUUM_OPTIONS = (
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
    "fillfactor",
)
JOB_COLUMNS = [column.name for column in Job.__table__.columns]


@dataclass
class Options:
    pg_url: str
    amqp_url: str
    redis_url: str
    jobs: int
    sqlite_jobs: int
    autovacuum_jobs: int
    p2_jobs: int
    p1_jobs: int
    p1_interval: float
    threads: int
    procrastinate_concurrency: int
    backends: set[str]
    parts: set[str]
    load_threshold: float
    vacuum_every: float
    p2_sleep: float


@dataclass
class Throughput:
    system: str
    backend: str
    batch: str
    workers: str
    jobs: int
    steady: float  # jobs/s between the 5% and the 95% completion
    overall: float  # jobs/s from the first start to the last completion
    load: float
    check: str
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    throughput: list[Throughput] = field(default_factory=list)
    priority: list[list[str]] = field(default_factory=list)
    autovacuum: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, system: str, backend: str, batch: str = "") -> Throughput | None:
        for row in self.throughput:
            if (
                row.system == system
                and row.backend == backend
                and (not batch or row.batch == batch)
            ):
                return row
        return None


def bench_env(**extra: str) -> dict[str, str]:
    return shvya_env("", handlers="bench.handlers:noop_handlers", **extra)


# --- raw SKIP LOCKED loop ----------------------------------------------------------------------


RAW_LOOP = "raw SKIP LOCKED loop"
RAW_LOOP_ASYNC = "raw SKIP LOCKED loop, commits not flushed"


def measure_raw_loop(options: Options, batch: int, *, async_commit: bool = False) -> Throughput:
    """`async_commit`: the loop's connections set synchronous_commit off, as SHVYA's worker
    connections do (jobs/engines/embedded.py, open_worker_connection): the like-for-like
    anchor for what that setting buys."""
    with (
        pg_schema(options.pg_url, "raw") as schema,
        psycopg.connect(schema.conninfo, autocommit=True) as conn,
    ):
        conn.execute(raw_loop.CREATE)
        conn.execute(raw_loop.FILL, (options.jobs,))
        conn.execute("VACUUM ANALYZE raw_jobs")
        load = wait_for_quiet_machine(options.load_threshold)
        start_at = time.time() + 1.5
        workers = [
            PROCESSES.spawn(
                "raw-loop",
                [
                    PYTHON,
                    "-m",
                    "bench.raw_loop",
                    "--conninfo",
                    schema.conninfo,
                    "--batch",
                    str(batch),
                    "--start-at",
                    f"{start_at:.3f}",
                    *(["--async-commit"] if async_commit else []),
                ],
                bench_env(),
            )
            for _ in range(PROCESSES_PER_ENGINE)
        ]
        for worker in workers:
            if PROCESSES.wait(worker, timeout=900) != 0:
                raise RuntimeError(f"raw loop failed:\n{PROCESSES.tail(worker)}")
        done = [
            row[0]
            for row in conn.execute("SELECT extract(epoch FROM done_at)::float8 FROM raw_jobs")
        ]
        claims, max_claims, completed = conn.execute(
            "SELECT sum(claims), max(claims), count(*) FILTER (WHERE status = 'done') FROM raw_jobs"
        ).fetchone()
    check = (
        "ok"
        if (claims, max_claims, completed) == (options.jobs, 1, options.jobs)
        else (f"claims {claims}, max per job {max_claims}, done {completed}")
    )
    return Throughput(
        system=RAW_LOOP_ASYNC if async_commit else RAW_LOOP,
        backend="PostgreSQL",
        batch=str(batch),
        workers=f"{PROCESSES_PER_ENGINE} processes x 1 connection",
        jobs=options.jobs,
        steady=window_rate(done, 0.05, 0.95),
        overall=options.jobs / (max(done) - start_at),
        load=load,
        check=check,
    )


# --- procrastinate -----------------------------------------------------------------------------


PROCRASTINATE = "procrastinate 3.10"
PROCRASTINATE_ASYNC = "procrastinate 3.10, commits not flushed"


def measure_procrastinate(options: Options, *, async_commit: bool = False) -> Throughput:
    """`async_commit`: procrastinate's worker connections set synchronous_commit off, as
    SHVYA's worker connections do: the like-for-like anchor for SHVYA's batch-1 worker."""
    with pg_schema(options.pg_url, "procrastinate") as schema:
        setup = [PYTHON, "-m", "bench.procrastinate_anchor", "--conninfo", schema.conninfo]
        conninfo = schema.conninfo
        if async_commit:
            conninfo = conninfo.replace("options=", "options=-csynchronous_commit%3Doff%20", 1)
        base = [PYTHON, "-m", "bench.procrastinate_anchor", "--conninfo", conninfo]
        env = bench_env()
        for command in (["schema"], ["defer", str(options.jobs)]):
            subprocess.run([*setup, *command], cwd=REPO_DIR, env=env, check=True)
        with psycopg.connect(schema.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE procrastinate_jobs")
            load = wait_for_quiet_machine(options.load_threshold)
            launched = time.time()
            concurrency = str(options.procrastinate_concurrency)
            workers = [
                PROCESSES.spawn("procrastinate", [*base, "worker", "-c", concurrency], env)
                for _ in range(PROCESSES_PER_ENGINE)
            ]

            def left() -> int:
                return int(
                    conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    ).fetchone()[0]
                )

            try:
                wait_until(lambda: left() == 0, timeout=900, what="procrastinate", interval=0.25)
            finally:
                for worker in workers:
                    PROCESSES.stop(worker)
            events: dict[str, list[float]] = {"started": [], "succeeded": []}
            for kind, at in conn.execute(
                "SELECT type::text, extract(epoch FROM at)::float8 FROM procrastinate_events "
                "WHERE type IN ('started', 'succeeded')"
            ):
                events[kind].append(at)
    done = events["succeeded"]
    check = (
        "ok"
        if len(done) == len(events["started"]) == options.jobs
        else (f"started {len(events['started'])}, succeeded {len(done)}")
    )
    return Throughput(
        system=PROCRASTINATE_ASYNC if async_commit else PROCRASTINATE,
        backend="PostgreSQL",
        batch="1",
        workers=f"{PROCESSES_PER_ENGINE} processes x concurrency {concurrency} (async no-op)",
        jobs=options.jobs,
        steady=window_rate(done, 0.05, 0.95),
        overall=options.jobs / (max(done) - min(events["started"])),
        load=load,
        check=check,
        extra={"launch_to_done_s": max(done) - launched},
    )


# --- raw Celery --------------------------------------------------------------------------------


def measure_raw_celery(options: Options, broker: str) -> Throughput:
    queue = f"bench_anchor_{int(time.time() * 1000) % 10**9}"
    count_dir = Path(tempfile.mkdtemp(prefix="shvya-bench-celery-"))
    app = celery_anchor.make_app(broker, queue)
    try:
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for n in range(options.jobs):
                app.send_task(celery_anchor.TASK, args=[n], queue=queue, producer=producer)
        publish_rate = options.jobs / (time.perf_counter() - started)
        env = bench_env(BENCH_BROKER_URL=broker, BENCH_QUEUE=queue, BENCH_COUNT_DIR=str(count_dir))
        load = wait_for_quiet_machine(options.load_threshold)
        workers = [
            PROCESSES.spawn(
                "celery-anchor",
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "bench.celery_anchor:app",
                    "worker",
                    "--pool",
                    "threads",
                    "-c",
                    str(options.threads),
                    "-Q",
                    queue,
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                    "-n",
                    f"anchor{i}-{queue}@%h",
                ],
                env,
            )
            for i in range(PROCESSES_PER_ENGINE)
        ]

        def counted(suffix: str) -> int:
            total = 0
            for path in count_dir.glob(f"*.{suffix}"):
                with contextlib.suppress(OSError, ValueError):
                    content = path.read_text()
                    total += int(content) if suffix == "count" else len(content.split())
            return total

        try:
            wait_until(lambda: counted("count") >= options.jobs, timeout=900, what="raw Celery")
            wait_until(lambda: counted("times") >= options.jobs, timeout=30, what="finish times")
            time.sleep(0.5)  # a redelivered duplicate would show now
        finally:
            for worker in workers:
                PROCESSES.stop(worker)
        done = [float(t) for p in count_dir.glob("*.times") for t in p.read_text().split()]
    finally:
        delete_broker_queues(broker, [queue])
        shutil.rmtree(count_dir, ignore_errors=True)
    check = "ok" if len(done) == options.jobs else f"{len(done)} runs of {options.jobs} tasks"
    return Throughput(
        system="raw Celery 5.7",
        backend=broker_label(broker),
        batch="prefetch 1",
        workers=f"{PROCESSES_PER_ENGINE} nodes x {options.threads} threads",
        jobs=options.jobs,
        steady=window_rate(done, 0.05, 0.95),
        overall=options.jobs / (max(done) - min(done)),
        load=load,
        check=check,
        extra={"publish_rate": publish_rate},
    )


# --- SHVYA -------------------------------------------------------------------------------------


class ShvyaPg:
    """One migrated schema for every SHVYA run on PostgreSQL. The jobs are written once by
    enqueue_job and kept in `bench_snapshot`; each run starts from a copy of those rows."""

    def __init__(self, url: str, jobs: int) -> None:
        self.db: ShvyaDb = migrated_shvya_db(url)
        started = time.perf_counter()
        enqueue_jobs(self.db.session_factory, self.db.company_id, P2_TYPE, jobs)
        self.enqueue_rate = jobs / (time.perf_counter() - started)
        with self.db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_snapshot AS SELECT * FROM jobs"))

    def restore(self, copies: int = 1, *, published: bool = False) -> int:
        """Empty `jobs`, then `copies` copies of the snapshot (copies after the first get new
        ids and earlier due times). Returns the number of jobs."""
        columns = ", ".join(JOB_COLUMNS)
        with self.db.engine.begin() as conn:
            conn.execute(text("TRUNCATE jobs"))
            for copy in range(copies):
                values = ", ".join(
                    "gen_random_uuid()"
                    if name == "id" and copy
                    else f"run_at - interval '{copy} hour'"
                    if name == "run_at"
                    else "now()"
                    if name == "published_at" and published
                    else name
                    for name in JOB_COLUMNS
                )
                conn.execute(
                    text(f"INSERT INTO jobs ({columns}) SELECT {values} FROM bench_snapshot")
                )
            total = int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())
        vacuum_analyze(self.db.engine, "jobs")
        return total


JobRow = tuple[str, str, int, float, float | None, float | None]


def job_times(db: ShvyaDb) -> list[JobRow]:
    """(type, status, attempts, created, started, finished) of every job, times in epoch s."""

    def epoch(value: datetime | None) -> float | None:
        return None if value is None else value.timestamp()

    with db.session_factory() as session:
        return [
            (job_type, status, attempts, created.timestamp(), epoch(started), epoch(finished))
            for job_type, status, attempts, created, started, finished in session.execute(
                select(
                    Job.type,
                    Job.status,
                    Job.attempts,
                    Job.created_at,
                    Job.started_at,
                    Job.finished_at,
                )
            )
        ]


def shvya_check(rows: list[JobRow]) -> str:
    statuses = Counter(row[1] for row in rows)
    attempts = Counter(row[2] for row in rows)
    if set(statuses) == {"completed"} and set(attempts) == {1}:
        return "ok"
    return f"statuses {dict(statuses)}, attempts {dict(attempts)}"


def run_shvya_workers(
    db: ShvyaDb,
    *,
    engine_name: str,
    count: int,
    env: dict[str, str],
    threads: int,
    timeout: float = 900,
) -> float:
    """Start the worker processes, wait until no job is left, stop them. Returns the time
    they were launched at."""
    launched = time.time()
    workers = [
        PROCESSES.spawn(
            f"shvya-{engine_name}", shvya_worker_argv(engine=engine_name, threads=threads), env
        )
        for _ in range(count)
    ]
    try:
        wait_until(
            lambda: unfinished_jobs(db.engine) == 0,
            timeout=timeout,
            what=f"SHVYA {engine_name}",
            interval=0.25,
        )
    except TimeoutError:
        for worker in workers:
            say(PROCESSES.tail(worker))
        raise
    finally:
        for worker in workers:
            PROCESSES.stop(worker)
    return launched


def throughput_of(rows: list[JobRow]) -> tuple[float, float, list[float]]:
    done = [row[5] for row in rows if row[5] is not None]
    starts = [row[4] for row in rows if row[4] is not None]
    return window_rate(done, 0.05, 0.95), len(done) / (max(done) - min(starts)), done


def measure_shvya_embedded_pg(options: Options, shvya: ShvyaPg, batch: int) -> Throughput:
    jobs = shvya.restore()
    load = wait_for_quiet_machine(options.load_threshold)
    env = shvya_env(
        shvya.db.url,
        handlers="bench.handlers:noop_handlers",
        SHVYA_JOB_CLAIM_BATCH=str(batch),
    )
    run_shvya_workers(
        shvya.db,
        engine_name="embedded",
        count=PROCESSES_PER_ENGINE,
        env=env,
        threads=options.threads,
    )
    rows = job_times(shvya.db)
    steady, overall, _ = throughput_of(rows)
    return Throughput(
        system="SHVYA embedded",
        backend="PostgreSQL",
        batch=str(batch),
        workers=f"{PROCESSES_PER_ENGINE} processes x ({options.threads} + 1 P1) threads",
        jobs=jobs,
        steady=steady,
        overall=overall,
        load=load,
        check=shvya_check(rows),
        extra={"enqueue_rate": shvya.enqueue_rate},
    )


def celery_settings(database_url: str, broker: str, prefix: str) -> Settings:
    return Settings(database_url=database_url, celery_broker_url=broker, celery_queue_prefix=prefix)


def publish_all(publisher: CeleryPublisher, db: ShvyaDb, lane: Lane) -> float:
    """What the after-commit hook does for every job enqueued through a publishing session,
    for the jobs restored from the snapshot (already marked published). Returns the rate."""
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, run_at FROM jobs ORDER BY run_at")).all()
    started = time.perf_counter()
    for job_id, run_at in rows:
        publisher.publish(EnqueuedJob(id=job_id, lane=lane, run_at=run_at))
    rate = len(rows) / (time.perf_counter() - started)
    wait_until(
        lambda: publisher.queue_depth(lane) >= len(rows), timeout=60, what="the broker queue"
    )
    return rate


def measure_shvya_celery(options: Options, shvya: ShvyaPg, broker: str) -> Throughput:
    prefix = f"bench_{int(time.time() * 1000) % 10**9}"
    settings = celery_settings(shvya.db.url, broker, prefix)
    publisher = CeleryPublisher(settings, shvya.db.engine)
    try:
        jobs = shvya.restore(published=True)
        publisher.declare_queues()
        publish_rate = publish_all(publisher, shvya.db, Lane.p2)
        load = wait_for_quiet_machine(options.load_threshold)
        env = shvya_env(
            shvya.db.url,
            handlers="bench.handlers:noop_handlers",
            CELERY_BROKER_URL=broker,
            SHVYA_CELERY_QUEUE_PREFIX=prefix,
        )
        run_shvya_workers(
            shvya.db,
            engine_name="celery",
            count=PROCESSES_PER_ENGINE,
            env=env,
            threads=options.threads,
        )
    finally:
        delete_broker_queues(broker, [queue_name(settings, lane) for lane in Lane])
    rows = job_times(shvya.db)
    steady, overall, _ = throughput_of(rows)
    return Throughput(
        system="SHVYA Celery engine",
        backend=broker_label(broker),
        batch="1 (claim by id)",
        workers=f"{PROCESSES_PER_ENGINE} x (P1 node x 1 + node x {options.threads}) threads",
        jobs=jobs,
        steady=steady,
        overall=overall,
        load=load,
        check=shvya_check(rows),
        extra={"publish_rate": publish_rate},
    )


@contextlib.contextmanager
def sqlite_snapshot(options: Options) -> Iterator[tuple[Path, Path, float]]:
    directory = Path(tempfile.mkdtemp(prefix="shvya-bench-sqlite-"))
    try:
        path = directory / "shvya.db"
        db = migrated_shvya_db(f"sqlite:///{path}")
        started = time.perf_counter()
        enqueue_jobs(db.session_factory, db.company_id, P2_TYPE, options.sqlite_jobs)
        rate = options.sqlite_jobs / (time.perf_counter() - started)
        db.dispose()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        snapshot = directory / "snapshot.db"
        shutil.copy(path, snapshot)
        yield path, snapshot, rate
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_shvya_sqlite(
    options: Options, path: Path, snapshot: Path, enqueue_rate: float, batch: int
) -> Throughput:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(snapshot, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    db = ShvyaDb(
        url=url, engine=engine, session_factory=make_session_factory(engine), company_id=None
    )  # type: ignore[arg-type]
    try:
        load = wait_for_quiet_machine(options.load_threshold)
        env = shvya_env(
            url, handlers="bench.handlers:noop_handlers", SHVYA_JOB_CLAIM_BATCH=str(batch)
        )
        run_shvya_workers(db, engine_name="embedded", count=1, env=env, threads=options.threads)
        rows = job_times(db)
    finally:
        engine.dispose()
    steady, overall, _ = throughput_of(rows)
    return Throughput(
        system="SHVYA embedded",
        backend="SQLite",
        batch=str(batch),
        workers=f"1 process x ({options.threads} + 1 P1) threads",
        jobs=options.sqlite_jobs,
        steady=steady,
        overall=overall,
        load=load,
        check=shvya_check(rows),
        extra={"enqueue_rate": enqueue_rate},
    )


# --- the priority test -------------------------------------------------------------------------


@dataclass
class PriorityRun:
    engine: str
    p2_backlog: int
    latencies_ms: list[float]
    p2_done_meanwhile: int
    load: float


def enqueue_p1_one_at_a_time(
    options: Options, factory: Callable[[], Session], company_id: uuid.UUID
) -> None:
    """P1 jobs arrive one at a time, one transaction each, every p1_interval seconds."""
    start = time.monotonic()
    for n in range(options.p1_jobs):
        time.sleep(max(0.0, start + n * options.p1_interval - time.monotonic()))
        with factory() as session:
            enqueue_job(session, P1_TYPE, {"n": n}, company_id=company_id, now=now())
            session.commit()


def p1_latencies(db: ShvyaDb) -> tuple[list[float], int]:
    rows = job_times(db)
    latencies = [
        1000 * (started - created)
        for job_type, _s, _a, created, started, _f in rows
        if job_type == P1_TYPE and started is not None
    ]
    p2_done = sum(1 for row in rows if row[0] == P2_TYPE and row[1] == "completed")
    return latencies, p2_done


def p1_waiting(db: ShvyaDb) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE type = :t AND started_at IS NULL"),
                {"t": P1_TYPE},
            ).scalar_one()
        )


def processing(db: ShvyaDb) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'processing'")).scalar_one()
        )


def run_priority(
    options: Options,
    shvya: ShvyaPg,
    *,
    engine_name: str,
    env: dict[str, str],
    enqueue_factory: Callable[[], Session],
    settle_s: float,
) -> tuple[list[float], int]:
    workers = [
        PROCESSES.spawn(
            f"priority-{engine_name}",
            shvya_worker_argv(engine=engine_name, threads=options.threads),
            env,
        )
        for _ in range(PROCESSES_PER_ENGINE)
    ]
    try:
        busy = PROCESSES_PER_ENGINE * options.threads
        wait_until(lambda: processing(shvya.db) >= busy, timeout=60, what="busy workers")
        time.sleep(settle_s)  # every worker thread (and Celery's P1 nodes) up and busy
        with shvya.db.engine.connect() as conn:
            p2_before = int(
                conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status = 'completed'")
                ).scalar_one()
            )
        enqueue_p1_one_at_a_time(options, enqueue_factory, shvya.db.company_id)
        wait_until(lambda: p1_waiting(shvya.db) == 0, timeout=120, what="every P1 job to start")
    except TimeoutError:
        for worker in workers:
            say(PROCESSES.tail(worker))
        raise
    finally:
        for worker in workers:
            PROCESSES.stop(worker)
    latencies, p2_done = p1_latencies(shvya.db)
    return latencies, p2_done - p2_before


def measure_priority_embedded(options: Options, shvya: ShvyaPg) -> PriorityRun:
    backlog = shvya.restore(copies=-(-options.p2_jobs // options.jobs))
    load = wait_for_quiet_machine(options.load_threshold)
    env = shvya_env(
        shvya.db.url,
        handlers="bench.handlers:busy_handlers",
        BENCH_P2_SLEEP=str(options.p2_sleep),
        # Idle threads look for work every 5 s: only a LISTEN/NOTIFY wake-up is fast.
        SHVYA_JOB_POLL_SECONDS="5",
    )
    latencies, p2_done = run_priority(
        options,
        shvya,
        engine_name="embedded",
        env=env,
        enqueue_factory=shvya.db.session_factory,
        settle_s=1.0,
    )
    return PriorityRun("SHVYA embedded, PostgreSQL", backlog, latencies, p2_done, load)


def measure_priority_celery(options: Options, shvya: ShvyaPg, broker: str) -> PriorityRun:
    prefix = f"bench_{int(time.time() * 1000) % 10**9}"
    settings = celery_settings(shvya.db.url, broker, prefix)
    publisher = CeleryPublisher(settings, shvya.db.engine)
    try:
        backlog = shvya.restore(copies=-(-options.p2_jobs // options.jobs), published=True)
        publisher.declare_queues()
        publish_all(publisher, shvya.db, Lane.p2)
        load = wait_for_quiet_machine(options.load_threshold)
        env = shvya_env(
            shvya.db.url,
            handlers="bench.handlers:busy_handlers",
            BENCH_P2_SLEEP=str(options.p2_sleep),
            CELERY_BROKER_URL=broker,
            SHVYA_CELERY_QUEUE_PREFIX=prefix,
        )
        latencies, p2_done = run_priority(
            options,
            shvya,
            engine_name="celery",
            env=env,
            # Published after commit by the publisher's thread, as the API server does.
            enqueue_factory=make_session_factory(shvya.db.engine, notifier=publisher),
            settle_s=3.0,
        )
    finally:
        publisher.stop(grace_seconds=5)
        delete_broker_queues(broker, [queue_name(settings, lane) for lane in Lane])
    return PriorityRun(
        f"SHVYA Celery engine, {broker_label(broker)}", backlog, latencies, p2_done, load
    )


# --- autovacuum on the hot queue table ---------------------------------------------------------


@dataclass
class AutovacuumRun:
    settings: str
    jobs: int
    first: float
    last: float
    overall: float
    autovacuums: int
    dead_at_end: int
    load: float
    check: str


def table_stats(db: ShvyaDb) -> tuple[int, int]:
    """(vacuums of `jobs` so far, automatic and manual; its dead tuples now)."""
    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT autovacuum_count + vacuum_count, n_dead_tup FROM pg_stat_user_tables "
                "WHERE relid = 'jobs'::regclass"
            )
        ).one()
    return int(row[0]), int(row[1])


def vacuum_threshold(reloptions: list[str], rows: int) -> int:
    """When autovacuum would vacuum `jobs` under these settings: threshold + scale x rows."""
    values = dict(option.split("=", 1) for option in reloptions)
    threshold = float(values.get("autovacuum_vacuum_threshold", 50))
    scale = float(values.get("autovacuum_vacuum_scale_factor", 0.2))
    return int(threshold + scale * rows)


class VacuumEmulator:
    """Autovacuum's rule for one table, for a server where autovacuum is off: every
    `interval` seconds (autovacuum's naptime), VACUUM `jobs` if it has `threshold` dead tuples
    or more (cost delay 0, as the migration sets)."""

    def __init__(self, db: ShvyaDb, *, threshold: int, interval: float) -> None:
        self.db = db
        self.threshold = threshold
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VacuumEmulator:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            _vacuums, dead = table_stats(self.db)
            if dead >= self.threshold:
                vacuum_analyze(self.db.engine, "jobs")


def measure_autovacuum(
    options: Options,
    shvya: ShvyaPg,
    *,
    label: str,
    reloptions: list[str] | None,
    emulate_every: float | None,
    batch: int,
) -> AutovacuumRun:
    """One run of `autovacuum_jobs` no-op jobs. reloptions None: reset the table's settings to
    PostgreSQL's defaults. emulate_every: run VacuumEmulator beside the workers."""
    with shvya.db.engine.begin() as conn:
        if reloptions is None:
            conn.execute(text(f"ALTER TABLE jobs RESET ({', '.join(AUTOVACUUM_OPTIONS)})"))
        else:
            conn.execute(text(f"ALTER TABLE jobs SET ({', '.join(reloptions)})"))
    jobs = shvya.restore(copies=-(-options.autovacuum_jobs // options.jobs))
    load = wait_for_quiet_machine(options.load_threshold)
    vacuums_before, _ = table_stats(shvya.db)
    env = shvya_env(
        shvya.db.url, handlers="bench.handlers:noop_handlers", SHVYA_JOB_CLAIM_BATCH=str(batch)
    )
    emulator = (
        VacuumEmulator(
            shvya.db,
            threshold=vacuum_threshold(reloptions or [], jobs),
            interval=emulate_every,
        )
        if emulate_every
        else contextlib.nullcontext()
    )
    with emulator:
        run_shvya_workers(
            shvya.db,
            engine_name="embedded",
            count=PROCESSES_PER_ENGINE,
            env=env,
            threads=options.threads,
        )
    rows = job_times(shvya.db)
    vacuums_after, dead = table_stats(shvya.db)
    _steady, overall, done = throughput_of(rows)
    return AutovacuumRun(
        settings=label,
        jobs=jobs,
        first=window_rate(done, 0.0, 0.1),
        last=window_rate(done, 0.9, 1.0),
        overall=overall,
        autovacuums=vacuums_after - vacuums_before,
        dead_at_end=dead,
        load=load,
        check=shvya_check(rows),
    )


def autovacuum_plans(options: Options, shvya: ShvyaPg, results: Results) -> list[dict]:
    with shvya.db.engine.connect() as conn:
        reloptions = list(
            conn.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
            ).scalar_one()
            or []
        )
        autovacuum_on = conn.execute(text("SHOW autovacuum")).scalar_one() == "on"
    settings = ", ".join(option.replace("autovacuum_", "") for option in reloptions)
    if autovacuum_on:
        return [
            {"label": f"migration 0002 ({settings})", "reloptions": reloptions},
            {"label": "reset to PostgreSQL's defaults", "reloptions": None},
        ]
    threshold = vacuum_threshold(reloptions, options.autovacuum_jobs)
    every = options.vacuum_every
    results.notes.append(
        "autovacuum is off on this PostgreSQL server (`SHOW autovacuum`), so the `jobs` "
        "table's own autovacuum settings cannot act here. The benchmark compares a run with no "
        f"vacuum at all with a run where it applies autovacuum's rule for the migration's "
        f"settings itself: every {every:g} s, VACUUM jobs when it has {threshold:,} dead tuples "
        "or more. (A real autovacuum looks at a table once per autovacuum_naptime, 60 s by "
        "default and server-wide: a table setting cannot make it look more often.)"
    )
    return [
        {"label": "no vacuum during the run", "reloptions": reloptions},
        {
            "label": f"VACUUM when >= {threshold:,} dead tuples, checked every {every:g} s",
            "reloptions": reloptions,
            "emulate_every": every,
        },
    ]


# --- the run -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/queue.py", description="Job queue throughput and P1 latency with anchors."
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a look in ~3 min")
    parser.add_argument(
        "--only",
        default="throughput,autovacuum,priority",
        help="parts to run, comma-separated: throughput, autovacuum, priority",
    )
    parser.add_argument(
        "--backends",
        default="postgresql,sqlite,rabbitmq,redis",
        help="comma-separated: postgresql, sqlite, rabbitmq, redis (the anchors follow)",
    )
    parser.add_argument("--jobs", type=int, help="no-op jobs per throughput run (10000)")
    parser.add_argument("--sqlite-jobs", type=int, help="jobs per SQLite run (5000)")
    parser.add_argument("--autovacuum-jobs", type=int, help="jobs of the autovacuum run (50000)")
    parser.add_argument("--p2-jobs", type=int, help="P2 backlog of the priority test (20000)")
    parser.add_argument("--p1-jobs", type=int, help="P1 jobs in the priority test (100)")
    parser.add_argument("--p1-interval", type=float, default=0.1, help="seconds between P1 jobs")
    parser.add_argument(
        "--p2-sleep",
        type=float,
        default=1.0,
        help="seconds each P2 job of the priority test takes (1: a send to a provider)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (2)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=2)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--load-threshold", type=float, default=1.5)
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=10.0,
        help="seconds between vacuum checks when the server's autovacuum is off (10)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    return Options(
        pg_url=args.pg_url,
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        jobs=args.jobs or (2000 if quick else 10_000),
        sqlite_jobs=args.sqlite_jobs or (1000 if quick else 5000),
        autovacuum_jobs=args.autovacuum_jobs or (10_000 if quick else 50_000),
        p2_jobs=args.p2_jobs or (5000 if quick else 20_000),
        p1_jobs=args.p1_jobs or (30 if quick else 100),
        p1_interval=args.p1_interval,
        threads=args.threads,
        procrastinate_concurrency=args.procrastinate_concurrency,
        backends={b.strip() for b in args.backends.split(",") if b.strip()},
        parts={p.strip() for p in args.only.split(",") if p.strip()},
        load_threshold=args.load_threshold,
        vacuum_every=args.vacuum_every,
        p2_sleep=args.p2_sleep,
    )


def brokers(options: Options, results: Results) -> list[str]:
    chosen = []
    for name, url in (("rabbitmq", options.amqp_url), ("redis", options.redis_url)):
        if name not in options.backends:
            continue
        if broker_reachable(url):
            chosen.append(url)
        else:
            results.notes.append(f"{name} not reachable at {url}: its runs were skipped")
    return chosen


def step(title: str, run: Callable[[], object]) -> object:
    say(f"  - {title} ...")
    started = time.monotonic()
    outcome = run()
    say(f"    {describe(outcome)} ({time.monotonic() - started:.0f} s)")
    return outcome


def describe(outcome: object) -> str:
    if isinstance(outcome, Throughput):
        return (
            f"{fmt_rate(outcome.steady)} jobs/s steady, {fmt_rate(outcome.overall)} overall, "
            f"load {outcome.load:.2f}, check {outcome.check}"
        )
    if isinstance(outcome, PriorityRun):
        return (
            f"P1 p50 {percentile(outcome.latencies_ms, 0.5):.1f} ms, "
            f"p99 {percentile(outcome.latencies_ms, 0.99):.1f} ms, load {outcome.load:.2f}"
        )
    if isinstance(outcome, AutovacuumRun):
        return (
            f"first 10% {fmt_rate(outcome.first)} jobs/s, last 10% {fmt_rate(outcome.last)}, "
            f"{outcome.autovacuums} autovacuum(s), load {outcome.load:.2f}"
        )
    return ""


def run(options: Options) -> Results:
    results = Results()
    pg = "postgresql" in options.backends
    broker_urls = brokers(options, results)
    if "throughput" in options.parts:
        say("throughput: no-op jobs, queue filled before the workers start")
        if pg:
            for batch in (1, 10):
                results.throughput.append(
                    step(f"raw loop, batch {batch}", lambda b=batch: measure_raw_loop(options, b))  # type: ignore[misc]
                )
            for batch in (1, 10):
                results.throughput.append(
                    step(  # type: ignore[arg-type]
                        f"raw loop, batch {batch}, synchronous_commit off",
                        lambda b=batch: measure_raw_loop(options, b, async_commit=True),  # type: ignore[misc]
                    )
                )
            results.throughput.append(
                step("procrastinate", lambda: measure_procrastinate(options))  # type: ignore[arg-type]
            )
            results.throughput.append(
                step(  # type: ignore[arg-type]
                    "procrastinate, synchronous_commit off",
                    lambda: measure_procrastinate(options, async_commit=True),
                )
            )
        if "sqlite" in options.backends:
            with sqlite_snapshot(options) as (path, snapshot, rate):
                for batch in (1, 10):
                    results.throughput.append(
                        step(  # type: ignore[arg-type]
                            f"SHVYA embedded on SQLite, batch {batch}",
                            lambda b=batch: measure_shvya_sqlite(options, path, snapshot, rate, b),  # type: ignore[misc]
                        )
                    )
        for broker in broker_urls:
            results.throughput.append(
                step(  # type: ignore[arg-type]
                    f"raw Celery on {broker_label(broker)}",
                    lambda url=broker: measure_raw_celery(options, url),  # type: ignore[misc]
                )
            )
    needs_shvya_pg = pg and bool(options.parts & {"throughput", "autovacuum", "priority"})
    if not needs_shvya_pg:
        return results
    with pg_schema(options.pg_url, "shvya") as schema:
        say(f"SHVYA on PostgreSQL: enqueueing {options.jobs} jobs with enqueue_job ...")
        shvya = ShvyaPg(schema.url, options.jobs)
        say(f"    {shvya.enqueue_rate:,.0f} jobs/s enqueued (1,000 per transaction)")
        try:
            if "throughput" in options.parts:
                for batch in (1, 10):
                    results.throughput.append(
                        step(  # type: ignore[arg-type]
                            f"SHVYA embedded on PostgreSQL, batch {batch}",
                            lambda b=batch: measure_shvya_embedded_pg(options, shvya, b),  # type: ignore[misc]
                        )
                    )
                for broker in broker_urls:
                    results.throughput.append(
                        step(  # type: ignore[arg-type]
                            f"SHVYA Celery engine on {broker_label(broker)}",
                            lambda url=broker: measure_shvya_celery(options, shvya, url),  # type: ignore[misc]
                        )
                    )
            if "priority" in options.parts:
                say("priority: P2 backlog with busy workers, then P1 jobs one at a time")
                runs: list[PriorityRun] = [
                    step(  # type: ignore[list-item]
                        "SHVYA embedded on PostgreSQL",
                        lambda: measure_priority_embedded(options, shvya),
                    )
                ]
                for broker in broker_urls:
                    runs.append(
                        step(  # type: ignore[arg-type]
                            f"SHVYA Celery engine on {broker_label(broker)}",
                            lambda url=broker: measure_priority_celery(options, shvya, url),  # type: ignore[misc]
                        )
                    )
                results.priority = [priority_row(options, r) for r in runs]
            if "autovacuum" in options.parts:
                say(f"autovacuum: {options.autovacuum_jobs} jobs, first and last 10%")
                for plan in autovacuum_plans(options, shvya, results):
                    outcome: AutovacuumRun = step(  # type: ignore[assignment]
                        plan["label"],
                        lambda p=plan: measure_autovacuum(  # type: ignore[misc]
                            options, shvya, batch=10, **{"emulate_every": None, **p}
                        ),
                    )
                    results.autovacuum.append(autovacuum_row(outcome))
        finally:
            shvya.db.dispose()
    return results


def priority_row(options: Options, run: PriorityRun) -> list[str]:
    p50 = percentile(run.latencies_ms, 0.5)
    p99 = percentile(run.latencies_ms, 0.99)
    embedded = "embedded" in run.engine
    target = "p50 < 10, p99 < 50" if embedded else "p50, p99 < 250"
    met = (p50 < 10 and p99 < 50) if embedded else (p99 < 250)
    return [
        run.engine,
        f"{run.p2_backlog:,}",
        f"{len(run.latencies_ms)} of {options.p1_jobs}",
        f"{p50:.1f}",
        f"{p99:.1f}",
        f"{max(run.latencies_ms):.1f}",
        f"{run.p2_done_meanwhile:,}",
        f"{run.load:.2f}",
        target,
        "yes" if met else "**no**",
    ]


def autovacuum_row(run: AutovacuumRun) -> list[str]:
    return [
        run.settings,
        f"{run.jobs:,}",
        fmt_rate(run.first),
        fmt_rate(run.last),
        fmt_ratio(run.last / run.first),
        fmt_rate(run.overall),
        str(run.autovacuums),
        f"{run.dead_at_end:,}",
        f"{run.load:.2f}",
        run.check,
    ]


def ratio_rows(results: Results) -> list[list[str]]:
    """Each comparison says whether it is like for like: the same commit durability
    (SHVYA's worker connections do not wait for the commit's flush, synchronous_commit off)
    and the same claim batch. Targets are set on like-for-like rows only; the others are
    kept to show what each shortcut is worth."""
    rows: list[list[str]] = []

    def add(
        label: str,
        ours: Throughput | None,
        anchor: Throughput | None,
        target: float | None,
        like: str,
    ) -> None:
        if ours is None or anchor is None:
            return
        ratio = ours.steady / anchor.steady
        rows.append(
            [
                label,
                fmt_rate(ours.steady),
                fmt_rate(anchor.steady),
                fmt_ratio(ratio),
                like,
                "-" if target is None else f">= {target:g}x",
                "-" if target is None else ("yes" if ratio >= target else "**no**"),
            ]
        )

    embedded = {b: results.find("SHVYA embedded", "PostgreSQL", b) for b in ("1", "10")}
    raw = {b: results.find(RAW_LOOP, "PostgreSQL", b) for b in ("1", "10")}
    raw_async = {b: results.find(RAW_LOOP_ASYNC, "PostgreSQL", b) for b in ("1", "10")}
    procrastinate = results.find(PROCRASTINATE, "PostgreSQL")
    procrastinate_async = results.find(PROCRASTINATE_ASYNC, "PostgreSQL")
    add(
        "embedded PG batch 1 / procrastinate, commits not flushed",
        embedded["1"],
        procrastinate_async,
        2.0,
        "yes",
    )
    for batch in ("1", "10"):
        add(
            f"embedded PG batch {batch} / raw loop batch {batch}, commits not flushed",
            embedded[batch],
            raw_async[batch],
            0.8,
            "yes",
        )
    add(
        "embedded PG batch 10 / procrastinate, commits not flushed",
        embedded["10"],
        procrastinate_async,
        None,
        "no: batch 10 against 1",
    )
    for batch in ("1", "10"):
        add(
            f"embedded PG batch {batch} / procrastinate",
            embedded[batch],
            procrastinate,
            None,
            "no: its commits are flushed" + ("" if batch == "1" else "; batch 10 against 1"),
        )
    for batch in ("1", "10"):
        add(
            f"embedded PG batch {batch} / raw loop batch {batch}",
            embedded[batch],
            raw[batch],
            None,
            "no: its commits are flushed",
        )
    for backend in ("RabbitMQ", "Redis"):
        add(
            f"Celery engine / raw Celery, {backend}",
            results.find("SHVYA Celery engine", backend),
            results.find("raw Celery 5.7", backend),
            0.35,
            "no: SHVYA also writes each job to PostgreSQL",
        )
    for batch in ("1", "10"):
        add(
            f"embedded SQLite batch {batch} / raw loop (PG) batch {batch}",
            results.find("SHVYA embedded", "SQLite", batch),
            raw[batch],
            None,
            "no: another database",
        )
    add(
        "procrastinate, commits not flushed / flushed",
        procrastinate_async,
        procrastinate,
        None,
        "-",
    )
    add("procrastinate / raw loop batch 1", procrastinate, raw["1"], None, "-")
    add("raw loop batch 10 / batch 1", raw["10"], raw["1"], None, "-")
    return rows


def report(options: Options, results: Results, command: str) -> None:
    say("")
    say(f"## Job queue benchmark ({now():%Y-%m-%d %H:%M} UTC)")
    say(f"Machine: {machine_description()}. Command: `{command}`")
    if results.throughput:
        say("\n### Throughput (no-op jobs; jobs/s between the 5% and the 95% completion)\n")
        say(
            markdown_table(
                [
                    "system",
                    "backend",
                    "claim batch",
                    "workers",
                    "jobs",
                    "jobs/s",
                    "first start to last done",
                    "load",
                    "check",
                ],
                [
                    [
                        r.system,
                        r.backend,
                        r.batch,
                        r.workers,
                        f"{r.jobs:,}",
                        fmt_rate(r.steady),
                        fmt_rate(r.overall),
                        f"{r.load:.2f}",
                        r.check,
                    ]
                    for r in results.throughput
                ],
            )
        )
        say("\n### Ratios (jobs/s, same run)\n")
        say(
            markdown_table(
                [
                    "comparison",
                    "SHVYA / left",
                    "anchor / right",
                    "ratio",
                    "like for like",
                    "target",
                    "met",
                ],
                ratio_rows(results),
            )
        )
        extras = []
        for r in results.throughput:
            if "enqueue_rate" in r.extra:
                extras.append(f"enqueue_job on {r.backend}: {r.extra['enqueue_rate']:,.0f} jobs/s")
            if "publish_rate" in r.extra:
                extras.append(
                    f"{r.system} publish to {r.backend}: {r.extra['publish_rate']:,.0f} messages/s"
                )
        if extras:
            say("\nSide figures: " + "; ".join(dict.fromkeys(extras)) + ".")
    if results.priority:
        say(
            f"\n### Priority: P1 enqueue-to-start with a P2 backlog and busy workers "
            f"(P2 jobs take {options.p2_sleep * 1000:.0f} ms; "
            f"P1 every {options.p1_interval * 1000:.0f} ms)\n"
        )
        say(
            markdown_table(
                [
                    "engine",
                    "P2 backlog",
                    "P1 started",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "P2 done meanwhile",
                    "load",
                    "target",
                    "met",
                ],
                results.priority,
            )
        )
    if results.autovacuum:
        say("\n### Hot-table autovacuum: first and last 10% of one run (embedded, batch 10)\n")
        say(
            markdown_table(
                [
                    "jobs table settings",
                    "jobs",
                    "first 10% jobs/s",
                    "last 10% jobs/s",
                    "last / first",
                    "whole run jobs/s",
                    "vacuums during run",
                    "dead tuples at end",
                    "load",
                    "check",
                ],
                results.autovacuum,
            )
        )
    for note in results.notes:
        say(f"\nNote: {note}")


def main(argv: list[str] | None = None) -> None:
    import shlex
    import sys

    options = parse_args(argv)
    command = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "bench/queue.py", *sys.argv[1:]]
    )
    say(f"SHVYA queue benchmark: {machine_description()}")
    say(f"reproduce: {command}")
    with cleanup_on_exit():
        results = run(options)
    report(options, results, command)
