"""A step meets the out-of-office detector and the sending limits as they are
(shvya.sequences.ooo, shvya.sequences.limits): an automatic reply pauses the enrolment until
the date it states, a real reply stops it, and a step over a limit waits with the limit's
reason (docs/sequences.md, docs/sequences-ooo-and-limits.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.inbound import InboundMessage, receive_inbound_message
from shvya.crm.models import Channel, Lead
from shvya.sequences.limits import DEFAULT_LIMITS, limits_for
from shvya.tenancy.models import Company
from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import FakeClock, Tenant

pytestmark = pytest.mark.one_database

PHONE = "+14155550100"


def _in_kolkata(factory: sessionmaker[Session], lead_id: str) -> None:
    with factory() as session:
        session.get_one(Lead, uuid.UUID(lead_id)).timezone = "Asia/Kolkata"
        session.commit()


STEP_TEXTS = {"Hello", "Any questions?"}


def _sent(client: TestClient, tenant: Tenant, lead_id: str) -> list[str]:
    """The sequence's messages to the lead (the AI answers the lead's own messages too)."""
    response = client.get(f"/leads/{lead_id}/messages", headers=tenant.agent)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return [m["text"] for m in items if m["direction"] == "out" and m["text"] in STEP_TEXTS]


def test_an_out_of_office_reply_pauses_until_its_date_and_a_real_reply_stops(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    steps = [
        {"channel": "sandbox", "text": "Hello"},
        {"channel": "sandbox", "after": {"days": 1}, "text": "Any questions?"},
    ]
    seq = create_sequence(client, acme, steps=steps)["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    _in_kolkata(session_factory, lead)
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    assert _sent(client, acme, lead) == ["Hello"]
    clock.advance(minutes=5)
    body = {
        "channel": "sandbox",
        "from": PHONE,
        "text": "Automatic reply: I am out of the office until 15 December with limited access.",
    }
    assert client.post("/inbound-message", json=body, headers=acme.agent).status_code == 201
    clock.advance(days=1)
    tick()
    work()
    [row] = enrollments(client, acme, seq)
    # Back on the morning of 15 December where the lead is: 00:00 in Kolkata.
    back = datetime(2026, 12, 14, 18, 30, tzinfo=UTC)
    assert row["status"] == "paused"
    assert row["hold_reason"] == f"out_of_office until {back.isoformat()}"
    assert _sent(client, acme, lead) == ["Hello"]
    clock.current = back + timedelta(hours=4)  # 10:00 in Kolkata: the step may go
    work()
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "completed"
    assert _sent(client, acme, lead) == ["Hello", "Any questions?"]

    # A person's reply is not an out-of-office: the next sequence stops at its step.
    seq2 = create_sequence(client, acme, name="Two", stop_on=["reply"], steps=steps)["id"]
    enroll(client, acme, seq2, lead_ids=[lead])
    tick()
    work()
    clock.advance(minutes=5)
    body = {"channel": "sandbox", "from": PHONE, "text": "I was out of office last week. Price?"}
    assert client.post("/inbound-message", json=body, headers=acme.agent).status_code == 201
    clock.advance(days=1)
    tick()
    work()
    [row] = enrollments(client, acme, seq2)
    assert (row["status"], row["stop_reason"]) == ("stopped", "reply")


def test_a_step_over_the_companys_hourly_limit_waits_for_the_oldest_send_to_age_out(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    # The sandbox has no limits to set through the API; a test company's own override does.
    with session_factory() as session:
        company = session.get_one(Company, acme.company_id)
        company.settings = {**company.settings, "sending_limits": {"sandbox": {"per_hour": 1}}}
        session.commit()
    seq = create_sequence(client, acme, steps=[{"channel": "sandbox", "text": "Hello"}])["id"]
    first = new_lead(client, acme, ("sandbox", PHONE))
    second = new_lead(client, acme, ("sandbox", "+14155550101"), name="Ravi")
    enroll(client, acme, seq, lead_ids=[first, second])
    started = clock.now()
    tick()
    work()
    rows = {r["lead_id"]: r for r in enrollments(client, acme, seq)}
    sent = [lead for lead in (first, second) if _sent(client, acme, lead) == ["Hello"]]
    [held] = [lead for lead in (first, second) if lead not in sent]
    assert len(sent) == 1
    assert rows[held]["status"] == "active"
    assert rows[held]["hold_reason"].startswith("account_hourly_limit until ")
    until = datetime.fromisoformat(rows[held]["hold_reason"].split(" until ")[1])
    assert started + timedelta(hours=1) <= until <= started + timedelta(hours=1, minutes=1)
    clock.current = until - timedelta(minutes=1)
    work()
    assert _sent(client, acme, held) == []
    clock.current = until
    work()
    assert _sent(client, acme, held) == ["Hello"]
    assert {r["status"] for r in enrollments(client, acme, seq)} == {"completed"}


def test_a_mail_a_program_sent_pauses_for_14_days_even_when_its_words_say_nothing(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    """An inbound email whose Auto-Submitted header says a program sent it (recorded as the
    message's `auto_submitted`, docs/email-inbound.md) is no reply, whatever its words."""
    steps = [
        {"channel": "sandbox", "text": "Hello"},
        {"channel": "sandbox", "after": {"days": 1}, "text": "Any questions?"},
    ]
    seq = create_sequence(client, acme, steps=steps)["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE), ("email", "asha@example.in"))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    clock.advance(minutes=5)
    with session_factory() as session:
        receive_inbound_message(
            session,
            company_id=acme.company_id,
            message=InboundMessage(
                channel=Channel.email,
                sender="asha@example.in",
                text="Thank you for your email.",
                external_id="auto-1@mail.example",
                meta={"type": "email", "auto_submitted": "auto-submitted: auto-replied"},
            ),
            region="IN",
            actor="email",
            now=clock.now(),
        )
        session.commit()
    received = clock.now()
    clock.advance(days=1)
    tick()
    work()
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "paused"
    back = datetime.fromisoformat(row["hold_reason"].removeprefix("out_of_office until "))
    assert received + timedelta(days=14) <= back <= clock.now() + timedelta(days=14)


def test_a_company_sets_its_sending_limits_and_a_bad_one_is_refused(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    limits = {"email": {"per_hour": 30, "per_domain_per_day": None}, "sms": {"per_day": 500}}
    patched = client.patch("/company", json={"sending_limits": limits}, headers=acme.admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["sending_limits"] == limits
    assert client.get("/company", headers=globex.admin).json()["sending_limits"] == {}
    for bad in ({"email": {"per_hour": 0}}, {"fax": {"per_day": 5}}, {"sms": {"per_week": 5}}):
        refused = client.patch("/company", json={"sending_limits": bad}, headers=acme.admin)
        assert refused.status_code == 422, bad
    assert client.get("/company", headers=acme.admin).json()["sending_limits"] == limits
    # What the step handler applies: the override over the channel's default.
    email = limits_for("email", {"sending_limits": limits})
    assert email.per_hour == 30
    assert email.per_day == DEFAULT_LIMITS["email"].per_day
    assert email.per_domain_per_day is None
    reset = client.patch("/company", json={"sending_limits": {}}, headers=acme.admin)
    assert reset.json()["sending_limits"] == {}
