"""The procrastinate anchor: a no-op task on procrastinate's own schema.

    python -m bench.procrastinate_anchor --conninfo URL schema          # apply its schema
    python -m bench.procrastinate_anchor --conninfo URL defer N         # queue N jobs
    python -m bench.procrastinate_anchor --conninfo URL worker -c 2     # run until SIGTERM

URL is a libpq URL whose `options` set the search path to the benchmark's schema.
"""

from __future__ import annotations

import argparse
import logging

import procrastinate

QUEUE = "bench"
TASK = "bench.noop"


def make_app(conninfo: str) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4)
    )

    @app.task(name=TASK, queue=QUEUE)
    async def noop(n: int) -> None:
        return None

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conninfo", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema")
    defer = commands.add_parser("defer")
    defer.add_argument("count", type=int)
    worker = commands.add_parser("worker")
    worker.add_argument("-c", "--concurrency", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # It warns that the app lives in __main__ (here on purpose: one small file).
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

    app = make_app(args.conninfo)
    if args.command == "worker":
        app.run_worker(queues=[QUEUE], concurrency=args.concurrency, wait=True)
        return
    with app.open():
        if args.command == "schema":
            app.schema_manager.apply_schema()
        else:
            task = app.tasks[TASK]
            for start in range(0, args.count, 1000):
                task.batch_defer(*({"n": n} for n in range(start, min(args.count, start + 1000))))


if __name__ == "__main__":
    main()
