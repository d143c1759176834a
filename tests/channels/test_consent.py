"""Consent is one state, read on every send (docs/architecture.md rule 9).

A lead on a real WhatsApp Cloud number (the fake Meta server), the bump-up's model on the fake
OpenAI server: every model call these tests count is a request the fake received, every
message a lead got is one the fake accepted.

- WhatsApp's marketing preference: after a `user_preferences` "stop" no marketing goes (a
  bump-up, a template that would start a conversation, a marketing template), refused before
  any model call; replies inside the open conversation still go; "resume" brings them back.
- The opt-out confirmation: the only send that reaches a suppressed contact, once per opt-out
  however often its job runs, and never to a contact who opted in again meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.channels.policies import SendKind
from shvya.channels.schemas import OutboundContent, TemplateSend
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Channel, Suppression
from shvya.db.phases import Phases
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.jobs.runner import JobContext
from shvya.jobs.service import JobType, enqueue_job
from tests.channels.conftest import (
    fake_meta_settings,
    reengage_with,
    replying_with,
)
from tests.fakes.meta_graph import FakeMetaGraph
from tests.fakes.openai_api import FakeOpenAI
from tests.support import FakeClock, Tenant, add_pricing, choose_model, fake_provider_settings

WA_ID = "919812345678"
# 30 to 40 words, and no figure the lead did not give: a bump-up the rules accept.
BUMPUP = (
    "Hi there, just following up on the premium plan you asked about. Would a short call "
    "this week help you compare the options, or should I send a quick overview you can read "
    "when you have a moment?"
)


@pytest.fixture
def settings(database_url: str, fake_meta: FakeMetaGraph, fake_openai: FakeOpenAI) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_meta_settings(fake_meta),
        **fake_provider_settings(fake_openai),
        ai_timeout_seconds=5.0,
    )


def bumpups_by_openai(client: TestClient, tenant: Tenant) -> None:
    choose_model(client, tenant, "bumpup", "openai", "gpt-4o-mini")


def lead_id_of_client(client: TestClient, tenant: Tenant) -> uuid.UUID:
    leads = client.get("/leads", headers=tenant.agent)
    assert leads.status_code == 200, leads.text
    [lead] = leads.json()["items"]
    return uuid.UUID(lead["id"])


def lead_events(client: TestClient, tenant: Tenant, lead_id: uuid.UUID, type_: str) -> list[Any]:
    page = client.get(f"/leads/{lead_id}/events?limit=200", headers=tenant.agent)
    assert page.status_code == 200, page.text
    return [e for e in page.json()["items"] if e["type"] == type_]


def job_out(client: TestClient, tenant: Tenant, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/jobs/{job_id}", headers=tenant.agent)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ask_bumpup(client: TestClient, tenant: Tenant, lead_id: uuid.UUID) -> str:
    asked = client.post(f"/leads/{lead_id}/bumpup", headers=tenant.agent)
    assert asked.status_code == 202, asked.text
    return str(asked.json()["job_id"])


def texts_sent(whatsapp: FakeMetaGraph) -> list[str]:
    return [m.body["text"]["body"] for m in whatsapp.sent_messages if m.type == "text"]


# --- WhatsApp's marketing preference ------------------------------------------------------------


def test_after_stop_no_bump_up_goes_but_replies_do_and_resume_brings_bump_ups_back(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    add_pricing(client, acme)
    bumpups_by_openai(client, acme)
    whatsapp.deliver_inbound(WA_ID, "Hi, do you sell the premium plan?", wamid="wamid.FIRST")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # the AI's answer (offline model)
    lead_id = lead_id_of_client(client, acme)

    assert whatsapp.deliver_user_preference(WA_ID, "stop").status_code == 200
    clock.advance(seconds=20)  # past the pacing gap: only consent can stop the bump-up
    job_id = ask_bumpup(client, acme, lead_id)
    make_worker().run_until_idle()

    assert fake_openai.requests == []  # refused before the model wrote a word
    assert len(whatsapp.sent_messages) == 1
    job = job_out(client, acme, job_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert (job["last_error"] or "").startswith("no_marketing_consent: the contact stopped")
    [refused] = lead_events(client, acme, lead_id, "SendRefused")
    assert refused["data"]["reason"] == "no_marketing_consent"

    # A question inside the open conversation is a service message: it is answered.
    whatsapp.deliver_inbound(WA_ID, "What does the premium plan cost?", wamid="wamid.SECOND")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 2
    assert whatsapp.sent_messages[1].type == "text"

    clock.advance(minutes=1)
    assert whatsapp.deliver_user_preference(WA_ID, "resume").status_code == 200
    fake_openai.reply(BUMPUP)
    job_id = ask_bumpup(client, acme, lead_id)
    make_worker().run_until_idle()
    assert job_out(client, acme, job_id)["status"] == "completed"
    assert len(fake_openai.requests_to("/chat/completions")) == 1
    assert texts_sent(whatsapp)[-1] == BUMPUP
    assert len(lead_events(client, acme, lead_id, "SendRefused")) == 1


def test_outside_the_window_a_bump_up_is_the_marketing_template_and_needs_consent(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """The template would start a conversation: to a contact who said stop it is not sent
    (and so Meta never answers 131050, which would suppress every later reply too)."""
    reengage_with(client, acme, whatsapp, session_factory, make_worker())
    add_pricing(client, acme)
    bumpups_by_openai(client, acme)
    whatsapp.deliver_inbound(WA_ID, "Hi, do you sell the premium plan?", wamid="wamid.FIRST")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1
    whatsapp.deliver_user_preference(WA_ID, "stop")
    clock.advance(hours=30)
    lead_id = lead_id_of_client(client, acme)
    job_id = ask_bumpup(client, acme, lead_id)
    make_worker().run_until_idle()

    assert fake_openai.requests == []
    assert len(whatsapp.sent_messages) == 1
    job = job_out(client, acme, job_id)
    assert job["status"] == "failed"
    assert (job["last_error"] or "").startswith("no_marketing_consent")
    [refused] = lead_events(client, acme, lead_id, "SendRefused")
    assert refused["data"]["reason"] == "no_marketing_consent"
    with session_factory() as session:
        assert session.scalars(select(Suppression)).all() == []

    # Resumed: the bump-up goes, as the template, still without a model call.
    clock.advance(minutes=1)
    whatsapp.deliver_user_preference(WA_ID, "resume")
    ask_bumpup(client, acme, lead_id)
    make_worker().run_until_idle()
    assert fake_openai.requests == []
    assert [m.template for m in whatsapp.sent_messages[1:]] == [("we_miss_you", "en_US")]


def test_a_late_message_from_a_contact_who_stopped_gets_no_template_and_no_model_call(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Meta redelivers a day-old message: the answer could only be the re-engagement
    template, marketing to a contact who said stop, so ai.engage is refused at its
    preflight, before any model is asked."""
    reengage_with(client, acme, whatsapp, session_factory, make_worker())
    for task in ("extract", "engage"):
        choose_model(client, acme, task, "openai", "gpt-4o-mini")
    whatsapp.deliver_inbound(
        WA_ID, "Do you sell the premium plan?", timestamp=clock.now() - timedelta(hours=30)
    )
    whatsapp.deliver_user_preference(WA_ID, "stop")
    clock.advance(seconds=5)
    make_worker().run_until_idle()

    assert fake_openai.requests == []
    assert whatsapp.requests_to("/messages") == []
    with session_factory() as session:
        [job] = session.scalars(select(Job).where(Job.type == "ai.engage")).all()
    assert (job.status, job.attempts) == ("failed", 1)
    assert (job.last_error or "").startswith("no_marketing_consent")
    [refused] = lead_events(client, acme, lead_id_of_client(client, acme), "SendRefused")
    assert refused["data"]["reason"] == "no_marketing_consent"


def test_inside_the_window_a_marketing_template_needs_consent_and_a_utility_one_does_not(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    """WhatsApp refuses a marketing template to a contact who said stop (131050), inside
    the window too; the router refuses it first. A utility template is not marketing."""
    whatsapp.add_template("spring_offer", "en_US", "MARKETING", body_params=0)
    whatsapp.add_template("order_update", "en_US", "UTILITY", body_params=0)
    assert client.post("/templates/sync", headers=acme.admin).status_code == 202
    make_worker().run_until_idle()
    for name in ("spring_offer", "order_update"):
        template = OutboundContent(template=TemplateSend(name=name, language="en_US"))
        clock.advance(seconds=20)
        whatsapp.deliver_inbound(WA_ID, f"send me {name}")
        whatsapp.deliver_user_preference(WA_ID, "stop")
        clock.advance(seconds=3)  # the stage's quiet period: the reply is due
        make_worker({"ai.engage": replying_with(template)}).run_until_idle()
    assert [m.template for m in whatsapp.sent_messages] == [("order_update", "en_US")]
    [refused] = lead_events(client, acme, lead_id_of_client(client, acme), "SendRefused")
    assert refused["data"]["reason"] == "no_marketing_consent"


def test_the_router_judges_the_kind_the_sender_gives(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    """send_message(kind=bumpup) is marketing and refused after a stop; the same words as
    the answer to the lead's message are a reply, and go."""
    whatsapp.deliver_inbound(WA_ID, "hi", wamid="wamid.HI")
    whatsapp.deliver_user_preference(WA_ID, "stop")
    text = OutboundContent(text="Still interested?", reengage_with_template=True)
    clock.advance(seconds=3)
    make_worker({"ai.engage": replying_with(text, SendKind.bumpup)}).run_until_idle()
    assert whatsapp.sent_messages == []
    clock.advance(seconds=20)
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.HELLO")
    clock.advance(seconds=3)
    make_worker({"ai.engage": replying_with(text)}).run_until_idle()
    assert texts_sent(whatsapp) == ["Still interested?"]
    lead_id = lead_id_of_client(client, acme)
    [refused] = lead_events(client, acme, lead_id, "SendRefused")
    assert refused["data"]["reason"] == "no_marketing_consent"


# --- the opt-out confirmation -------------------------------------------------------------------


def quiet() -> Callable[[JobContext], Phases[dict[str, Any]]]:
    """An ai.engage that answers nothing, so only the confirmation can reach the lead."""

    def nothing(ctx: JobContext) -> Phases[dict[str, Any]]:
        return {"outcome": "skipped"}
        yield  # a generator, as handlers are

    return nothing


def notice_jobs(factory: sessionmaker[Session]) -> list[Job]:
    with factory() as session:
        return list(
            session.scalars(
                select(Job)
                .where(Job.type == JobType.channel_notice.value)
                .order_by(Job.created_at, Job.id)
            )
        )


def confirmations(whatsapp: FakeMetaGraph) -> list[str]:
    return [t for t in texts_sent(whatsapp) if "unsubscribed" in t]


def test_no_content_flag_gets_a_message_past_a_suppression(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    # The flag a caller once set to skip suppression and pacing is no part of a message.
    with pytest.raises(ValidationError, match="is_opt_out_confirmation"):
        OutboundContent.model_validate({"text": "Buy now", "is_opt_out_confirmation": True})
    # Nor is the confirmation a kind any sender may claim.
    with session_factory() as session, pytest.raises(ValueError, match="send_opt_out_confirm"):
        channels.send_message(
            session,
            company_id=acme.company_id,
            lead_id=uuid.uuid4(),
            channel=Channel.wa_cloud,
            content=OutboundContent(text="Buy now"),
            kind=SendKind.opt_out_confirmation,
            send_key="sneaky",
            settings=settings,
            now=clock.now,
        )

    whatsapp.deliver_inbound(WA_ID, "STOP", wamid="wamid.STOP")
    make_worker({"ai.engage": quiet()}).run_until_idle()
    assert len(confirmations(whatsapp)) == 1
    contents = [
        OutboundContent(text="Buy now", reengage_with_template=True),
        OutboundContent(text="You're unsubscribed."),  # looks like one; is not one
        OutboundContent(template=TemplateSend(name="any", language="en_US")),
    ]
    for index, content in enumerate(contents):
        clock.advance(minutes=1)
        whatsapp.deliver_inbound(WA_ID, f"question {index}", wamid=f"wamid.Q{index}")
        clock.advance(seconds=3)
        make_worker({"ai.engage": replying_with(content)}).run_until_idle()
    assert len(whatsapp.sent_messages) == 1
    lead_id = lead_id_of_client(client, acme)
    refusals = lead_events(client, acme, lead_id, "SendRefused")
    assert [r["data"]["reason"] for r in refusals] == ["suppressed"] * 3


def test_the_confirmation_is_sent_once_however_often_its_job_runs(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "STOP", wamid="wamid.STOP")
    make_worker({"ai.engage": quiet()}).run_until_idle()
    [job] = notice_jobs(session_factory)
    assert job.status == "completed"
    assert job.result is not None and job.result["outcome"] == "sent"

    # The same job again (a completion the database lost, docs/architecture.md "Worker
    # connections"), and a second job for the same opt-out under another key.
    clock.advance(minutes=1)
    with session_factory() as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status="queued", run_at=clock.now(), attempts=0, result=None)
        )
        enqueue_job(
            session,
            JobType.channel_notice.value,
            dict(job.payload),
            company_id=acme.company_id,
            lead_id=job.lead_id,
            idempotency_key=f"another:{job.id}",
            now=clock.now(),
        )
        session.commit()
    make_worker({"ai.engage": quiet()}).run_until_idle()

    assert len(confirmations(whatsapp)) == 1
    assert len(whatsapp.sent_messages) == 1
    runs = notice_jobs(session_factory)
    assert [(j.status, (j.result or {}).get("outcome")) for j in runs] == [
        ("completed", "already_sent"),
        ("completed", "already_sent"),
    ]
    with session_factory() as session:
        sent = session.scalars(select(Message).where(Message.direction == "out")).all()
    assert [(m.send_key, m.status) for m in sent] == [
        (f"optout:{job.payload['suppression_id']}", "sent")
    ]


def test_a_contact_who_opted_in_again_before_it_went_gets_no_confirmation(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """STOP, then START before the worker got to the confirmation: telling them they are
    unsubscribed would be false, so nothing goes. A STOP after that is a new opt-out, owed
    its own confirmation."""
    whatsapp.deliver_inbound(WA_ID, "STOP", wamid="wamid.STOP")
    clock.advance(seconds=10)
    whatsapp.deliver_inbound(WA_ID, "START", wamid="wamid.START")
    make_worker({"ai.engage": quiet()}).run_until_idle()
    assert confirmations(whatsapp) == []
    [lifted] = notice_jobs(session_factory)
    assert lifted.status == "completed"
    assert lifted.result is not None
    assert (lifted.result["outcome"], lifted.result["reason"]) == ("skipped", "not_opted_out")

    clock.advance(minutes=1)
    whatsapp.deliver_inbound(WA_ID, "STOP", wamid="wamid.STOP2")
    make_worker({"ai.engage": quiet()}).run_until_idle()
    assert len(confirmations(whatsapp)) == 1
    assert [(j.result or {}).get("outcome") for j in notice_jobs(session_factory)] == [
        "skipped",
        "sent",
    ]


def test_a_confirmation_job_naming_another_companys_suppression_sends_nothing(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hi", wamid="wamid.HI")
    theirs = client.post(
        "/suppressions",
        json={"channel": "wa_cloud", "address": f"+{WA_ID}", "reason": "opt_out"},
        headers=globex.admin,
    )
    assert theirs.status_code == 201, theirs.text
    lead_id = lead_id_of_client(client, acme)
    with session_factory() as session:
        enqueue_job(
            session,
            JobType.channel_notice.value,
            {
                "lead_id": str(lead_id),
                "channel": "wa_cloud",
                "notice": "opt_out_confirmation",
                "suppression_id": theirs.json()["id"],
            },
            company_id=acme.company_id,
            lead_id=lead_id,
            now=clock.now(),
        )
        session.commit()
    make_worker({"ai.engage": quiet()}).run_until_idle()
    assert whatsapp.sent_messages == []
    [job] = notice_jobs(session_factory)
    assert (job.status, (job.result or {}).get("reason")) == ("completed", "not_opted_out")
