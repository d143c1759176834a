"""POST /webhooks/sendgrid: SendGrid's ECDSA-signed Event Webhook (docs/email-feedback.md 3)."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message
from shvya.crm.models import Suppression
from tests.email_feedback.conftest import Mailbox, events_of, make_mailbox
from tests.support import FakeClock, Tenant


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
    }


def deliver(
    client: TestClient,
    box: Mailbox,
    events: list[dict[str, Any]],
    clock: FakeClock,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    age: int = 0,
) -> Any:
    body = json.dumps(events).encode()
    timestamp = int(clock.now().timestamp()) - age
    return client.post(
        f"/webhooks/sendgrid?account_id={box.account_id}",
        content=body,
        headers=signed(key or box.signing_key, body, timestamp),
    )


def event(
    name: str, event_id: str, address: str = "ana@lead.example", **extra: Any
) -> dict[str, Any]:
    return {
        "email": address,
        "timestamp": 1795687200,
        "event": name,
        "sg_event_id": event_id,
        "sg_message_id": "sales-msg-0.filterdrecv-5645d9c87f-78xgx-1-5E8F4A1B-2.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        **extra,
    }


def suppressions(factory: sessionmaker[Session]) -> list[Suppression]:
    with factory() as session:
        return list(session.scalars(select(Suppression).order_by(Suppression.address)).all())


def test_signed_events_suppress_as_their_kind_says(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    box = make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn="arn:aws:sns:us-east-1:1:a",
    )
    events = [
        event("delivered", "ev-delivered"),
        event("bounce", "ev-blocked", "blocked@lead.example", type="blocked", reason="IP blocked"),
        event("bounce", "ev-bounce", type="bounce", reason="550 5.1.1 no such user"),
        event("dropped", "ev-dropped", "dropped@lead.example", reason="Bounced Address"),
        event("spamreport", "ev-spam", "spam@lead.example"),
        event("unsubscribe", "ev-unsub", "unsub@lead.example"),
        event("group_unsubscribe", "ev-group", "group@lead.example", asm_group_id=1),
        event("open", "ev-open"),
    ]
    answer = deliver(client, box, events, clock)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "recorded": 7}
    got = {(s.address, s.reason, s.source) for s in suppressions(session_factory)}
    assert got == {
        ("ana@lead.example", "bounce", "bounce"),
        ("dropped@lead.example", "undeliverable", "provider"),
        ("spam@lead.example", "complaint", "complaint"),
        ("unsub@lead.example", "opt_out", "provider"),
        ("group@lead.example", "opt_out", "provider"),
    }
    [bounced] = events_of(session_factory, acme.company_id, "EmailBounced")
    assert bounced.entity_id == box.lead_id
    with session_factory() as session:
        # sg_message_id's part before the first '.' is the id the send returned.
        message = session.scalars(select(Message).where(Message.external_id == "sales-msg-0")).one()
        assert message.status == "failed"

    # Redelivered (SendGrid retries for 24 hours): the same sg_event_ids change nothing.
    again = deliver(client, box, events, clock)
    assert again.json() == {"ok": True, "recorded": 0}
    assert len(suppressions(session_factory)) == 5
    assert len(events_of(session_factory, acme.company_id, "ContactSuppressed")) == 5


def test_wrong_missing_or_stale_signatures_are_refused(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    box = make_mailbox(
        session_factory,
        acme,
        from_address="sales@acme.example",
        lead_address="ana@lead.example",
        topic_arn="arn:aws:sns:us-east-1:1:a",
    )
    other = make_mailbox(
        session_factory,
        globex,
        from_address="hello@globex.example",
        lead_address="ana@lead.example",
        topic_arn="arn:aws:sns:us-east-1:1:b",
    )
    events = [event("spamreport", "ev-spam")]
    # Globex's key cannot write into Acme's account.
    answer = deliver(client, box, events, clock, key=other.signing_key)
    assert answer.status_code == 403
    assert answer.json()["error"] == "bad_signature"
    # Eleven minutes old: past the 600 s default.
    stale = deliver(client, box, events, clock, age=660)
    assert stale.status_code == 403
    assert "timestamp" in stale.json()["detail"]
    body = json.dumps(events).encode()
    headers = signed(box.signing_key, body, int(clock.now().timestamp()))
    tampered = body.replace(b"ana@", b"bob@")
    assert (
        client.post(
            f"/webhooks/sendgrid?account_id={box.account_id}", content=tampered, headers=headers
        ).status_code
        == 403
    )
    unsigned = client.post(f"/webhooks/sendgrid?account_id={box.account_id}", content=body)
    assert unsigned.status_code == 403
    unknown = client.post(
        "/webhooks/sendgrid?account_id=00000000-0000-7000-8000-000000000000",
        content=body,
        headers=headers,
    )
    assert unknown.status_code == 404
    assert suppressions(session_factory) == []
    # A body that is signed but not an event array is a clear 400.
    not_events = b'{"event": "bounce"}'
    answer = client.post(
        f"/webhooks/sendgrid?account_id={box.account_id}",
        content=not_events,
        headers=signed(box.signing_key, not_events, int(clock.now().timestamp())),
    )
    assert answer.status_code == 400
    assert "array" in answer.json()["detail"]
