"""Complaint and bounce rates per sending domain over the rolling window: alert, pause of
sequence email by the router's policy, resume (docs/email-feedback.md 4)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import feedback
from shvya.channels import service as channels
from shvya.channels.policies import Allow, ChannelPolicy, Refuse, SendKind, verdict
from shvya.config import Settings
from shvya.crm import service as crm
from shvya.crm.models import Channel
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import ChannelAccount
from tests.email_feedback.conftest import (
    Mailbox,
    events_of,
    make_mailbox,
    ses_bounce,
    ses_complaint,
)
from tests.fakes.sns import FakeSNS
from tests.support import FakeClock, Tenant

TOPIC = "arn:aws:sns:us-east-1:111122223333:acme-ses-feedback"


def post(client: TestClient, envelope: dict[str, Any]) -> None:
    answer = client.post("/webhooks/ses", content=json.dumps(envelope))
    assert answer.status_code == 200, answer.text


def email_verdict(
    factory: sessionmaker[Session], tenant: Tenant, box: Mailbox, kind: SendKind, clock: FakeClock
) -> Any:
    """The router's verdict on an email send to the lead: the facts `channels.service` gathers
    for an email route (its account, the from address), then the policy."""
    with factory() as session:
        account = session.get(ChannelAccount, box.account_id)
        contact = crm.lead_contact(
            session, company_id=tenant.company_id, lead_id=box.lead_id, channel=Channel.email.value
        )
        assert account is not None and contact is not None
        route = channels.Route(
            company=tenancy.get_company(session, company_id=tenant.company_id),
            contact=contact,
            adapter=channels.SandboxAdapter(),
            account=account,
            policy=ChannelPolicy(),
        )
        facts = channels._facts(
            session, route, lead_id=box.lead_id, channel=Channel.email, now=clock.now()
        )
        return verdict(route.policy, facts, kind)


def test_complaints_alert_at_0_1_percent_and_pause_sequences_at_0_3_percent(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
    fake_sns: FakeSNS,
    clock: FakeClock,
) -> None:
    box = make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC,
        sends=1000,
    )
    make_mailbox(
        session_factory,
        globex,
        from_address="hello@globex.example",
        lead_address="ana@lead.example",
        topic_arn="arn:aws:sns:us-east-1:4:globex",
        sends=10,
    )
    # One complaint in 1,000 sends: 0.1%, Gmail's line. The company is told.
    post(
        client,
        fake_sns.notification(TOPIC, ses_complaint("c1@lead.example", message_id="sales-msg-1")),
    )
    [alert] = events_of(session_factory, acme.company_id, "EmailReputationAlert")
    assert alert.data["complaints"] == 1
    assert alert.data["sends"] == 1000
    assert alert.data["complaint_rate"] == 0.001
    assert "complaint rate 0.10%" in alert.data["reason"]
    assert isinstance(
        email_verdict(session_factory, acme, box, SendKind.sequence_step, clock), Allow
    )

    health = client.get("/channels/email/health", headers=acme.admin).json()
    [domain] = health["domains"]
    assert (domain["sending_domain"], domain["state"], domain["sends"]) == (
        "acme.example",
        "alerted",
        1000,
    )
    assert health["min_sends"] == 100 and health["window_days"] == 30

    # Three in 1,000: 0.3%, the line Gmail says never to reach. Sequence email pauses.
    for i in (2, 3):
        post(
            client,
            fake_sns.notification(
                TOPIC, ses_complaint(f"c{i}@lead.example", message_id=f"sales-msg-{i}")
            ),
        )
    [paused] = events_of(session_factory, acme.company_id, "EmailSendingPaused")
    assert paused.data["complaints"] == 3
    refusal = email_verdict(session_factory, acme, box, SendKind.sequence_step, clock)
    assert isinstance(refusal, Refuse)
    assert refusal.reason == "email_paused"
    assert "complaint rate 0.30% (3 of 1000 sends)" in refusal.detail
    assert isinstance(email_verdict(session_factory, acme, box, SendKind.bumpup, clock), Refuse)
    # Answers to the lead and a person's own messages still go.
    assert isinstance(email_verdict(session_factory, acme, box, SendKind.reply, clock), Allow)
    assert isinstance(email_verdict(session_factory, acme, box, SendKind.message, clock), Allow)

    # Globex sees only its own domain and cannot lift Acme's pause.
    globex_health = client.get("/channels/email/health", headers=globex.admin).json()
    assert [d["sending_domain"] for d in globex_health["domains"]] == ["globex.example"]
    assert globex_health["domains"][0]["state"] == "ok"
    assert (
        client.post("/channels/email/acme.example/resume", headers=globex.admin).status_code == 409
    )
    # An agent can neither read the health nor resume.
    assert client.get("/channels/email/health", headers=acme.agent).status_code == 403
    assert client.post("/channels/email/acme.example/resume", headers=acme.agent).status_code == 403

    resumed = client.post("/channels/email/acme.example/resume", headers=acme.admin)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "ok"
    # Counted afresh from the resume: the complaints that paused it do not pause it again.
    assert resumed.json()["complaints"] == 0
    [event] = events_of(session_factory, acme.company_id, "EmailSendingResumed")
    assert event.data["sending_domain"] == "acme.example"
    assert isinstance(
        email_verdict(session_factory, acme, box, SendKind.sequence_step, clock), Allow
    )
    assert client.post("/channels/email/acme.example/resume", headers=acme.admin).status_code == 409


def test_bounces_alert_at_5_percent_and_pause_at_10_percent(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], fake_sns: FakeSNS
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC,
        sends=100,
    )
    for i in range(5):
        post(
            client,
            fake_sns.notification(
                TOPIC, ses_bounce([f"b{i}@lead.example"], message_id=f"sales-msg-{i}")
            ),
        )
    assert len(events_of(session_factory, acme.company_id, "EmailReputationAlert")) == 1
    assert events_of(session_factory, acme.company_id, "EmailSendingPaused") == []
    # Transient bounces never count towards the rate.
    for i in range(5, 10):
        post(
            client,
            fake_sns.notification(
                TOPIC,
                ses_bounce(
                    [f"b{i}@lead.example"], bounce_type="Transient", message_id=f"sales-msg-{i}"
                ),
            ),
        )
    assert events_of(session_factory, acme.company_id, "EmailSendingPaused") == []
    for i in range(10, 15):
        post(
            client,
            fake_sns.notification(
                TOPIC, ses_bounce([f"b{i}@lead.example"], message_id=f"sales-msg-{i}")
            ),
        )
    [paused] = events_of(session_factory, acme.company_id, "EmailSendingPaused")
    assert paused.data["bounces"] == 10
    assert "bounce rate 10.00% (10 of 100 sends) reached 10%" in paused.data["reason"]


def test_rates_do_not_count_below_the_minimum_volume(
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    fake_sns: FakeSNS,
    settings: Settings,
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC,
        sends=20,
    )
    # One complaint in 20 sends is 5%, but 20 sends say nothing about a domain.
    post(
        client,
        fake_sns.notification(TOPIC, ses_complaint("c@lead.example", message_id="sales-msg-1")),
    )
    assert events_of(session_factory, acme.company_id, "EmailReputationAlert") == []
    with session_factory() as session:
        assert (
            feedback.paused_reason(
                session, company_id=acme.company_id, from_address="sales@acme.example"
            )
            is None
        )
    domain = client.get("/channels/email/health", headers=acme.admin).json()["domains"][0]
    assert (domain["sends"], domain["complaints"], domain["complaint_rate"], domain["state"]) == (
        20,
        1,
        0.05,
        "ok",
    )
