"""Scheduler benchmark (issue 16): one tick's cost follows the due work, not the enrolments.

    .venv/bin/python bench/scheduler.py            # ~5 min on this machine (PostgreSQL)
    .venv/bin/python bench/scheduler.py --quick    # 10,000 and 100,000 enrolments, 500 due

On PostgreSQL, in a fresh schema (dropped at the end): 1,000 leads and one-step sequences,
enrolled by INSERT ... SELECT until there are 100,000 and then 1,000,000 active enrolments,
of which the same 5,000 are due. For each size it times one `run_tick` with the sequence
source (src/shvya/sequences/scheduler.py, src/shvya/sequences/service.py `due_steps`), the
code `shvya serve` and `shvya scheduler` run, and checks that exactly the due steps became
jobs. Then 50,000 due at 1,000,000 enrolments: the time until all are enqueued.

Targets (issue 16): the 1,000,000 tick within 1.5x the 100,000 tick; 5,000 due under 5 s;
50,000 due under 30 s. Anchor, measured in the same run on the same rows: one SQL statement
per batch that claims the due enrolments (FOR UPDATE SKIP LOCKED), takes them out of "due"
and inserts their jobs (ON CONFLICT DO NOTHING), with the same batch size (the scheduler's
500) and one commit per batch, as SHVYA does: the floor of what a tick could cost. Each
figure is the median of three runs; between runs the same rows are made due again and their
jobs deleted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import (
    PgSchema,
    cleanup_on_exit,
    install_signal_handlers,
    machine_description,
    markdown_table,
    migrated_shvya_db,
    now,
    pg_schema,
    say,
    vacuum_analyze,
    wait_for_quiet_machine,
)
from sqlalchemy import Engine, Table, text

from shvya.crm.models import Lead
from shvya.crm.service import get_entry_stage
from shvya.db.base import table_of
from shvya.jobs.models import Job
from shvya.sequences.models import Enrollment, Sequence, SequenceStep
from shvya.sequences.scheduler import run_tick
from shvya.sequences.service import due_steps

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LEADS = 1_000
BATCH = 500  # the scheduler's default limit per source call
RUNS = 3


def insert_select(engine: Engine, table: Table, values: dict[str, str], source: str) -> int:
    """INSERT INTO table SELECT <values> FROM <source>; a nullable column not named is NULL,
    a NOT NULL one not named is an error that names it (the models moved on: say so)."""
    missing = [
        c.name
        for c in table.columns
        if c.name not in values and not c.nullable and c.server_default is None
    ]
    if missing:
        raise SystemExit(f"bench/scheduler.py: give a value for {table.name}.{missing}")
    columns = [c.name for c in table.columns if c.name in values]
    statement = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(values[c] for c in columns)} FROM {source}"
    )
    with engine.begin() as conn:
        return conn.execute(text(statement)).rowcount


def seed(engine: Engine, factory: Any, company_id: Any, sequences: int) -> dict[str, Any]:
    with factory() as session:
        stage = get_entry_stage(session, company_id=company_id, now=now())
        session.commit()
        stage_id, pipeline_id = stage.id, stage.pipeline_id
    ids = {"company": f"'{company_id}'::uuid", "stage": f"'{stage_id}'::uuid"}
    insert_select(
        engine,
        table_of(Lead),
        {
            "id": "gen_random_uuid()",
            "company_id": ids["company"],
            "pipeline_id": f"'{pipeline_id}'::uuid",
            "stage_id": ids["stage"],
            "name": "'Lead ' || n",
            "attributes": "'{}'::jsonb",
            "priority": "0",
            "ai_paused": "false",
            "created_at": "now()",
            "updated_at": "now()",
        },
        f"generate_series(1, {LEADS}) AS n",
    )
    insert_select(
        engine,
        table_of(Sequence),
        {
            "id": "gen_random_uuid()",
            "company_id": ids["company"],
            "name": "'Sequence ' || n",
            "channel": "'sandbox'",
            "is_active": "true",
            "stop_on_reply": "true",
            "stop_on": """'["reply"]'::jsonb""",
            "created_at": "now()",
            "updated_at": "now()",
        },
        f"generate_series(1, {sequences}) AS n",
    )
    insert_select(
        engine,
        table_of(SequenceStep),
        {
            "id": "gen_random_uuid()",
            "company_id": ids["company"],
            "sequence_id": "s.id",
            "position": "0",
            "delay_seconds": "0",
            "body": "'Hello again'",
            "ai_generated": "false",
            "created_at": "now()",
            "channel": "'sandbox'",
            "after": "'{}'::jsonb",
            "business_days": "false",
        },
        "sequences s",
    )
    return ids


def enrol(engine: Engine, ids: dict[str, Any], *, first: int, count: int) -> None:
    """Enrol every lead in sequences number first+1 .. first+count (by name order), none due:
    next_run_at a month ahead, spread over a day so the index has real order to keep."""
    insert_select(
        engine,
        table_of(Enrollment),
        {
            "id": "gen_random_uuid()",
            "company_id": ids["company"],
            "sequence_id": "s.id",
            "lead_id": "l.id",
            "stage_id": ids["stage"],
            "position": "0",
            "status": "'active'",
            "next_run_at": "now() + interval '30 days' + random() * interval '1 day'",
            "replies_after": "now()",
            "enrolled_at": "now()",
            "updated_at": "now()",
        },
        f"(SELECT id FROM sequences ORDER BY created_at, id OFFSET {first} LIMIT {count}) s "
        "CROSS JOIN leads l",
    )


def make_due(engine: Engine, due: int) -> None:
    """The same `due` enrolments (the lowest ids) due a minute ago; no jobs."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))
        conn.execute(
            text(
                "UPDATE sequence_enrollments SET next_run_at = now() - interval '1 minute', "
                "queued_at = NULL, status = 'active', position = 0 WHERE id IN "
                "(SELECT id FROM sequence_enrollments ORDER BY id LIMIT :due)"
            ),
            {"due": due},
        )
        # The rest back to "not due" (an earlier, larger run made more of them due).
        conn.execute(
            text(
                "UPDATE sequence_enrollments SET next_run_at = now() + interval '30 days', "
                "queued_at = NULL WHERE next_run_at IS NULL OR queued_at IS NOT NULL"
            )
        )
    vacuum_analyze(engine, "sequence_enrollments")
    vacuum_analyze(engine, "jobs")


def jobs_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def shvya_tick(engine: Engine, factory: Any) -> float:
    started = time.perf_counter()
    report = run_tick(factory, now=now(), sources=[due_steps], limit=BATCH)
    elapsed = time.perf_counter() - started
    if report.failed:
        raise SystemExit(f"the tick failed: {report.summary()}")
    return elapsed


def anchor_tick(engine: Engine, factory: Any) -> float:
    """One statement per batch: claim, take out of due, insert the jobs; commit per batch."""
    job = table_of(Job)
    statement = text(
        f"""
        WITH due AS (
            SELECT id FROM sequence_enrollments
            WHERE next_run_at IS NOT NULL AND next_run_at <= now()
              AND status IN ('active', 'paused')
            ORDER BY next_run_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED
        ), taken AS (
            UPDATE sequence_enrollments e SET next_run_at = NULL, queued_at = now(),
                updated_at = now()
            FROM due WHERE e.id = due.id
            RETURNING e.id, e.company_id, e.lead_id, e.sequence_id, e.position
        )
        INSERT INTO {job.name} (id, company_id, lead_id, type, priority, payload, status,
            attempts, max_attempts, run_at, idempotency_key, created_at)
        SELECT gen_random_uuid(), t.company_id, t.lead_id, 'sequence.step', 70,
            jsonb_build_object('enrollment_id', t.id::text, 'position', t.position), 'queued',
            0, 5, now(), 'seq:' || t.id || ':' || t.position, now()
        FROM taken t
        ON CONFLICT DO NOTHING
        """
    )
    started = time.perf_counter()
    while True:
        with engine.begin() as conn:
            if conn.execute(statement).rowcount < BATCH:
                break
    return time.perf_counter() - started


def measure(engine: Engine, factory: Any, due: int, tick: Callable[[Engine, Any], float]) -> float:
    times = []
    for _ in range(RUNS):
        make_due(engine, due)
        wait_for_quiet_machine()
        times.append(tick(engine, factory))
        made = jobs_count(engine)
        if made != due:
            raise SystemExit(f"{due} steps were due and {made} jobs were made")
    return statistics.median(times)


def run(schema: PgSchema, sizes: list[int], due: int, big_due: int) -> None:
    db = migrated_shvya_db(schema.url)
    engine, factory = db.engine, db.session_factory
    ids = seed(engine, factory, db.company_id, sequences=max(sizes) // LEADS)
    rows: list[list[Any]] = []
    enrolled = 0
    results: dict[int, tuple[float, float]] = {}
    for size in sizes:
        say(f"enrolling up to {size:,} ...")
        enrol(engine, ids, first=enrolled // LEADS, count=(size - enrolled) // LEADS)
        enrolled = size
        shvya_s = measure(engine, factory, due, shvya_tick)
        anchor_s = measure(engine, factory, due, anchor_tick)
        results[size] = (shvya_s, anchor_s)
        say(f"  {size:,} enrolments, {due:,} due: SHVYA {shvya_s:.2f} s, anchor {anchor_s:.2f} s")
        rows.append(
            [
                f"{size:,}",
                f"{due:,}",
                f"{shvya_s:.2f} s",
                f"{anchor_s:.2f} s",
                f"{anchor_s / shvya_s:.2f}x",
            ]
        )
    big_shvya = measure(engine, factory, big_due, shvya_tick)
    big_anchor = measure(engine, factory, big_due, anchor_tick)
    rows.append(
        [
            f"{sizes[-1]:,}",
            f"{big_due:,}",
            f"{big_shvya:.2f} s",
            f"{big_anchor:.2f} s",
            f"{big_anchor / big_shvya:.2f}x",
        ]
    )
    db.dispose()
    small, large = results[sizes[0]][0], results[sizes[-1]][0]
    say()
    say(f"machine: {machine_description()}")
    say(f"one tick of the sequence source (median of {RUNS}), batch {BATCH}, PostgreSQL:")
    say(markdown_table(["enrolments", "due", "SHVYA tick", "anchor", "anchor/SHVYA"], rows))
    say()
    checks = [
        (
            f"{sizes[-1]:,} vs {sizes[0]:,} enrolments: {large / small:.2f}x (target <= 1.5x)",
            large / small <= 1.5,
        ),
        (f"{due:,} due in {large:.2f} s (target < 5 s)", large < 5),
        (f"{big_due:,} due in {big_shvya:.2f} s (target < 30 s)", big_shvya < 30),
    ]
    for line, met in checks:
        say(f"{'met   ' if met else 'MISSED'} {line}")
    say("reproduce: .venv/bin/python bench/scheduler.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k/100k enrolments, 500 due")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    due, big_due = (500, 5_000) if args.quick else (5_000, 50_000)
    install_signal_handlers()
    with cleanup_on_exit(), pg_schema(args.postgres_url, "scheduler") as schema:
        run(schema, sizes, due, big_due)


if __name__ == "__main__":
    main()
