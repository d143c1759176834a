"""The raw Celery anchor: the same no-op task sent straight to the broker, no Job table.

Its Celery options are SHVYA's (shvya.jobs.engines.celery_engine.make_celery): JSON, no
results, prefetch multiplier 1, late acks, publisher confirms on RabbitMQ; its workers run
with SHVYA's worker flags (threads pool, no gossip, mingle or heartbeat).

    BENCH_BROKER_URL=... BENCH_QUEUE=... BENCH_COUNT_DIR=DIR \
        python -m celery -A bench.celery_anchor:app worker --pool threads -c 2 -Q QUEUE ...

Completions are counted without touching the broker or a database: each worker process keeps
its finish times in memory, and a thread writes their number to DIR/<pid>.count every 0.1 s
and the times themselves to DIR/<pid>.times once the count has stopped moving.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from celery import Celery
from kombu.entity import Queue

TASK = "bench.noop"


def make_app(broker_url: str, queue: str) -> Celery:
    app = Celery("bench_anchor", broker=broker_url, set_as_current=False)
    transport_options = {}
    if broker_url.startswith(("amqp", "pyamqp")):
        transport_options["confirm_publish"] = True
    app.conf.update(
        task_queues=(Queue(queue),),  # type: ignore[no-untyped-call]
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=TASK, ignore_result=True)(noop)
    return app


class _Counter:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def record(self) -> None:
        finished = time.time()
        with self.lock:
            self.times.append(finished)
            if self.thread is None:
                self.thread = threading.Thread(target=self._flush, daemon=True)
                self.thread.start()

    def _flush(self) -> None:
        directory = Path(os.environ["BENCH_COUNT_DIR"])
        count_file = directory / f"{os.getpid()}.count"
        times_file = directory / f"{os.getpid()}.times"
        last_count, written, still = -1, -1, 0.0
        while True:
            time.sleep(0.1)
            with self.lock:
                count = len(self.times)
                snapshot = list(self.times) if count != written else None
            if count != last_count:
                _replace(count_file, str(count))
                last_count, still = count, time.monotonic()
            elif snapshot is not None and time.monotonic() - still > 0.3:
                _replace(times_file, "\n".join(f"{t:.6f}" for t in snapshot))
                written = count


def _replace(path: Path, content: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(content)
    temporary.replace(path)


COUNTER = _Counter()


def noop(n: int) -> None:
    COUNTER.record()


# The worker's app (`celery -A bench.celery_anchor:app`).
app = make_app(
    os.environ.get("BENCH_BROKER_URL", "memory://"), os.environ.get("BENCH_QUEUE", "bench_anchor")
)
