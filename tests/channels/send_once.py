"""One worker process that runs the due jobs once, with the test's reply handler, at the
time SHVYA_TEST_NOW. Used to crash a real process at a crash point (SHVYA_CRASH_AT).
With SHVYA_TEST_REAL_AI set, ai.engage is SHVYA's own."""

from __future__ import annotations

import os
from datetime import datetime

from shvya.config import Settings
from shvya.db.engine import make_engine
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.channels.conftest import replying_with
from tests.channels.test_sending import TEXT
from tests.support import FakeClock


def main() -> None:
    settings = Settings(
        database_url=os.environ["DATABASE_URL"],
        meta_graph_base_url=os.environ["META_GRAPH_BASE_URL"],
    )
    engine = make_engine(settings.database_url)
    clock = FakeClock(datetime.fromisoformat(os.environ["SHVYA_TEST_NOW"]))
    worker = EmbeddedWorker(
        engine,
        handlers=(
            default_handlers()  # SHVYA's own AI salesperson
            if os.environ.get("SHVYA_TEST_REAL_AI")
            else {**default_handlers(), "ai.engage": replying_with(TEXT)}
        ),
        clock=clock,
        settings=settings,
    )
    worker.run_until_idle()


if __name__ == "__main__":
    main()
