"""The unit of work of one request: one session, committed once, before the response is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool


def database_unavailable(exc: BaseException) -> bool:
    """The database itself failed (unreachable, connection lost, locked, out of resources),
    not the statement: the request is answered 503 (app.py) and can be tried again, where an
    error of one row's data would fail the same way every time."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session, committed once at the end, rolled back on any error (for a route that
    runs its whole request in one thread-pool call)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _finish(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    # Async so that opening costs no thread-pool hop (a Session touches the database only at
    # its first statement); the commit, which does, runs in the pool: one hop, not two.
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_finish, session, commit=False)
        raise
    # scope="function" runs this before the response is sent, so a failed commit becomes an
    # error response instead of following a 2xx the client already has.
    await run_in_threadpool(_finish, session, commit=True)


DbSession = Annotated[Session, Depends(get_session, scope="function")]
