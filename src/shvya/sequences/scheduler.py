"""The scheduler: turns work that has come due (bump-ups, sequence steps, webhook deliveries)
into jobs, one tick at a time (docs/scheduler.md).

A tick asks each due source in turn for up to `limit` jobs, in a session of its own that the
tick commits after every call (docs/architecture.md rule 2: the scheduler owns the unit of
work, a source never commits), and asks again while a source filled its batch. The sources
claim their due rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL and enqueue with idempotency
keys, so any number of schedulers may tick at once without doubling a job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from shvya.clock import Clock

logger = logging.getLogger(__name__)

# A source that keeps filling its batch is asked again, but a tick gives up on it after this
# many batches, so one runaway source cannot hold the tick (the next tick continues).
MAX_BATCHES_PER_SOURCE = 1000


class DueSource(Protocol):
    """Work that comes due: enqueues at most `limit` jobs for what is due at `now`, inside
    `session` (no commit), and returns how many it enqueued."""

    name: str

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int: ...


@dataclass
class SourceReport:
    name: str
    enqueued: int = 0
    batches: int = 0
    elapsed_ms: float = 0.0
    error: str | None = None


@dataclass
class TickReport:
    now: datetime
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def enqueued(self) -> int:
        return sum(s.enqueued for s in self.sources)

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.sources if s.error is not None]

    def summary(self) -> str:
        return ", ".join(
            f"{s.name} {s.enqueued} in {s.batches} batch(es) {s.elapsed_ms:.0f} ms"
            + (f" FAILED ({s.error})" if s.error else "")
            for s in self.sources
        )


def run_tick(
    session_factory: Callable[[], Session],
    *,
    now: datetime,
    sources: Sequence[DueSource],
    limit: int = 500,
) -> TickReport:
    """One tick: every source asked until it returns less than `limit`, each call committed.
    A source that fails is rolled back and logged; the others still run."""
    report = TickReport(now=now)
    for source in sources:
        result = SourceReport(name=source.name)
        report.sources.append(result)
        started = time.perf_counter()
        try:
            while result.batches < MAX_BATCHES_PER_SOURCE:
                with session_factory() as session:
                    count = source(session, now=now, limit=limit)
                    session.commit()
                result.batches += 1
                result.enqueued += count
                if count < limit:
                    break
        except Exception as exc:  # one source's failure must not stop the others
            result.error = f"{type(exc).__name__}: {exc}"[:300]
            logger.exception("scheduler.source_failed", extra={"source": source.name})
        result.elapsed_ms = (time.perf_counter() - started) * 1000
    return report


class Scheduler:
    """Ticks every `interval_s` seconds on a thread of its own until stopped (`shvya serve`
    hosts one, `shvya scheduler` runs one alone). Time comes from `clock`."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        sources: Sequence[DueSource],
        clock: Clock,
        interval_s: float,
        limit: int = 500,
        on_tick: Callable[[TickReport], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the scheduler's interval must be more than 0 seconds")
        self.session_factory = session_factory
        self.sources = list(sources)
        self.clock = clock
        self.interval_s = interval_s
        self.limit = limit
        self.on_tick = on_tick
        self.ticks = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> TickReport:
        report = run_tick(
            self.session_factory, now=self.clock.now(), sources=self.sources, limit=self.limit
        )
        self.ticks += 1
        if report.enqueued or report.failed:
            logger.info(
                "scheduler.tick enqueued %d: %s",
                report.enqueued,
                report.summary(),
                extra={"enqueued": report.enqueued},
            )
        if self.on_tick is not None:
            self.on_tick(report)
        return report

    def run(self) -> None:
        """Tick every interval until stop() is called (in this thread). The first tick comes
        one interval after the start, so a starting server binds its socket undisturbed."""
        while not self._stopping.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # the database may be away for a while: the next tick retries
                logger.exception("scheduler.tick_failed")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self.run, name="shvya-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking; a tick under way finishes (each of its batches is one short
        transaction)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
