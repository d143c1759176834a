"""Units of work that call out of the process, in phases (docs/architecture.md, "Phases of a
job that calls out").

Code that calls a model, Meta's Graph API or an embeddings server is a generator: before each
call it yields a `Call`, and whoever owns the unit of work drives it with `run_phases()`. The
owner ends the *prepare* phase before the call (the job runner: fenced by the job's lease, then
committed; an endpoint or a CLI command: committed), the call runs with no transaction open,
and its result, or its exception, goes back into the generator, which writes the *record*
phase. Services that call out are generators too and are composed with `yield from`, so none
of them ever commits, rolls back or is handed a commit callback.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """Work outside the database, named for logs and errors; it takes no session."""

    name: str
    work: Callable[[], T]


# Yields its calls, returns its result.
Phases = Generator[Call[Any], Any, T]


class CallTouchedDatabase(RuntimeError):
    """A call used the unit of work's session: calls run with no transaction open."""


def has_work(session: Session) -> bool:
    """Whether the session holds anything a commit would end or write."""
    return bool(session.in_transaction() or session.new or session.dirty or session.deleted)


def run_phases(phases: Phases[T], *, session: Session, end_prepare: Callable[[], None]) -> T:
    """Drive `phases` to its result. Before each call, `end_prepare()` ends the phase so far
    (it commits); the call runs with no transaction open; its result is sent back into the
    generator, or its exception thrown in at the yield for the record phase to handle."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                call = phases.throw(error) if error is not None else phases.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            end_prepare()
            try:
                value, error = call.work(), None
            except Exception as exc:  # the record phase decides what it means
                value, error = None, exc
            if session.in_transaction():
                raise CallTouchedDatabase(f"the call {call.name!r} used the database session")
    finally:
        phases.close()


def commit_between_phases(session: Session) -> Callable[[], None]:
    """`end_prepare` for an endpoint or a CLI command: commit what the unit of work did so
    far (usually reads), so no transaction stays open while it calls out."""

    def end_prepare() -> None:
        if has_work(session):
            session.commit()

    return end_prepare
