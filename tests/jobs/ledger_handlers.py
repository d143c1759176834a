"""Job handlers for tests and benchmarks that run real worker processes.

SHVYA_JOB_HANDLERS=tests.jobs.ledger_handlers:handlers makes every job type sleep
SHVYA_TEST_SLEEP seconds, then append "<job id> <attempt> <pid>" to the file named by
SHVYA_TEST_LEDGER: a record of finished executions kept outside SHVYA's tables.
"""

from __future__ import annotations

import os
import time
from typing import Any

from shvya.jobs.runner import Handler, JobContext
from shvya.jobs.service import JobType


def record(ledger: str, ctx: JobContext) -> None:
    line = f"{ctx.job.id} {ctx.job.attempts} {os.getpid()}\n"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write per line: O_APPEND keeps lines whole
    finally:
        os.close(fd)


def handlers() -> dict[str, Handler]:
    ledger = os.environ["SHVYA_TEST_LEDGER"]
    sleep_seconds = float(os.environ.get("SHVYA_TEST_SLEEP", "0"))

    def handle(ctx: JobContext) -> dict[str, Any]:
        if sleep_seconds:
            time.sleep(sleep_seconds)
        record(ledger, ctx)
        return {"pid": os.getpid()}

    return {t.value: handle for t in JobType}
