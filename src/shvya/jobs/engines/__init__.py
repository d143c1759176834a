"""Job engines: who runs the queued jobs. Each implements JobEngine
(docs/architecture.md rule 7)."""

from __future__ import annotations

from typing import Protocol

from shvya.jobs.service import JobNotifier


class JobEngine(JobNotifier, Protocol):
    """Told about jobs after commit; started and stopped with the process that hosts it."""

    def start(self) -> None: ...

    def stop(self, grace_seconds: float | None = None) -> None: ...
