"""A lead's email reply in: SendGrid Inbound Parse (parsed and raw) and the JSON form, threaded
to its lead, quotes stripped, the lead put before a person and the AI's answer only suggested
unless the company lets it send email (docs/email-inbound.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels.email_inbound import strip_reply
from shvya.channels.service import close_email_transports
from shvya.config import Settings
from shvya.conversations.models import Direction, Message
from shvya.crm.models import Channel, Lead, LeadContact
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.tenancy.models import ChannelAccount
from tests.fakes.smtp_sink import SmtpSink
from tests.support import FakeClock, Tenant, add_pricing

TOKEN = "inbound-token-5f1c2a"
URL = f"/webhooks/email/inbound/{TOKEN}"
ACME = "sales@acme.test"
GLOBEX = "hello@globex.test"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        email_inbound_token=TOKEN,
        max_inbound_email_bytes=64 * 1024,
    )


def add_email_account(factory: sessionmaker[Session], tenant: Tenant, address: str) -> None:
    with factory() as session:
        session.add(
            ChannelAccount(
                company_id=tenant.company_id,
                channel=Channel.email.value,
                external_id=address,
                config={"provider": "smtp"},
            )
        )
        session.commit()


@pytest.fixture
def mailboxes(session_factory: sessionmaker[Session], acme: Tenant, globex: Tenant) -> None:
    add_email_account(session_factory, acme, ACME)
    add_email_account(session_factory, globex, GLOBEX)


def add_outbound(
    factory: sessionmaker[Session], tenant: Tenant, address: str, email_message_id: str
) -> uuid.UUID:
    """A lead we emailed (as part A's sends store them): its contact and our message."""
    with factory() as session:
        lead = Lead(
            company_id=tenant.company_id,
            pipeline_id=_pipeline(session, tenant),
            stage_id=_stage(session, tenant),
            name="Priya",
            attributes={},
        )
        session.add(lead)
        session.flush()
        contact = LeadContact(
            company_id=tenant.company_id, lead_id=lead.id, channel="email", value=address
        )
        session.add(contact)
        session.flush()
        session.add(
            Message(
                company_id=tenant.company_id,
                lead_id=lead.id,
                contact_id=contact.id,
                channel="email",
                direction=Direction.outbound.value,
                text="Would a demo on Thursday suit you?",
                status="sent",
                meta={},
                email_message_id=email_message_id,
            )
        )
        session.commit()
        return lead.id


def _pipeline(session: Session, tenant: Tenant) -> uuid.UUID:
    from datetime import UTC, datetime

    from shvya.crm import service as crm

    return crm.get_entry_stage(
        session, company_id=tenant.company_id, now=datetime.now(UTC)
    ).pipeline_id


def _stage(session: Session, tenant: Tenant) -> uuid.UUID:
    from datetime import UTC, datetime

    from shvya.crm import service as crm

    return crm.get_entry_stage(session, company_id=tenant.company_id, now=datetime.now(UTC)).id


HEADERS = (
    "Received: by mx0047p1mdw1.sendgrid.net with SMTP id 6WCVv7KAWn Wed, 02 Dec 2026 10:00:00 "
    "+0000 (UTC)\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gmail.com; s=20230601;\r\n"
    "\th=to:subject:message-id:date:from:in-reply-to:references:mime-version; bh=abc=;\r\n"
    "MIME-Version: 1.0\r\n"
    "References: <first@acme.test> <{parent}>\r\n"
    "In-Reply-To: <{parent}>\r\n"
    "From: Priya Sharma <{sender}>\r\n"
    "Date: Wed, 2 Dec 2026 15:29:00 +0530\r\n"
    "Message-ID: <{message_id}>\r\n"
    "Subject: Re: Your demo\r\n"
    "To: Acme Sales <{to}>\r\n"
    'Content-Type: multipart/alternative; boundary="000000000000abc"\r\n'
)


def inbound_parse(
    *,
    sender: str = "priya@example.in",
    to: str = ACME,
    message_id: str = "CAF=reply1@mail.gmail.com",
    parent: str = "unknown@acme.test",
    text: str = "Yes, Thursday works.\n\nOn Tue, 1 Dec 2026 at 10:00, Acme <sales@acme.test> "
    "wrote:\n> Would a demo on Thursday suit you?\n",
) -> dict[str, str]:
    """The parsed fields Inbound Parse posts (multipart/form-data)."""
    return {
        "headers": HEADERS.format(parent=parent, sender=sender, message_id=message_id, to=to),
        "dkim": "{@gmail.com : pass}",
        "to": f"Acme Sales <{to}>",
        "from": f"Priya Sharma <{sender}>",
        "subject": "Re: Your demo",
        "text": text,
        "html": f"<div>{text}</div>",
        "envelope": json.dumps({"to": [to], "from": sender}),
        "charsets": json.dumps({"to": "UTF-8", "subject": "UTF-8", "text": "UTF-8"}),
        "SPF": "pass",
        "attachments": "0",
    }


def post_form(client: TestClient, fields: dict[str, str]) -> Any:
    # files= makes it multipart/form-data, as SendGrid posts it.
    return client.post(URL, data=fields, files={"attachment-info": (None, "{}")})


def messages(factory: sessionmaker[Session], tenant: Tenant) -> list[Message]:
    with factory() as session:
        return list(
            session.scalars(
                select(Message)
                .where(Message.company_id == tenant.company_id)
                .order_by(Message.created_at, Message.id)
            )
        )


@pytest.mark.usefixtures("mailboxes")
def test_an_inbound_parse_reply_threads_to_the_lead_we_emailed_even_from_another_address(
    client: TestClient, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    lead_id = add_outbound(session_factory, acme, "priya@corp.example", "out1@acme.test")
    answer = post_form(client, inbound_parse(sender="priya@example.in", parent="out1@acme.test"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "received"
    assert answer.json()["lead_id"] == str(lead_id)

    inbound = [m for m in messages(session_factory, acme) if m.direction == "in"]
    [reply] = inbound
    assert reply.channel == "email"
    assert reply.text == "Yes, Thursday works."  # the quoted history is not what the AI reads
    assert "Would a demo" in reply.meta["raw_text"]  # the raw message is kept
    assert reply.email_message_id == "CAF=reply1@mail.gmail.com"
    assert reply.meta["subject"] == "Re: Your demo"

    # Redelivered (SendGrid retries what was not answered 2xx in time): stored once.
    again = post_form(client, inbound_parse(sender="priya@example.in", parent="out1@acme.test"))
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert len([m for m in messages(session_factory, acme) if m.direction == "in"]) == 1

    # The lead waits for a person: GET /leads?needs_person=true lists it with email_reply.
    listed = client.get("/leads", params={"needs_person": "true"}, headers=acme.agent)
    assert listed.status_code == 200, listed.text
    [lead] = listed.json()["items"]
    assert lead["id"] == str(lead_id)
    with session_factory() as session:
        assert session.get_one(Lead, lead_id).ai_paused_reason == "email_reply"


@pytest.mark.usefixtures("mailboxes")
def test_the_raw_mime_variant_and_the_json_form_thread_by_sender_or_make_a_new_lead(
    client: TestClient, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    lead_id = add_outbound(session_factory, acme, "ravi@example.in", "out2@acme.test")
    raw = (
        "From: Ravi <Ravi@Example.in>\r\nTo: sales@acme.test\r\nSubject: Question\r\n"
        "Message-ID: <raw1@example.in>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Do you have a Hindi interface?\r\n\r\n-- \r\nRavi Kumar\r\nCEO, Example\r\n"
    )
    answer = client.post(
        URL,
        data={"email": raw, "envelope": json.dumps({"to": [ACME], "from": "ravi@example.in"})},
        files={"attachment-info": (None, "{}")},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["lead_id"] == str(lead_id)  # no thread headers: found by the sender

    fresh = client.post(
        URL,
        json={
            "from": "Meera <meera@example.org>",
            "to": ACME,
            "subject": "Pricing",
            "text": "What does the premium plan cost?",
            "message_id": "<json1@example.org>",
        },
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["status"] == "received"
    assert fresh.json()["lead_id"] != str(lead_id)
    inbound = {m.email_message_id: m for m in messages(session_factory, acme)}
    assert inbound["raw1@example.in"].text == "Do you have a Hindi interface?"
    assert inbound["json1@example.org"].text == "What does the premium plan cost?"


def test_the_token_is_required_and_checked(client: TestClient) -> None:
    missing = client.post("/webhooks/email/inbound", json={})
    assert missing.status_code == 403
    assert "SHVYA_EMAIL_INBOUND_TOKEN" in missing.json()["detail"]
    wrong = client.post("/webhooks/email/inbound/not-the-token", json={"from": "a@b.c"})
    assert wrong.status_code == 403


def test_an_oversized_email_is_refused_with_the_limit(client: TestClient) -> None:
    answer = client.post(URL, data={"email": "x" * (70 * 1024)}, files={"a": (None, "{}")})
    assert answer.status_code == 413
    assert str(64 * 1024) in answer.json()["detail"]


@pytest.mark.usefixtures("mailboxes")
def test_mail_to_an_address_no_company_owns_is_accepted_and_recorded_nowhere(
    client: TestClient, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    answer = post_form(client, inbound_parse(to="nobody@elsewhere.test"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert messages(session_factory, acme) == []


@pytest.mark.usefixtures("mailboxes")
def test_company_b_mail_never_threads_into_company_a_lead(
    client: TestClient, session_factory: sessionmaker[Session], acme: Tenant, globex: Tenant
) -> None:
    acme_lead = add_outbound(session_factory, acme, "priya@example.in", "out3@acme.test")
    # Sent to Globex's address, quoting Acme's Message-ID and from Acme's lead's address.
    answer = post_form(
        client, inbound_parse(to=GLOBEX, parent="out3@acme.test", message_id="b1@example.in")
    )
    assert answer.status_code == 200
    assert answer.json()["lead_id"] != str(acme_lead)
    assert [m.direction for m in messages(session_factory, acme)] == ["out"]
    [theirs] = messages(session_factory, globex)
    assert theirs.email_message_id == "b1@example.in"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Sounds good.\n\nOn Mon, Dec 1, 2026 at 10:00 AM Acme <sales@acme.test> wrote:\n"
            "> Hello\n> Want a demo?\n",
            "Sounds good.",
        ),
        (
            "Sí, me interesa.\n\nEl lun, 1 dic 2026 a las 10:00, Acme (<sales@acme.test>) "
            "escribió:\n> ¿Quiere una demo?\n",
            "Sí, me interesa.",
        ),
        (
            "Haan, price bhejiye please.\n\nसोम, 1 दिस॰ 2026 को 10:00 am बजे Acme "
            "<sales@acme.test> ने लिखा:\n> Namaste\n",
            "Haan, price bhejiye please.",
        ),
        ("Thanks!\n> quoted line\n> another\n", "Thanks!"),
        ("Call me.\n\n-- \nRavi Kumar\nCEO\n", "Call me."),
        ("Great\n\n-----Original Message-----\nFrom: Acme\nSent: x\n\nold", "Great"),
    ],
)
def test_quoted_history_and_signatures_are_stripped(text: str, expected: str) -> None:
    assert strip_reply(text) == expected


def engage_job(factory: sessionmaker[Session], tenant: Tenant) -> Job:
    with factory() as session:
        [job] = session.scalars(
            select(Job).where(Job.company_id == tenant.company_id, Job.type == "ai.engage")
        )
        session.expunge(job)
        return job


@pytest.mark.usefixtures("mailboxes")
def test_the_ai_suggests_its_answer_and_sends_nothing(
    client: TestClient,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    add_pricing(client, acme)
    answer = post_form(
        client,
        inbound_parse(text="How much is the premium plan?\n\nOn Tue wrote:\n> hi\n"),
    )
    assert answer.status_code == 200, answer.text
    clock.advance(seconds=30)
    make_worker().run_until_idle()

    job = engage_job(session_factory, acme)
    assert job.result is not None
    assert job.result["outcome"] == "suggested"
    rows = messages(session_factory, acme)
    assert [m.direction for m in rows] == ["in"]  # no outbound message at all
    suggestion = rows[0].meta["suggested_reply"]
    assert "4,999 INR" in suggestion["text"]
    assert suggestion["subject"] == "Re: Your demo"
    assert suggestion["email_in_reply_to"] == "CAF=reply1@mail.gmail.com"
    with session_factory() as session:
        types = list(session.scalars(select(Event.type).where(Event.company_id == acme.company_id)))
        lead = session.get_one(Lead, uuid.UUID(answer.json()["lead_id"]))
        assert lead.ai_paused_reason == "email_reply"  # still waiting for the person
    assert "ReplySuggested" in types

    # A person resumes the AI: a later email is still only suggested, never sent.
    resumed = client.post(f"/leads/{lead.id}/ai/resume", headers=acme.agent)
    assert resumed.status_code == 200, resumed.text
    post_form(client, inbound_parse(message_id="second@mail.gmail.com", text="And the basic?"))
    clock.advance(seconds=30)
    make_worker().run_until_idle()
    assert [m.direction for m in messages(session_factory, acme)] == ["in", "in"]


@pytest.mark.usefixtures("mailboxes")
def test_with_ai_email_replies_on_the_ai_answers_in_the_thread(
    client: TestClient,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    """The company lets the AI answer email: the reply goes out through the router and the
    SMTP transport to a real server, in the lead's thread (Re: subject, In-Reply-To and
    References naming their message), grounded in the knowledge base."""
    with SmtpSink() as sink, session_factory() as session:
        account = session.scalars(
            select(ChannelAccount).where(ChannelAccount.company_id == acme.company_id)
        ).one()
        account.config = {"provider": "smtp", "host": "127.0.0.1", "port": sink.port,
                          "security": "none"}  # fmt: skip
        session.commit()
        patched = client.patch("/company", json={"ai_email_replies": True}, headers=acme.admin)
        assert patched.status_code == 200, patched.text
        assert patched.json()["ai_email_replies"] is True
        add_pricing(client, acme)
        answer = post_form(client, inbound_parse(text="How much is the premium plan?"))
        assert answer.status_code == 200, answer.text
        clock.advance(seconds=30)
        make_worker().run_until_idle()
        close_email_transports()

        job = engage_job(session_factory, acme)
        assert job.status == "completed" and job.result is not None, job.last_error
        assert job.result["outcome"] == "sent"
        lead = session.get_one(Lead, uuid.UUID(answer.json()["lead_id"]))
        session.refresh(lead)
        assert not lead.ai_paused  # the AI answers this company's email itself
        [received] = sink.to("priya@example.in")
        message = received.message
        assert message["Subject"] == "Re: Your demo"
        assert message["In-Reply-To"] == "<CAF=reply1@mail.gmail.com>"
        assert "<CAF=reply1@mail.gmail.com>" in str(message["References"])
        plain = message.get_body(("plain",))
        assert plain is not None and "4,999" in plain.get_content()


@pytest.mark.usefixtures("mailboxes")
def test_unsubscribe_in_an_email_reply_opts_the_address_out(
    client: TestClient, session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    answer = post_form(
        client,
        inbound_parse(text="Unsubscribe\n\nOn Tue, 1 Dec 2026 Acme wrote:\n> Want a demo?\n"),
    )
    assert answer.status_code == 200, answer.text
    listed = client.get("/suppressions", headers=acme.admin)
    assert listed.status_code == 200, listed.text
    assert [(s["channel"], s["address"]) for s in listed.json()["items"]] == [
        ("email", "priya@example.in")
    ]
    with session_factory() as session:
        lead = session.get_one(Lead, uuid.UUID(answer.json()["lead_id"]))
        assert lead.ai_paused_reason != "email_reply"  # a command, not a reply to answer


@pytest.mark.usefixtures("mailboxes")
def test_an_automatic_reply_is_recorded_never_answered_and_never_a_persons_to_do(
    client: TestClient,
    session_factory: sessionmaker[Session],
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    """RFC 3834: mail a program sent (Auto-Submitted other than "no", X-Autoreply, Precedence
    bulk) gets no answer, even where the AI answers email itself: two auto-responders answering
    each other never stop. It is not a person's reply to read either."""
    patched = client.patch("/company", json={"ai_email_replies": True}, headers=acme.admin)
    assert patched.status_code == 200, patched.text
    fields = inbound_parse(text="I am out of the office until Monday.")
    fields["headers"] += "Auto-Submitted: auto-replied\r\n"
    assert post_form(client, fields).status_code == 200
    bulk = inbound_parse(message_id="bulk@mail.example", sender="news@example.in", text="Hi")
    bulk["headers"] += "Precedence: bulk\r\n"
    assert post_form(client, bulk).status_code == 200
    as_json = {
        "from": "ravi@example.in",
        "to": ACME,
        "subject": "Automatic reply: Your demo",
        "text": "Away until 15 December.",
        "message_id": "<auto3@mail.example>",
        "auto_submitted": "auto-replied",
    }
    assert client.post(URL, json=as_json).status_code == 200
    # A person's mail, for contrast: answered.
    person = inbound_parse(message_id="person@mail.example", sender="asha@example.in")
    person["headers"] += "Auto-Submitted: no\r\n"
    assert post_form(client, person).status_code == 200
    clock.advance(seconds=30)
    make_worker().run_until_idle()

    rows = messages(session_factory, acme)
    automatic = [m for m in rows if m.direction == "in" and m.meta.get("auto_submitted")]
    assert sorted(m.meta["auto_submitted"] for m in automatic) == [
        "auto-submitted: auto-replied",
        "auto-submitted: auto-replied",
        "precedence: bulk",
    ]
    answered_leads = {m.lead_id for m in rows if m.direction == "out"}
    assert not answered_leads & {m.lead_id for m in automatic}
    with session_factory() as session:
        jobs = {
            str(job.payload["message_id"]): job
            for job in session.scalars(select(Job).where(Job.type == "ai.engage"))
        }
        for message in automatic:
            result = jobs[str(message.id)].result
            assert result is not None
            assert (result["outcome"], result["reason"]) == ("skipped", "auto_reply")
            assert not session.get_one(Lead, message.lead_id).ai_paused
    [person_in] = [m for m in rows if m.external_id == "person@mail.example"]
    assert "auto_submitted" not in person_in.meta
    # The person's mail went on to an answer (this mailbox has no server to send it through).
    person_job = jobs[str(person_in.id)]
    assert person_job.attempts >= 1
    assert (person_job.result or {}).get("reason") != "auto_reply"
    assert person_job.last_error is not None
