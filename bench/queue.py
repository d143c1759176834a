"""Job queue benchmark (issue 4): SHVYA's engines beside three anchors, in the same run.

    make bench                                   # ingest, this, then chaos
    .venv/bin/python bench/queue.py              # this alone: ~11 min on a quiet machine
    .venv/bin/python bench/queue.py --quick      # small counts, about 4 minutes
    .venv/bin/python bench/queue.py --only priority --backends postgresql,rabbitmq

Throughput: no-op jobs per second through SHVYA's embedded engine (PostgreSQL, claim batch 1
and 10, two `shvya worker` processes; SQLite, one process) and its Celery engine (RabbitMQ
and Redis, two `shvya worker --engine celery` processes), beside procrastinate (two worker
processes), a raw `FOR UPDATE SKIP LOCKED` loop on a bare table (two processes, autocommit,
batch 1 and 10) and raw Celery (the same no-op task sent straight to the same broker).
SHVYA's worker connections do not wait for a commit's flush (synchronous_commit off), so
procrastinate and the raw loop are measured that way too; the ratio table says which
comparisons are like for like (same commit durability, same claim batch), and only those
carry a target: at least 2x procrastinate at batch 1, at least 0.8x the raw loop at batch 1
and at batch 10. Each
queue is filled before its workers start; the figure is the completion rate between the 5%
and the 95% completion (finish times read back from the table or recorded by the task), so
process start-up and the last stragglers do not count.

Priority: a P2 backlog (20,000 jobs whose handler sleeps 1 s, like a send to a provider)
keeps every general worker thread busy, so only the capacity kept for P1 can start a P1 job
at once; then 100 P1 jobs arrive one at a time every 100 ms; enqueue-to-start is
Job.started_at - Job.created_at. Embedded workers poll only every 5 s here, so a fast start
proves the LISTEN/NOTIFY wake-up (`--p2-sleep 0.03` shows the case where general threads
free up every few milliseconds and take P1 jobs themselves).

Autovacuum: the first and the last 10% of a 50,000-job run on the embedded engine (batch
10), with the `jobs` table's settings from migration 0002 and with them reset; on a server
whose autovacuum is off (as on this machine) the table settings cannot act, so it compares a
run without vacuum with one where it applies autovacuum's rule for those settings itself,
every `--vacuum-every` seconds (10).

Every run uses fresh PostgreSQL schemas (dropped at the end, also on Ctrl-C), unique broker
queues (deleted at the end) and a temporary SQLite file. Before each measurement it waits
(up to 2 minutes) for the 1-minute load average to drop below 1.5, or for the cores to be
idle for 2 s (the load average still counts the previous run), and prints it.

The measurements are in bench/queue_bench.py. This file is only the entry point, and it
must stay small: as a script in bench/, that folder is first on sys.path, so a module named
`queue` there shadows the standard library's for every bench script (bench/ingest.py
included); imported under that name, this file loads the standard library's module instead.
"""

import sys

if __name__ == "queue":  # someone's `import queue` found this file: give them the real one
    import importlib.util
    import sysconfig
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location(
        "queue", Path(sysconfig.get_paths()["stdlib"]) / "queue.py"
    )
    assert _spec is not None and _spec.loader is not None
    _stdlib_queue = importlib.util.module_from_spec(_spec)
    sys.modules["queue"] = _stdlib_queue
    _spec.loader.exec_module(_stdlib_queue)
    globals().update({k: v for k, v in vars(_stdlib_queue).items() if not k.startswith("__")})
elif __name__ == "__main__":
    from queue_bench import main

    main()
