"""Job handlers for the queue benchmarks, loaded by worker processes via SHVYA_JOB_HANDLERS.

- `bench.handlers:noop_handlers`: every job type returns at once (throughput).
- `bench.handlers:busy_handlers`: P2 types sleep BENCH_P2_SLEEP seconds (default 0.03), P1
  types return at once (the priority test: the general threads stay busy with P2 work).
- `bench.handlers:ledger_handlers`: every type sleeps BENCH_SLEEP seconds (default 0), then
  delivers, keyed on the job id: it creates BENCH_LEDGER.keys/<job id> (written aside, then
  hard-linked into place), which only the first run of a job can (a re-run finds the key and
  delivers nothing, as a provider that honours an idempotency key does), and appends
  "<job id> <attempt> <pid> delivered|repeat" to the file BENCH_LEDGER, one os.write per
  line with O_APPEND (lines stay whole across processes). Both live outside SHVYA's tables.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from shvya.jobs.runner import Handler, JobContext
from shvya.jobs.service import JobType, Lane, job_priority, lane_of


def _noop(ctx: JobContext) -> None:
    return None


def noop_handlers() -> dict[str, Handler]:
    return {t.value: _noop for t in JobType}


def busy_handlers() -> dict[str, Handler]:
    seconds = float(os.environ.get("BENCH_P2_SLEEP", "0.03"))

    def busy(ctx: JobContext) -> None:
        time.sleep(seconds)

    return {
        t.value: (_noop if lane_of(job_priority(t.value)) is Lane.p1 else busy) for t in JobType
    }


def ledger_handlers() -> dict[str, Handler]:
    ledger = os.environ["BENCH_LEDGER"]
    keys = Path(f"{ledger}.keys")
    keys.mkdir(parents=True, exist_ok=True)
    seconds = float(os.environ.get("BENCH_SLEEP", "0"))

    def record(ctx: JobContext) -> dict[str, Any]:
        if seconds:
            time.sleep(seconds)
        # The delivery, keyed on the job's id as a provider's idempotency key is: the first
        # run creates its key file, a re-run of the same job finds it and delivers nothing.
        # The key appears whole or not at all (written aside, then linked into place; a
        # link fails if the name exists), holding the attempt and pid that delivered.
        draft = keys / f".{ctx.job.id}.{os.getpid()}.{ctx.job.attempts}"
        draft.write_text(f"{ctx.job.attempts} {os.getpid()}")
        try:
            os.link(draft, keys / str(ctx.job.id))
        except FileExistsError:
            outcome = "repeat"
        else:
            outcome = "delivered"
        finally:
            draft.unlink()
        line = f"{ctx.job.id} {ctx.job.attempts} {os.getpid()} {outcome}\n".encode()
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return {"delivery": outcome}

    return {t.value: record for t in JobType}
