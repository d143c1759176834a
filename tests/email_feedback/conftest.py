from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm import service as crm
from shvya.crm.models import Channel
from shvya.crm.schemas import ContactIn, LeadCreateIn
from shvya.db.base import new_id
from shvya.events.models import Event
from shvya.tenancy.models import ChannelAccount
from tests.fakes.sns import FakeSNS
from tests.support import T0, Tenant


@pytest.fixture
def fake_sns() -> Iterator[FakeSNS]:
    with FakeSNS() as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, fake_sns: FakeSNS) -> Settings:
    return Settings(
        database_url=database_url,
        auth_failures_per_minute=20,
        sns_cert_url_pattern=fake_sns.url_pattern,
    )


@dataclass
class Mailbox:
    account_id: uuid.UUID
    topic_arn: str
    lead_id: uuid.UUID
    address: str
    signing_key: ec.EllipticCurvePrivateKey


def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()


def make_mailbox(
    factory: sessionmaker[Session],
    tenant: Tenant,
    *,
    from_address: str,
    lead_address: str,
    topic_arn: str,
    sends: int = 1,
) -> Mailbox:
    """An email account as POST /channels/email will write it, a lead with an email contact,
    and `sends` emails sent to that lead from the account (the first has external id
    "<local part of from_address>-msg-0")."""
    key, public = sendgrid_key()
    with factory() as session:
        account = ChannelAccount(
            company_id=tenant.company_id,
            channel=Channel.email.value,
            name="mail",
            external_id=from_address,
            config={
                "provider": "ses",
                "sns_topic_arns": [topic_arn],
                "sendgrid_webhook_public_key": public,
            },
        )
        session.add(account)
        lead = crm.create_lead(
            session,
            company_id=tenant.company_id,
            data=LeadCreateIn(
                name="Ana", contacts=[ContactIn(channel=Channel.email, value=lead_address)]
            ),
            region="IN",
            actor="test",
            now=T0,
        )
        session.flush()
        prefix = from_address.split("@")[0]
        add_sends(session, tenant, account.id, lead.id, sends, prefix=prefix)
        session.commit()
        return Mailbox(account.id, topic_arn, lead.id, lead_address, key)


def add_sends(
    session: Session,
    tenant: Tenant,
    account_id: uuid.UUID,
    lead_id: uuid.UUID,
    count: int,
    *,
    prefix: str,
    start: int = 0,
) -> None:
    if not count:
        return
    session.execute(
        insert(Message),
        [
            {
                "id": new_id(),
                "company_id": tenant.company_id,
                "lead_id": lead_id,
                "channel": Channel.email.value,
                "channel_account_id": account_id,
                "direction": "out",
                "text": "Hello",
                "status": "sent",
                "external_id": f"{prefix}-msg-{i}",
                "meta": {},
                "created_at": T0 - timedelta(days=1),
                "updated_at": T0 - timedelta(days=1),
                "sent_at": T0 - timedelta(days=1),
            }
            for i in range(start, start + count)
        ],
    )


def events_of(factory: sessionmaker[Session], company_id: uuid.UUID, type: str) -> list[Event]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event).where(Event.company_id == company_id, Event.type == type)
            ).all()
        )


def ses_bounce(
    addresses: list[str],
    *,
    bounce_type: str = "Permanent",
    message_id: str,
    form: str = "notificationType",
) -> dict[str, Any]:
    return {
        form: "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": a,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for a in addresses
            ],
            "timestamp": "2026-11-26T09:59:00.000Z",
            "feedbackId": "0100-feedback",
        },
        "mail": {
            "timestamp": "2026-11-25T10:00:00.000Z",
            "messageId": message_id,
            "source": "Acme Sales <sales@acme.example>",
            "destination": addresses,
        },
    }


def ses_complaint(
    address: str, *, message_id: str, form: str = "notificationType"
) -> dict[str, Any]:
    return {
        form: "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": "2026-11-26T09:59:00.000Z",
            "feedbackId": "0100-complaint",
            "complaintFeedbackType": "abuse",
        },
        "mail": {
            "timestamp": "2026-11-25T10:00:00.000Z",
            "messageId": message_id,
            "source": "sales@acme.example",
            "destination": [address],
        },
    }
