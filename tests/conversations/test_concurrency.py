"""Redelivered webhooks arrive at the same time in real life (docs/reliability.md F12)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message
from shvya.crm.models import Lead, LeadContact
from shvya.events.models import Event
from shvya.jobs.models import Job
from tests.support import Tenant

COPIES = 20


def post_together(
    base_url: str, tenant: Tenant, bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bodies))

    def post(body: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            barrier.wait()
            return client.post("/inbound-message", json=body, headers=tenant.agent)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Lead, LeadContact, Message, Job)
        }


def test_twenty_identical_posts_leave_one_message_one_lead_one_job(
    live_server: str, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    body = {"channel": "wa_cloud", "from": "+14155550199", "text": "hi", "external_id": "wamid.R"}
    responses = post_together(live_server, acme, [body] * COPIES)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (COPIES - 1) + [201], [r.text for r in responses]
    assert (
        len({(r.json()["lead_id"], r.json()["message_id"], r.json()["job_id"]) for r in responses})
        == 1
    )
    assert counts(session_factory) == {"leads": 1, "lead_contacts": 1, "messages": 1, "jobs": 1}
    with session_factory() as session:
        types = session.scalars(select(Event.type).where(Event.entity_type == "lead")).all()
    assert sorted(types) == ["InboundMessageReceived", "LeadCreated"]


def test_first_messages_racing_from_one_new_number_make_one_lead(
    live_server: str, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    bodies = [
        {"channel": "wa_cloud", "from": "+14155550142", "text": f"part {i}", "external_id": f"w{i}"}
        for i in range(10)
    ]
    responses = post_together(live_server, acme, bodies)
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert len({r.json()["lead_id"] for r in responses}) == 1
    assert sum(r.json()["lead_created"] for r in responses) == 1
    assert counts(session_factory) == {"leads": 1, "lead_contacts": 1, "messages": 10, "jobs": 10}
