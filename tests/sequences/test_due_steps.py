"""The scheduler's source of due steps (shvya.sequences.service.due_steps): it claims due
enrolments only, takes them out of "due" in the claiming transaction, and two schedulers on
PostgreSQL never enqueue a step twice (docs/sequences.md, "The scheduler's source")."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shvya.jobs.models import Job
from shvya.sequences.models import Enrollment
from shvya.sequences.service import due_steps
from tests.sequences.conftest import create_sequence, enroll, new_lead
from tests.support import FakeClock, Tenant

BOTH = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def _enrol(client: TestClient, acme: Tenant, count: int, *, after_hours: int = 0) -> None:
    seq = create_sequence(
        client,
        acme,
        name=f"s{after_hours}",
        steps=[{"channel": "sandbox", "after": {"hours": after_hours}, "text": "Hi"}],
    )["id"]
    leads = [
        new_lead(client, acme, ("sandbox", f"+1415555{after_hours:02d}{i:02d}"))
        for i in range(count)
    ]
    assert enroll(client, acme, seq, lead_ids=leads)["enrolled"] == count


def _jobs(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        rows = session.execute(select(Job.type, func.count()).group_by(Job.type)).all()
    return {job_type: count for job_type, count in rows}


@BOTH
def test_only_due_steps_are_claimed_in_batches_of_the_limit(
    client: TestClient, acme: Tenant, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    _enrol(client, acme, 5)
    _enrol(client, acme, 3, after_hours=1)
    with session_factory() as session:
        assert due_steps.name == "sequence_steps"
        assert due_steps(session, now=clock.now(), limit=2) == 2
        assert due_steps(session, now=clock.now(), limit=2) == 2
        assert due_steps(session, now=clock.now(), limit=2) == 1
        assert due_steps(session, now=clock.now(), limit=2) == 0
        session.commit()
    assert _jobs(session_factory) == {"sequence.step": 5}
    with session_factory() as session:
        later = clock.now() + timedelta(hours=1)
        assert due_steps(session, now=later, limit=100) == 3
        session.commit()
    assert _jobs(session_factory) == {"sequence.step": 8}


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_two_schedulers_at_once_share_the_due_steps_on_postgresql(
    client: TestClient, acme: Tenant, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    _enrol(client, acme, 6)
    with session_factory() as first, session_factory() as second:
        claimed_first = due_steps(first, now=clock.now(), limit=4)
        # The first has not committed: its rows are locked, the second skips them.
        claimed_second = due_steps(second, now=clock.now(), limit=4)
        assert (claimed_first, claimed_second) == (4, 2)
        first.commit()
        second.commit()
    with session_factory() as third:
        assert due_steps(third, now=clock.now(), limit=4) == 0
    assert _jobs(session_factory) == {"sequence.step": 6}


@BOTH
def test_a_lead_is_never_twice_live_in_a_sequence_whatever_writes_it(
    client: TestClient, acme: Tenant, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    """The partial unique index holds where the API's read-then-insert could race."""
    seq = create_sequence(client, acme)["id"]
    lead = new_lead(client, acme, ("sandbox", "+14155550100"))
    enroll(client, acme, seq, lead_ids=[lead])
    with session_factory() as session:
        [live] = session.scalars(select(Enrollment)).all()
        twin = Enrollment(
            company_id=live.company_id,
            sequence_id=live.sequence_id,
            lead_id=live.lead_id,
            position=0,
            status="paused",
            replies_after=clock.now(),
            enrolled_at=clock.now(),
            updated_at=clock.now(),
        )
        session.add(twin)
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
        # An ended enrolment does not count: the lead may be enrolled again.
        live = session.scalars(select(Enrollment)).one()
        live.status = "stopped"
        session.add(
            Enrollment(
                company_id=live.company_id,
                sequence_id=live.sequence_id,
                lead_id=live.lead_id,
                position=0,
                status="active",
                replies_after=clock.now(),
                enrolled_at=clock.now(),
                updated_at=clock.now(),
            )
        )
        session.commit()
