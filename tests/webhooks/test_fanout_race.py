"""Two schedulers fanning out at once on PostgreSQL (docs/webhooks.md 3): each locks the
subscriptions it scans (FOR UPDATE SKIP LOCKED), so the second skips what the first holds, and
nothing is ever written twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.jobs.models import Job
from shvya.webhooks.models import WebhookDelivery
from shvya.webhooks.service import due_deliveries
from tests.support import FakeClock, Tenant, post_inbound
from tests.webhooks.support import subscribe


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: SQLite has one writer, so there is no race to run."""
    return str(request.param)


def test_two_schedulers_at_once_never_double_a_delivery(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> None:
    for tenant in (acme, globex):
        for n in range(2):
            subscribe(client, tenant, f"https://hooks{n}.example.com/{tenant.name}")
    for n in range(5):
        post_inbound(client, acme, phone=f"+1415555010{n}")
        post_inbound(client, globex, phone=f"+1415555010{n}")
    clock.advance(seconds=1)

    # The first scheduler holds its transaction open; the second runs meanwhile.
    first = session_factory()
    taken_first = due_deliveries(first, now=clock.now(), limit=500)
    taken_second: list[int] = []

    def second() -> None:
        with session_factory() as session:
            taken_second.append(due_deliveries(session, now=clock.now(), limit=500))
            session.commit()

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=10)
    second_waited = thread.is_alive()  # blocked on the first's locks instead of skipping them
    first.commit()
    thread.join(timeout=10)
    first.close()

    assert not second_waited
    assert taken_first == 20  # 4 subscriptions x 5 messages, locked by the first
    assert taken_second == [0]  # skipped every locked subscription, waited for none
    # Both again later, in the other order: the lag window is read again, nothing doubles.
    later = clock.now() + timedelta(seconds=5)
    for _ in range(2):
        with session_factory() as session:
            assert due_deliveries(session, now=later, limit=500) == 0
            session.commit()
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 20
        assert session.scalar(select(func.count()).where(Job.type == "webhook.reminder")) == 20
