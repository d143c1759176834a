"""The raw anchor: a bare jobs table and a `FOR UPDATE SKIP LOCKED` claim-and-complete loop.

    python -m bench.raw_loop --conninfo URL --batch 1 --start-at EPOCH [--async-commit]

One psycopg connection in autocommit mode: each statement is its own transaction, as in
SHVYA's claim; with --async-commit those commits do not wait for the WAL flush, as SHVYA's
worker connections' do not. The claim has SHVYA's form (a locking CTE, not `id IN (subquery)`, which
PostgreSQL may evaluate twice and then claim more than LIMIT rows), and each job is completed
by its own statement, as a queue must (one job's outcome must not wait for another's). The
process exits when a claim finds nothing: the table was filled before it started.
"""

from __future__ import annotations

import argparse
import time

import psycopg

CREATE = """
CREATE TABLE raw_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    priority integer NOT NULL,
    run_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL DEFAULT '{}',
    claims integer NOT NULL DEFAULT 0,
    done_at timestamptz
);
CREATE INDEX raw_jobs_claim ON raw_jobs (status, priority DESC, run_at, id);
"""

FILL = """
INSERT INTO raw_jobs (priority, payload, run_at)
SELECT 70, jsonb_build_object('n', n), now() - interval '1 hour' + n * interval '1 microsecond'
FROM generate_series(1, %s) AS n
"""

CLAIM = """
WITH chosen AS (
    SELECT id FROM raw_jobs
    WHERE status = 'queued' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE raw_jobs SET status = 'processing', claims = raw_jobs.claims + 1
FROM chosen WHERE raw_jobs.id = chosen.id AND raw_jobs.status = 'queued'
RETURNING raw_jobs.id, raw_jobs.payload
"""

COMPLETE = "UPDATE raw_jobs SET status = 'done', done_at = clock_timestamp() WHERE id = %s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument(
        "--async-commit", action="store_true", help="SET synchronous_commit = off, as SHVYA's"
    )
    args = parser.parse_args()
    with psycopg.connect(args.conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off" if args.async_commit else "SELECT 1")
        time.sleep(max(0.0, args.start_at - time.time()))
        done = 0
        while True:
            rows = conn.execute(CLAIM, (args.batch,)).fetchall()
            if not rows:
                break
            for job_id, _payload in rows:
                conn.execute(COMPLETE, (job_id,))
                done += 1
    print(f"done {done}", flush=True)


if __name__ == "__main__":
    main()
