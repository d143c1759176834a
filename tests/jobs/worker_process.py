"""A real worker process for the tests that kill, stop or race workers.

    python -m tests.jobs.worker_process --ledger PATH [--sleep S] [--lease S] [--grace S]
        [--threads N] [--poll S]

Runs SHVYA's embedded worker on DATABASE_URL with the ledger handlers (ledger_handlers.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from shvya.clock import SystemClock
from shvya.config import Settings
from shvya.db.engine import make_engine
from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.jobs.ledger_handlers import handlers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--poll", type=float, default=0.1)
    args = parser.parse_args()

    os.environ["SHVYA_TEST_LEDGER"] = args.ledger
    os.environ["SHVYA_TEST_SLEEP"] = str(args.sleep)
    settings = Settings(
        database_url=os.environ["DATABASE_URL"],
        job_lease_seconds=args.lease,
        job_poll_seconds=args.poll,
        shutdown_grace_seconds=args.grace,
    )
    engine = make_engine(settings.database_url)
    worker = EmbeddedWorker(
        engine,
        handlers=handlers(),
        clock=SystemClock(),
        settings=settings,
        threads=args.threads,
        p1_threads=1,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop()
    engine.dispose()


if __name__ == "__main__":
    main()
