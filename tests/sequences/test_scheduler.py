"""The scheduler's tick and loop (docs/scheduler.md): each source asked until it runs dry, each
batch committed, a failing source logged and passed over; the loop ticks on its interval and
stops when told. These need no migrated database: the sources here write a table of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import serve_due_sources
from shvya.config import Settings
from shvya.sequences.bumpups import due_bumpups
from shvya.sequences.scheduler import Scheduler, run_tick
from shvya.sequences.service import due_steps
from shvya.webhooks.service import due_deliveries
from tests.support import T0, FakeClock

metadata = MetaData()
work = Table("work", metadata, Column("id", Integer, primary_key=True), Column("by", String(20)))


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'work.db'}")
    metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


class Backlog:
    """A source with `due` items: each call writes up to `limit` rows (its "jobs")."""

    def __init__(self, name: str, due: int) -> None:
        self.name = name
        self.due = due
        self.calls: list[datetime] = []

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int:
        self.calls.append(now)
        count = min(limit, self.due)
        for _ in range(count):
            session.execute(work.insert().values(by=self.name))
        self.due -= count
        return count


class Broken:
    name = "broken"

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int:
        session.execute(work.insert().values(by=self.name))  # rolled back with the failure
        raise RuntimeError("the source's table is gone")


def written(factory: sessionmaker[Session], by: str) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(work).where(work.c.by == by)) or 0


def test_a_tick_asks_each_source_until_it_fills_less_than_a_batch(
    factory: sessionmaker[Session],
) -> None:
    steps, hooks = Backlog("steps", 25), Backlog("hooks", 10)
    report = run_tick(factory, now=T0, sources=[steps, hooks], limit=10)
    assert [(s.name, s.enqueued, s.batches) for s in report.sources] == [
        ("steps", 25, 3),  # 10, 10, 5
        ("hooks", 10, 2),  # 10, then 0: a full batch is always followed by one more ask
    ]
    assert report.enqueued == 35
    assert steps.calls == [T0, T0, T0]  # one `now` for the whole tick
    # Every batch was committed: another session sees all of it.
    assert (written(factory, "steps"), written(factory, "hooks")) == (25, 10)
    assert run_tick(factory, now=T0, sources=[steps, hooks], limit=10).enqueued == 0


def test_a_failing_source_is_logged_and_the_others_still_run(
    factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    after = Backlog("after", 3)
    report = run_tick(factory, now=T0, sources=[Broken(), after], limit=10)
    assert report.failed == ["broken"]
    assert "RuntimeError: the source's table is gone" in (report.sources[0].error or "")
    assert report.sources[1].enqueued == 3
    assert written(factory, "after") == 3
    assert written(factory, "broken") == 0  # its half-done batch was not committed
    assert any(r.message == "scheduler.source_failed" for r in caplog.records)


def test_the_loop_ticks_on_its_interval_with_the_clock_and_stops_cleanly(
    factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    source = Backlog("steps", 3)
    ticks: list[datetime] = []
    scheduler = Scheduler(
        factory,
        sources=[source],
        clock=clock,
        interval_s=0.02,
        limit=2,
        on_tick=lambda report: ticks.append(report.now),
    )
    caplog.set_level("INFO", logger="shvya.sequences.scheduler")
    scheduler.start()
    deadline = time.monotonic() + 10
    while scheduler.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    clock.advance(minutes=5)
    while scheduler.ticks < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread = scheduler._thread
    scheduler.stop()
    assert thread is not None and not thread.is_alive()
    assert scheduler.ticks >= 5
    assert ticks[0] == T0 and ticks[-1] == clock.now()  # the injected clock's time, not the wall's
    assert written(factory, "steps") == 3
    # One INFO line for the tick that enqueued something, none for the idle ones.
    lines = [r.getMessage() for r in caplog.records if r.name == "shvya.sequences.scheduler"]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"scheduler\.tick enqueued 3: steps 3 in 2 batch\(es\) \d+ ms", lines[0])
    ticks_then = scheduler.ticks
    time.sleep(0.1)
    assert scheduler.ticks == ticks_then  # stopped means stopped


def test_the_interval_must_be_positive() -> None:
    assert Settings(scheduler_interval_s=0.5).scheduler_interval_s == 0.5
    assert Settings().scheduler_interval_s == 5.0
    for wrong in (0, -1):
        with pytest.raises(ValidationError, match="scheduler_interval_s"):
            Settings(scheduler_interval_s=wrong)
    with pytest.raises(ValueError, match="more than 0 seconds"):
        Scheduler(sessionmaker(), sources=[], clock=FakeClock(), interval_s=0)


def test_the_scheduler_command_explains_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shvya", "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "shvya scheduler [OPTIONS]" in result.stdout
    assert "--interval" in result.stdout and "SHVYA_SCHEDULER_INTERVAL_S" in result.stdout
    assert "--once" in result.stdout
    assert "SIGTERM" in result.stdout


def test_serve_runs_the_scheduler_with_the_embedded_engine_only() -> None:
    assert serve_due_sources(Settings()) == [due_bumpups, due_steps, due_deliveries]
    assert serve_due_sources(Settings(job_engine="celery")) is None


def test_the_scheduler_command_ticks_once_or_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'shvya.db'}"}
    run = [sys.executable, "-m", "shvya"]
    migrated = subprocess.run([*run, "migrate"], env=env, capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr
    once = subprocess.run(
        [*run, "scheduler", "--once"], env=env, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 0, once.stderr
    assert re.match(
        r"enqueued 0: bumpups 0 in 1 batch\(es\) \d+ ms, sequence_steps 0 in 1 batch\(es\) \d+ ms,"
        r" webhook_deliveries 0 in 1 batch\(es\) \d+ ms",
        once.stdout,
    ), once.stdout

    process = subprocess.Popen(
        [*run, "scheduler", "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    started = process.stderr.readline()
    assert (
        "a tick every 0.05 s (bumpups, sequence_steps, webhook_deliveries); "
        "SIGTERM or Ctrl-C stops it"
    ) in started
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    ticks = re.search(r"scheduler stopped after (\d+) tick\(s\)", rest)
    assert ticks is not None and int(ticks.group(1)) >= 2, rest
