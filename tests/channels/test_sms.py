"""SMS over Twilio (docs/sms.md), against a fake Twilio on 127.0.0.1: sends and their errors,
signed inbound messages and status callbacks, STOP, quiet hours, and tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Lead, Suppression
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from tests.fakes.twilio_api import FakeTwilio
from tests.support import FakeClock, Tenant

# Twilio's protocol is what these prove: the same on either database (the router's rows are
# proved on both by tests/channels/test_sending.py).
pytestmark = pytest.mark.one_database

PUBLIC_URL = "https://shvya.example.com"
ACME_SID = "AC" + "a" * 32
ACME_TOKEN = "acmeauthtoken0123456789abcdef012"
ACME_NUMBER = "+14155550100"
GLOBEX_SID = "AC" + "b" * 32
GLOBEX_TOKEN = "globexauthtoken0123456789abcdef0"
GLOBEX_NUMBER = "+14155550199"
RAVI = "+919812345678"  # Asia/Kolkata: 15:30 there at the tests' 10:00 UTC


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACME_SID, auth_token=ACME_TOKEN, numbers={ACME_NUMBER}) as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, twilio: FakeTwilio) -> Settings:
    return Settings(
        database_url=database_url, twilio_base_url=twilio.base_url, public_url=PUBLIC_URL
    )


def connect(
    client: TestClient,
    tenant: Tenant,
    *,
    sid: str = ACME_SID,
    token: str = ACME_TOKEN,
    number: str = ACME_NUMBER,
    verify: bool = True,
) -> Any:
    body = {"phone_number": number, "account_sid": sid, "auth_token": token, "verify": verify}
    return client.post("/channels/sms", json=body, headers=tenant.admin)


@pytest.fixture
def sms(client: TestClient, acme: Tenant, twilio: FakeTwilio) -> FakeTwilio:
    connected = connect(client, acme)
    assert connected.status_code == 201, connected.text
    return twilio


def new_lead(client: TestClient, tenant: Tenant, phone: str = RAVI) -> str:
    made = client.post(
        "/leads",
        json={"name": "Ravi", "contacts": [{"channel": "sms", "value": phone}]},
        headers=tenant.admin,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def send(client: TestClient, tenant: Tenant, lead_id: str, text: str = "Hello Ravi") -> Any:
    return client.post(
        f"/leads/{lead_id}/messages",
        json={"channel": "sms", "text": text},
        headers=tenant.agent,
    )


def message(factory: sessionmaker[Session], message_id: str | uuid.UUID) -> Message:
    with factory() as session:
        return session.get_one(Message, uuid.UUID(str(message_id)))


def inbound(
    client: TestClient, twilio: FakeTwilio, params: dict[str, str], *, token: str | None = None
) -> Any:
    body, headers = twilio.signed_form(f"{PUBLIC_URL}/webhooks/twilio/sms", params, token=token)
    return client.post("/webhooks/twilio/sms", content=body, headers=headers)


def sms_in(sid: str, text: str, *, sender: str = RAVI, to: str = ACME_NUMBER) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACME_SID,
        "From": sender,
        "To": to,
        "Body": text,
        "NumMedia": "0",
    }


# --- connecting ---------------------------------------------------------------------------------


def test_connecting_checks_the_credentials_with_twilio_and_never_shows_the_token(
    client: TestClient, acme: Tenant, twilio: FakeTwilio
) -> None:
    refused = connect(client, acme, token="wrongtoken0123456789")
    assert refused.status_code == 422, refused.text
    assert "Twilio refused" in refused.json()["detail"]
    assert client.get("/channels/accounts", headers=acme.admin).json() == []

    connected = connect(client, acme)
    assert connected.status_code == 201, connected.text
    shown = connected.json()
    assert shown["channel"] == "sms" and shown["external_id"] == ACME_NUMBER
    assert shown["config"] == {"provider": "twilio", "account_sid": ACME_SID}
    assert ACME_TOKEN not in connected.text
    assert ("GET", f"/2010-04-01/Accounts/{ACME_SID}.json") in twilio.requests

    bad = client.post(
        "/channels/sms",
        json={"phone_number": "4155550100", "account_sid": "nope", "auth_token": "x"},
        headers=acme.admin,
    )
    assert bad.status_code == 422
    assert client.post(
        "/channels/sms", json={"phone_number": ACME_NUMBER}, headers=acme.agent
    ).status_code in (403, 422)


# --- sending ------------------------------------------------------------------------------------


def test_a_person_sends_an_sms_through_twilio(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = new_lead(client, acme)
    accepted = send(client, acme, lead_id, "Your demo is at 4 pm")
    assert accepted.status_code == 202, accepted.text
    make_worker().run_until_idle()
    [sent] = sms.sent
    assert (sent.from_, sent.to, sent.body) == (ACME_NUMBER, RAVI, "Your demo is at 4 pm")
    row = message(session_factory, accepted.json()["message_id"])
    assert row.status == "sent" and row.external_id == sent.sid
    assert sent.status_callback == f"{PUBLIC_URL}/webhooks/twilio/status/{row.channel_account_id}"


def test_twilio_errors_become_retries_refusals_and_a_suppression(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    lead_id = new_lead(client, acme)
    # Too many requests: retried, then sent.
    sms.fail_next = [20429]
    first = send(client, acme, lead_id, "one")
    make_worker().run_until_idle()
    clock.advance(minutes=5)
    make_worker().run_until_idle()
    assert message(session_factory, first.json()["message_id"]).status == "sent"
    assert [s.body for s in sms.sent] == ["one"]

    # The number texted STOP to our sender: Twilio refuses with 21610, the number is
    # suppressed (source provider) and the next send is refused before Twilio is asked.
    sms.unsubscribed.add(RAVI)
    second = send(client, acme, lead_id, "two")
    assert second.status_code == 202
    make_worker().run_until_idle()
    failed = message(session_factory, second.json()["message_id"])
    assert failed.status == "failed" and "21610" in str(failed.error)
    with session_factory() as session:
        [suppression] = session.scalars(select(Suppression)).all()
        assert (suppression.channel, suppression.address) == ("sms", RAVI)
        assert (suppression.reason, suppression.source) == ("opt_out", "provider")
    third = send(client, acme, lead_id, "three")
    assert third.status_code == 409
    assert third.json()["error"] == "suppressed"
    assert [s.body for s in sms.sent] == ["one"]


def test_an_invalid_number_fails_for_good_and_bad_credentials_flag_the_account(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = new_lead(client, acme)
    sms.fail_next = [21211]
    accepted = send(client, acme, lead_id)
    make_worker().run_until_idle()
    row = message(session_factory, accepted.json()["message_id"])
    assert row.status == "failed" and row.meta["failure_code"] == "21211"
    assert row.meta["retryable"] is False

    sms.auth_token = "rotatedtoken0123456789"  # the stored token no longer works
    again = send(client, acme, lead_id, "again")
    make_worker().run_until_idle()
    assert message(session_factory, again.json()["message_id"]).status == "failed"
    [account] = client.get("/channels/accounts", headers=acme.admin).json()
    assert account["needs_attention"]


# --- inbound ------------------------------------------------------------------------------------


def test_a_signed_inbound_sms_is_stored_once_and_answered_with_empty_twiml(
    client: TestClient, acme: Tenant, sms: FakeTwilio, session_factory: sessionmaker[Session]
) -> None:
    params = sms_in("SM" + "1" * 32, "Is the premium plan monthly?")
    answered = inbound(client, sms, params)
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-type"].startswith("text/xml")
    assert "<Response/>" in answered.text
    # Twilio redelivers: nothing changes.
    assert inbound(client, sms, params).status_code == 200
    with session_factory() as session:
        rows = session.scalars(select(Message).where(Message.direction == "in")).all()
        assert [(m.channel, m.text, m.external_id) for m in rows] == [
            ("sms", "Is the premium plan monthly?", params["MessageSid"])
        ]
        assert session.scalars(select(Job).where(Job.type == "ai.engage")).all() != []


def test_a_wrongly_signed_inbound_sms_is_refused_and_stores_nothing(
    client: TestClient, acme: Tenant, sms: FakeTwilio, session_factory: sessionmaker[Session]
) -> None:
    params = sms_in("SM" + "2" * 32, "hello")
    assert inbound(client, sms, params, token="notthetoken0123456789").status_code == 403
    unsigned = client.post(
        "/webhooks/twilio/sms",
        data=params,
    )
    assert unsigned.status_code == 403
    # Signed for another URL (a different host): refused.
    body, headers = sms.signed_form("https://evil.example/webhooks/twilio/sms", params)
    assert client.post("/webhooks/twilio/sms", content=body, headers=headers).status_code == 403
    with session_factory() as session:
        assert session.scalars(select(Message)).all() == []


def test_stop_by_sms_suppresses_without_a_second_confirmation(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    assert inbound(client, sms, sms_in("SM" + "3" * 32, "STOP")).status_code == 200
    make_worker().run_until_idle()
    with session_factory() as session:
        [suppression] = session.scalars(select(Suppression)).all()
        assert (suppression.channel, suppression.address, suppression.source) == (
            "sms",
            RAVI,
            "keyword",
        )
        [lead_id] = session.scalars(select(Lead.id)).all()
    # Twilio already answered STOP itself: SHVYA sends nothing, not even a confirmation.
    assert sms.sent == []
    refused = send(client, acme, str(lead_id), "one more offer")
    assert refused.status_code == 409 and refused.json()["error"] == "suppressed"
    assert sms.sent == []


# --- status callbacks ---------------------------------------------------------------------------


def test_status_callbacks_move_a_message_forward_only_and_21610_suppresses(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = new_lead(client, acme)
    message_id = send(client, acme, lead_id).json()["message_id"]
    make_worker().run_until_idle()
    [sent] = sms.sent
    assert sent.status_callback is not None

    def status(state: str, **extra: str) -> int:
        params = {"MessageSid": sent.sid, "MessageStatus": state, "To": RAVI, **extra}
        body, headers = sms.signed_form(sent.status_callback or "", params)
        path = sent.status_callback.removeprefix(PUBLIC_URL) if sent.status_callback else ""
        return client.post(path, content=body, headers=headers).status_code

    assert status("delivered") == 200
    assert message(session_factory, message_id).status == "delivered"
    assert status("sent") == 200  # late: changes nothing
    assert status("delivered") == 200  # a redelivery: changes nothing
    assert message(session_factory, message_id).status == "delivered"

    # A wrongly signed callback is refused.
    params = {"MessageSid": sent.sid, "MessageStatus": "failed", "To": RAVI}
    body, headers = sms.signed_form(sent.status_callback, params, token="wrongtoken0123456789")
    path = sent.status_callback.removeprefix(PUBLIC_URL)
    assert client.post(path, content=body, headers=headers).status_code == 403
    assert message(session_factory, message_id).status == "delivered"

    second = send(client, acme, lead_id, "second").json()["message_id"]
    make_worker().run_until_idle()
    later = sms.sent[-1]
    params = {
        "MessageSid": later.sid,
        "MessageStatus": "undelivered",
        "ErrorCode": "21610",
        "To": RAVI,
    }
    body, headers = sms.signed_form(later.status_callback or "", params)
    assert client.post(path, content=body, headers=headers).status_code == 200
    assert message(session_factory, second).status == "failed"
    with session_factory() as session:
        [suppression] = session.scalars(select(Suppression)).all()
        assert (suppression.address, suppression.source) == (RAVI, "provider")


# --- tenants ------------------------------------------------------------------------------------


def test_each_company_gets_its_own_numbers_messages_and_callbacks(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    # Acme's number cannot be claimed by Globex.
    taken = connect(client, globex, verify=False)
    assert taken.status_code == 409
    assert (
        connect(
            client, globex, sid=GLOBEX_SID, token=GLOBEX_TOKEN, number=GLOBEX_NUMBER, verify=False
        ).status_code
        == 201
    )
    # An SMS to Globex's number signed with Acme's token is refused; with Globex's it is
    # Globex's lead, not Acme's.
    params = sms_in("SM" + "4" * 32, "hi globex", to=GLOBEX_NUMBER)
    assert inbound(client, sms, params).status_code == 403
    assert inbound(client, sms, params, token=GLOBEX_TOKEN).status_code == 200
    assert client.get("/leads", headers=acme.admin).json()["items"] == []
    assert len(client.get("/leads", headers=globex.admin).json()["items"]) == 1

    # Acme's message cannot be moved by a callback to Globex's account.
    lead_id = new_lead(client, acme)
    message_id = send(client, acme, lead_id).json()["message_id"]
    make_worker().run_until_idle()
    sent = sms.sent[-1]
    with session_factory() as session:
        globex_account = session.scalars(
            select(Message.channel_account_id).where(Message.channel_account_id.is_not(None))
        ).first()
        assert globex_account is not None
    from shvya.tenancy.models import ChannelAccount

    with session_factory() as session:
        globex_id = session.scalars(
            select(ChannelAccount.id).where(ChannelAccount.external_id == GLOBEX_NUMBER)
        ).one()
    url = f"{PUBLIC_URL}/webhooks/twilio/status/{globex_id}"
    params = {"MessageSid": sent.sid, "MessageStatus": "delivered", "To": RAVI}
    body, headers = sms.signed_form(url, params, token=GLOBEX_TOKEN)
    assert (
        client.post(url.removeprefix(PUBLIC_URL), content=body, headers=headers).status_code == 200
    )
    assert message(session_factory, message_id).status == "sent"
    # Globex cannot send from Acme's lead.
    assert send(client, globex, lead_id).status_code == 404


# --- quiet hours on SMS -------------------------------------------------------------------------


def test_an_sms_to_a_new_yorker_waits_for_their_morning_while_one_to_kolkata_goes(
    client: TestClient,
    acme: Tenant,
    sms: FakeTwilio,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    # 10:00 UTC on 26 November: 15:30 in Kolkata, 05:00 in New York.
    kolkata = new_lead(client, acme, RAVI)
    new_york = new_lead(client, acme, "+12125550123")
    assert send(client, acme, kolkata, "for Kolkata").status_code == 202
    waiting = send(client, acme, new_york, "for New York")
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["verdict"]["decision"] == "wait"
    assert "quiet_hours" in waiting.json()["verdict"]["reason"]
    assert "America/New_York" in waiting.json()["verdict"]["reason"]
    make_worker().run_until_idle()
    assert [s.body for s in sms.sent] == ["for Kolkata"]
    with session_factory() as session:
        job = session.scalars(
            select(Job).where(Job.lead_id == uuid.UUID(new_york), Job.type == "agent.reply")
        ).one()
        # 08:00 EST is 13:00 UTC.
        assert job.run_at.replace(tzinfo=None).isoformat() == "2026-11-26T13:00:00"
    clock.advance(hours=3)
    make_worker().run_until_idle()
    assert [s.body for s in sms.sent] == ["for Kolkata", "for New York"]
