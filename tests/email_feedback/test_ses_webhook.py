"""POST /webhooks/ses: SNS-signed SES events, signature and certificate checks, subscription
confirmation, idempotency and tenant routing (docs/email-feedback.md 1, 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels.models import EmailFeedback
from shvya.conversations.models import Message
from shvya.crm.models import Suppression
from tests.email_feedback.conftest import events_of, make_mailbox, ses_bounce, ses_complaint
from tests.fakes.sns import FakeSNS
from tests.support import Tenant

# SNS signatures and SES's event shapes are what these prove: the same on either database.
pytestmark = pytest.mark.one_database

TOPIC_A = "arn:aws:sns:us-east-1:111122223333:acme-ses-feedback"
TOPIC_B = "arn:aws:sns:us-east-1:444455556666:globex-ses-feedback"


def post(client: TestClient, envelope: dict[str, Any]) -> Any:
    return client.post(
        "/webhooks/ses",
        content=json.dumps(envelope),
        headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": envelope["Type"],
        },
    )


def suppressions(factory: sessionmaker[Session]) -> list[Suppression]:
    with factory() as session:
        return list(session.scalars(select(Suppression)).all())


def feedback_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count(EmailFeedback.id))) or 0)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_permanent_bounce_suppresses_the_address_once(
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    fake_sns: FakeSNS,
    version: str,
) -> None:
    box = make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    envelope = fake_sns.notification(
        TOPIC_A,
        ses_bounce(["Ana@Lead.example"], message_id="sales-msg-0"),
        version=version,
        subject="Amazon SES Email Event Notification",
    )
    answer = post(client, envelope)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "recorded": 1}
    [row] = suppressions(session_factory)
    assert (row.company_id, row.address, row.reason, row.source) == (
        acme.company_id,
        "ana@lead.example",
        "bounce",
        "bounce",
    )
    [bounced] = events_of(session_factory, acme.company_id, "EmailBounced")
    assert bounced.entity_id == box.lead_id
    assert bounced.data["bounce_type"] == "Permanent"
    with session_factory() as session:
        message = session.scalars(select(Message).where(Message.external_id == "sales-msg-0")).one()
        assert message.status == "failed"
        assert "550 5.1.1" in (message.error or "")

    # SNS redelivers: the same MessageId changes nothing.
    again = post(client, envelope)
    assert again.json() == {"ok": True, "recorded": 0}
    assert len(suppressions(session_factory)) == 1
    assert len(events_of(session_factory, acme.company_id, "EmailBounced")) == 1
    assert len(events_of(session_factory, acme.company_id, "ContactSuppressed")) == 1
    # The certificate was fetched once and cached.
    assert fake_sns.cert_fetches == 1


def test_a_transient_bounce_is_recorded_without_suppressing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], fake_sns: FakeSNS
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    for bounce_type in ("Transient", "Undetermined"):
        envelope = fake_sns.notification(
            TOPIC_A,
            ses_bounce(
                ["ana@lead.example"],
                bounce_type=bounce_type,
                message_id="sales-msg-0",
                form="eventType",
            ),
        )
        assert post(client, envelope).json() == {"ok": True, "recorded": 1}
    assert suppressions(session_factory) == []
    assert events_of(session_factory, acme.company_id, "EmailBounced") == []
    assert feedback_count(session_factory) == 2
    with session_factory() as session:
        message = session.scalars(select(Message).where(Message.external_id == "sales-msg-0")).one()
        assert message.status == "sent"


def test_a_complaint_suppresses_and_a_delivery_marks_the_message(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], fake_sns: FakeSNS
) -> None:
    box = make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    delivery = {
        "eventType": "Delivery",
        "mail": {
            "messageId": "sales-msg-0",
            "source": "sales@acme.example",
            "destination": ["ana@lead.example"],
        },
        "delivery": {"timestamp": "2026-11-26T09:00:00.000Z", "recipients": ["ana@lead.example"]},
    }
    assert post(client, fake_sns.notification(TOPIC_A, delivery, version="2")).status_code == 200
    with session_factory() as session:
        message = session.scalars(select(Message).where(Message.external_id == "sales-msg-0")).one()
        assert message.status == "delivered"
    answer = post(
        client,
        fake_sns.notification(
            TOPIC_A, ses_complaint("ana@lead.example", message_id="sales-msg-0", form="eventType")
        ),
    )
    assert answer.json() == {"ok": True, "recorded": 1}
    [row] = suppressions(session_factory)
    assert (row.reason, row.source) == ("complaint", "complaint")
    [complained] = events_of(session_factory, acme.company_id, "EmailComplained")
    assert complained.entity_id == box.lead_id
    assert complained.data["feedback_type"] == "abuse"


def test_unsigned_wrongly_signed_or_foreign_certificates_are_refused(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], fake_sns: FakeSNS
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    event = ses_bounce(["ana@lead.example"], message_id="sales-msg-0")
    for version in ("1", "2"):
        # Signed by someone else's key.
        forged = fake_sns.notification(TOPIC_A, event, version=version)
        fake_sns.sign(forged, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        assert post(client, forged).status_code == 403
        # Signed, then altered.
        altered = fake_sns.notification(TOPIC_A, event, version=version)
        altered["Message"] = json.dumps(ses_bounce(["boss@lead.example"], message_id="x"))
        assert post(client, altered).status_code == 403
    unsigned = fake_sns.notification(TOPIC_A, event)
    unsigned["Signature"] = ""
    assert post(client, unsigned).status_code == 403
    elsewhere = fake_sns.notification(TOPIC_A, event)
    elsewhere["SigningCertURL"] = "https://attacker.example/cert.pem"
    fake_sns.sign(elsewhere)
    answer = post(client, elsewhere)
    assert answer.status_code == 403
    assert "SigningCertURL" in answer.json()["detail"]
    bad_version = fake_sns.notification(TOPIC_A, event)
    bad_version["SignatureVersion"] = "3"
    assert post(client, bad_version).status_code == 403
    assert client.post("/webhooks/ses", content=b"not json").status_code == 403
    assert client.post("/webhooks/ses", content=b'{"Type": "Notification"}').status_code == 400
    assert suppressions(session_factory) == []
    assert feedback_count(session_factory) == 0


def test_subscription_is_confirmed_only_for_a_listed_topic(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], fake_sns: FakeSNS
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    unknown = fake_sns.subscription("arn:aws:sns:us-east-1:999999999999:someone-else")
    answer = post(client, unknown)
    assert answer.status_code == 404
    assert "sns_topic_arns" in answer.json()["detail"]
    assert fake_sns.confirmations == []

    known = fake_sns.subscription(TOPIC_A)
    assert post(client, known).json() == {"ok": True, "recorded": 0}
    assert fake_sns.confirmations == [known["SubscribeURL"].removeprefix(fake_sns.url)]

    outside = fake_sns.subscription(TOPIC_A)
    outside["SubscribeURL"] = "https://attacker.example/confirm"
    fake_sns.sign(outside)
    assert post(client, outside).status_code == 403
    assert len(fake_sns.confirmations) == 1


def test_events_reach_only_the_company_whose_account_lists_the_topic(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
    fake_sns: FakeSNS,
) -> None:
    make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_A,
    )
    make_mailbox(
        session_factory,
        globex,
        from_address="hello@globex.example",
        lead_address="ana@lead.example",
        topic_arn=TOPIC_B,
    )
    post(
        client,
        fake_sns.notification(TOPIC_B, ses_bounce(["ana@lead.example"], message_id="sales-msg-0")),
    )
    [row] = suppressions(session_factory)
    assert row.company_id == globex.company_id
    # Acme's message with that id is untouched: another company's event never reaches it.
    with session_factory() as session:
        message = session.scalars(
            select(Message).where(
                Message.external_id == "sales-msg-0", Message.company_id == acme.company_id
            )
        ).one()
        assert message.status == "sent"
    assert events_of(session_factory, acme.company_id, "EmailBounced") == []
