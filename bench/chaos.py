"""Chaos benchmark (docs/reliability.md F1): kill -9 workers mid-run, count lost and duplicated
work.

    make bench                                          # ingest, queue, then this (~4 min)
    .venv/bin/python bench/chaos.py                     # embedded (PG) and Celery (RabbitMQ)
    .venv/bin/python bench/chaos.py --engines embedded,celery-rabbitmq,celery-redis
    .venv/bin/python bench/chaos.py --quick             # 2,000 jobs, 8 kills

For each engine: 10,000 jobs (one in five ai.engage, the rest sequence.step) whose handler
sleeps 20 ms and then delivers, keyed on the job's id, outside SHVYA's tables: it creates
a key file named after the job, whole (written aside, then hard-linked into place; only the
first run of a job can, a re-run finds it and delivers nothing, as a provider honouring an
idempotency key does) and appends "<job id> <attempt> <pid> delivered|repeat" to a ledger
file (one O_APPEND write per line); two worker processes, each started in its own session
(process group); twenty `kill -9` of a random one of them, spread over the run (the k-th
once 1 - k/21 of the jobs are left, then after a random 0-1 s), each followed at once by a
new process in its place; then it waits for the queue to drain. The last kill comes with
about 5% of the jobs left, so the drain time is mostly the re-run of the jobs the kills
orphaned.

- Embedded engine, PostgreSQL: a worker is one `shvya worker` process.
- Celery engine: a worker is one `shvya worker --engine celery` process with the two Celery
  nodes it starts (P1 only, any lane) and its relay; the kill takes the whole process group,
  as a machine or container crash would. (Killing one node alone makes its parent stop the
  other node gracefully and exit, which tests less.) Jobs are published after commit by
  CeleryPublisher, as the API server does.

Lease 5 s (SHVYA_JOB_LEASE_SECONDS=5). Reported: lost deliveries (jobs never delivered),
duplicated deliveries (delivered twice: the job ran again under another id, or the key did
not hold), jobs run more than once (at-least-once: a re-run of a job whose killed worker had
already delivered but not yet committed the completion; its key made the re-run deliver
nothing) and of those, any whose earlier run was not in a killed process (two live workers
running one job: a bug), the jobs' final statuses and attempts, and the time from the last
kill until every job is finished (target: within the lease plus 60 s).
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    DEFAULT_AMQP_URL,
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    PROCESSES,
    ShvyaDb,
    broker_label,
    broker_reachable,
    cleanup_on_exit,
    delete_broker_queues,
    enqueue_jobs,
    machine_description,
    markdown_table,
    migrated_shvya_db,
    now,
    pg_schema,
    say,
    shvya_env,
    shvya_worker_argv,
    unfinished_jobs,
    wait_for_quiet_machine,
)
from sqlalchemy import select

from shvya.config import Settings
from shvya.db.engine import make_session_factory
from shvya.jobs.engines.celery_engine import CeleryPublisher, queue_name
from shvya.jobs.models import Job
from shvya.jobs.service import Lane

WORKERS = 2


@dataclass
class Options:
    pg_url: str
    brokers: dict[str, str]
    engines: list[str]
    jobs: int
    kills: int
    lease: float
    sleep: float
    min_gap: float
    threads: int
    seed: int
    load_threshold: float


@dataclass
class ChaosRun:
    engine: str
    jobs: int
    kills: int
    lost: int
    duplicated: int
    run_again: int
    unexplained: int
    reclaimed: int
    statuses: Counter[str]
    attempts: Counter[int]
    drain_s: float
    chaos_s: float
    load: float
    examples: list[str] = field(default_factory=list)


def worker_env(options: Options, database_url: str, ledger: Path, **extra: str) -> dict[str, str]:
    return shvya_env(
        database_url,
        handlers="bench.handlers:ledger_handlers",
        BENCH_LEDGER=str(ledger),
        BENCH_SLEEP=str(options.sleep),
        SHVYA_JOB_LEASE_SECONDS=str(options.lease),
        SHVYA_SHUTDOWN_GRACE_SECONDS="10",
        **extra,
    )


def run_engine(options: Options, engine: str, rng: random.Random) -> ChaosRun:
    broker = options.brokers.get(engine.removeprefix("celery-"))
    engine_name = "celery" if broker else "embedded"
    directory = Path(tempfile.mkdtemp(prefix="shvya-chaos-"))
    ledger = directory / "ledger"
    with pg_schema(options.pg_url, "chaos") as schema:
        db = migrated_shvya_db(schema.url)
        settings = Settings(
            database_url=schema.url,
            celery_broker_url=broker,
            celery_queue_prefix=f"chaos_{uuid.uuid4().hex[:8]}",
        )
        env = worker_env(options, schema.url, ledger)
        publisher = None
        try:
            factory = db.session_factory
            if broker:
                publisher = CeleryPublisher(settings, db.engine)
                publisher.declare_queues()
                factory = make_session_factory(db.engine, notifier=publisher)
                env.update(
                    CELERY_BROKER_URL=broker,
                    SHVYA_CELERY_QUEUE_PREFIX=settings.celery_queue_prefix,
                )
            p1 = options.jobs // 5
            ids = set(enqueue_jobs(factory, db.company_id, "ai.engage", p1))
            ids |= set(enqueue_jobs(factory, db.company_id, "sequence.step", options.jobs - p1))
            if publisher is not None:
                publisher.stop(grace_seconds=120)  # every job handed to the broker
            load = wait_for_quiet_machine(options.load_threshold)
            outcome = chaos(options, db, engine_name, env, rng)
        finally:
            PROCESSES.kill_all()
            if broker:
                delete_broker_queues(broker, [queue_name(settings, lane) for lane in Lane])
            db.dispose()
        with db.session_factory() as session:
            rows = session.execute(select(Job.id, Job.status, Job.attempts)).all()
    runs = read_ledger(ledger)
    delivered = read_keys(Path(f"{ledger}.keys"))
    shutil.rmtree(directory, ignore_errors=True)
    return analyse(engine, ids, rows, runs, delivered, outcome, load)


@dataclass
class ChaosOutcome:
    killed_pids: set[int]
    kills: int
    chaos_s: float
    drain_s: float


def chaos(
    options: Options, db: ShvyaDb, engine_name: str, env: dict[str, str], rng: random.Random
) -> ChaosOutcome:
    argv = shvya_worker_argv(engine=engine_name, threads=options.threads)
    workers: list[subprocess.Popen[bytes]] = [
        PROCESSES.spawn(f"chaos-{engine_name}", argv, env) for _ in range(WORKERS)
    ]
    killed_pids: set[int] = set()
    started = time.monotonic()
    kills = 0
    for kill in range(1, options.kills + 1):
        # Spread over the whole run: the k-th kill comes once (1 - k/(kills+1)) of the jobs
        # are left, after a random 0-1 s, and never sooner than min_gap after the last one.
        left_then = options.jobs * (1 - kill / (options.kills + 1))
        time.sleep(options.min_gap)
        while unfinished_jobs(db.engine) > left_then:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        slot = rng.randrange(WORKERS)
        victim = workers[slot]
        killed_pids |= PROCESSES.group_pids(victim)
        PROCESSES.kill(victim)
        kills += 1
        workers[slot] = PROCESSES.spawn(f"chaos-{engine_name}", argv, env)
    last_kill = time.monotonic()
    left = unfinished_jobs(db.engine)
    say(f"    {kills} kills in {last_kill - started:.0f} s; {left} jobs unfinished at the last")
    deadline = last_kill + options.lease + 180
    while unfinished_jobs(db.engine) > 0:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            say(f"    not drained {deadline - last_kill:.0f} s after the last kill")
            break
        time.sleep(0.2)
    drained = time.monotonic()
    time.sleep(2.0)  # a late duplicate would reach the ledger now
    for worker in workers:
        PROCESSES.stop(worker, timeout=30)
    return ChaosOutcome(
        killed_pids=killed_pids,
        kills=kills,
        chaos_s=last_kill - started,
        drain_s=drained - last_kill,
    )


@dataclass(frozen=True)
class LedgerRun:
    attempt: int
    pid: int
    delivered: bool  # False: the job's key existed, this run delivered nothing


def read_ledger(ledger: Path) -> dict[str, list[LedgerRun]]:
    """Each job's runs that reached the ledger (a run killed just after delivering is missing
    here, and its delivery is not: the key files are the deliveries)."""
    runs: dict[str, list[LedgerRun]] = defaultdict(list)
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            job_id, attempt, pid, outcome = line.split()
            runs[job_id].append(LedgerRun(int(attempt), int(pid), outcome == "delivered"))
    return runs


def read_keys(keys: Path) -> dict[str, LedgerRun]:
    """The deliveries: each job's key file, holding the attempt and pid of the run that made it."""
    delivered = {}
    for path in keys.glob("[!.]*"):  # not the drafts of runs killed before they delivered
        attempt, pid = path.read_text().split()
        delivered[path.name] = LedgerRun(int(attempt), int(pid), True)
    return delivered


def analyse(
    engine: str,
    ids: set[uuid.UUID],
    rows: list[tuple[uuid.UUID, str, int]],
    runs: dict[str, list[LedgerRun]],
    delivered: dict[str, LedgerRun],
    outcome: ChaosOutcome,
    load: float,
) -> ChaosRun:
    expected = {str(i) for i in ids}
    lost = expected - set(delivered)
    duplicated = [job_id for job_id, done in runs.items() if sum(r.delivered for r in done) > 1]
    # Every run of each job: the ledger's, and the delivering run's from its key file when a
    # kill came between the delivery and the ledger line.
    for job_id, key in delivered.items():
        if not any(r.delivered for r in runs.get(job_id, [])):
            runs[job_id].append(key)
    # A job run more than once: at-least-once. Explained when every run but the last was in
    # a killed process, each with its own attempt (the next claim counted a new one).
    again = {job_id: done for job_id, done in runs.items() if len(done) > 1}
    examples = []
    unexplained = 0
    for job_id, done in again.items():
        ordered = sorted(done, key=lambda r: r.attempt)
        attempts = [r.attempt for r in ordered]
        earlier = ordered[:-1]
        if len(set(attempts)) != len(attempts) or any(
            r.pid not in outcome.killed_pids for r in earlier
        ):
            unexplained += 1
            if len(examples) < 5:
                examples.append(f"{job_id}: {[(r.attempt, r.pid, r.delivered) for r in ordered]}")
    return ChaosRun(
        engine=engine,
        jobs=len(ids),
        kills=outcome.kills,
        lost=len(lost),
        duplicated=len(duplicated),
        run_again=len(again),
        unexplained=unexplained,
        reclaimed=sum(1 for _id, _status, attempts in rows if attempts > 1),
        statuses=Counter(status for _id, status, _a in rows),
        attempts=Counter(attempts for _id, _s, attempts in rows),
        drain_s=outcome.drain_s,
        chaos_s=outcome.chaos_s,
        load=load,
        examples=examples,
    )


def engine_label(engine: str, brokers: dict[str, str]) -> str:
    if engine == "embedded":
        return "embedded, PostgreSQL"
    return f"Celery, {broker_label(brokers[engine.removeprefix('celery-')])} + PostgreSQL"


def report(options: Options, runs: list[ChaosRun], command: str) -> None:
    target = options.lease + 60
    say("")
    say(f"## Chaos: kill -9 of worker processes ({now():%Y-%m-%d %H:%M} UTC)")
    say(f"Machine: {machine_description()}. Command: `{command}`")
    say(
        f"\n{options.jobs:,} jobs, handler sleeps {options.sleep * 1000:.0f} ms then delivers "
        f"keyed on the job id; {WORKERS} worker processes; lease {options.lease:g} s; "
        f"{options.kills} kills "
        "spread over the run (the k-th when 1 - k/(kills+1) of the jobs are left, plus a "
        "random 0-1 s), each followed at once by a respawn.\n"
    )
    say(
        markdown_table(
            [
                "engine",
                "jobs",
                "kills",
                "lost deliveries",
                "duplicated deliveries",
                "jobs run more than once (re-run after a kill; the key held)",
                "runs not explained by a kill",
                "re-claimed (attempts > 1)",
                "final statuses",
                "drain after last kill",
                "target",
                "met",
                "load",
            ],
            [
                [
                    engine_label(run.engine, options.brokers),
                    f"{run.jobs:,}",
                    str(run.kills),
                    str(run.lost),
                    str(run.duplicated),
                    str(run.run_again - run.unexplained),
                    str(run.unexplained),
                    str(run.reclaimed),
                    ", ".join(f"{k} {v:,}" for k, v in sorted(run.statuses.items())),
                    f"{run.drain_s:.1f} s",
                    f"0 lost, 0 dup, <= {target:g} s",
                    "yes"
                    if run.lost == 0
                    and run.duplicated == 0
                    and run.unexplained == 0
                    and run.drain_s <= target
                    else "**no**",
                    f"{run.load:.2f}",
                ]
                for run in runs
            ],
        )
    )
    for run in runs:
        attempts = ", ".join(f"{k}: {v:,}" for k, v in sorted(run.attempts.items()))
        say(f"\n{engine_label(run.engine, options.brokers)}: attempts per job {attempts}.")
        for example in run.examples:
            say(f"  run again, not explained by a kill: {example}")


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs and 8 kills")
    parser.add_argument(
        "--engines",
        default="embedded,celery-rabbitmq",
        help="comma-separated: embedded, celery-rabbitmq, celery-redis",
    )
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--sleep", type=float, default=0.02, help="handler sleep, seconds")
    parser.add_argument("--min-gap", type=float, default=0.5, help="seconds between kills")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--load-threshold", type=float, default=1.5)
    args = parser.parse_args(argv)
    return Options(
        pg_url=args.pg_url,
        brokers={"rabbitmq": args.amqp_url, "redis": args.redis_url},
        engines=[e.strip() for e in args.engines.split(",") if e.strip()],
        jobs=args.jobs or (2000 if args.quick else 10_000),
        kills=args.kills or (8 if args.quick else 20),
        lease=args.lease,
        sleep=args.sleep,
        min_gap=args.min_gap,
        threads=args.threads,
        seed=args.seed,
        load_threshold=args.load_threshold,
    )


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    command = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "bench/chaos.py", *sys.argv[1:]]
    )
    say(f"SHVYA chaos benchmark: {machine_description()}")
    say(f"reproduce: {command}")
    rng = random.Random(options.seed)
    runs = []
    with cleanup_on_exit():
        for engine in options.engines:
            broker = options.brokers.get(engine.removeprefix("celery-"))
            if engine != "embedded" and (broker is None or not broker_reachable(broker)):
                say(f"  - {engine}: broker not reachable, skipped")
                continue
            say(f"  - {engine_label(engine, options.brokers)} ...")
            run = run_engine(options, engine, rng)
            say(
                f"    lost {run.lost}, duplicated {run.duplicated}, run again {run.run_again} "
                f"({run.unexplained} not after a kill), drain {run.drain_s:.1f} s, "
                f"statuses {dict(run.statuses)}"
            )
            runs.append(run)
    report(options, runs, command)


if __name__ == "__main__":
    main()
