"""The AI asks the channel router before it works, and writes what it learnt with its reply
(docs/architecture.md, "Ask before you work" and "Phases of a job that calls out").

A lead on a real WhatsApp Cloud number (the fake Meta server), the company's model on the
fake OpenAI or Anthropic server: every model call these tests count is a request the fake
received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.ai.models import AIUsage
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Lead
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from tests.channels.conftest import fake_meta_settings, reengage_with, set_company_settings
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.meta_graph import FakeMetaGraph
from tests.fakes.openai_api import FakeAPIServer, FakeOpenAI, RecordedRequest
from tests.support import (
    FakeClock,
    Tenant,
    add_pricing,
    choose_model,
    fake_provider_settings,
    understanding,
)

WA_ID = "919812345678"
BUDGET = "Our budget is 5 lakh. What does the premium plan cost?"


@pytest.fixture
def settings(
    database_url: str,
    fake_meta: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_meta_settings(fake_meta),
        **fake_provider_settings(fake_openai, fake_anthropic),
        ai_timeout_seconds=5.0,
    )


def use(client: TestClient, tenant: Tenant, provider: str, model: str) -> None:
    for task in ("extract", "engage"):
        choose_model(client, tenant, task, provider, model)


FIVE_LAKH = understanding(
    intent="price_inquiry", budget={"amount": 500000, "currency": "INR", "text": "5 lakh"}
)


def job_of(factory: sessionmaker[Session], job_id: str) -> Job:
    with factory() as session:
        return session.get_one(Job, uuid.UUID(job_id))


def lead_events(factory: sessionmaker[Session], type_: str) -> list[Event]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event).where(Event.type == type_).order_by(Event.created_at, Event.id)
            )
        )


def first_reply(
    client: TestClient,
    tenant: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    """The lead's first question, answered by the offline AI: the lead's last outbound is
    now, so WhatsApp's pacing (one message per 15 s) holds the next reply back."""
    add_pricing(client, tenant)
    whatsapp.deliver_inbound(WA_ID, "Hi, do you sell the premium plan?", wamid="wamid.FIRST")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1


def deliver_late(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
    text: str,
    *,
    wamid: str,
    hours_ago: int,
) -> None:
    """Meta delivers, after an outage, what the lead wrote `hours_ago`; the worker runs once
    the quiet period is over."""
    whatsapp.deliver_inbound(
        WA_ID, text, wamid=wamid, timestamp=clock.now() - timedelta(hours=hours_ago)
    )
    clock.advance(seconds=5)
    make_worker().run_until_idle()


def engage_jobs(factory: sessionmaker[Session]) -> list[Job]:
    with factory() as session:
        return list(
            session.scalars(select(Job).where(Job.type == "ai.engage").order_by(Job.created_at))
        )


def test_a_reply_that_must_wait_for_pacing_costs_no_model_call(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    first_reply(client, acme, whatsapp, make_worker, clock)
    answered_at = clock.now()
    use(client, acme, "openai", "gpt-4o-mini")
    clock.advance(seconds=1)
    delivered = whatsapp.deliver_inbound(WA_ID, BUDGET, wamid="wamid.SECOND")
    assert delivered.status_code == 200
    with session_factory() as session:
        job_id = str(
            session.scalars(
                select(Job.id).where(Job.type == "ai.engage").order_by(Job.created_at.desc())
            ).first()
        )
    clock.advance(seconds=4)  # past the quiet period, inside the pacing gap
    make_worker().run_until_idle()

    assert fake_openai.requests == []  # the router said "wait" before any model was asked
    job = job_of(session_factory, job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.run_at == answered_at + timedelta(seconds=15)
    assert job.last_error == "deferred: at most one message per 15 s"
    assert len(whatsapp.sent_messages) == 1

    fake_openai.reply_json(FIVE_LAKH)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    clock.advance(seconds=11)
    make_worker().run_until_idle()
    assert len(fake_openai.requests_to("/chat/completions")) == 2
    assert len(whatsapp.sent_messages) == 2
    job = job_of(session_factory, job_id)
    # Completed: the deferral's note was why it waited, not an error of the job.
    assert (job.status, job.attempts, job.last_error) == ("completed", 1, None)


def test_a_reply_outside_the_window_is_refused_before_any_model_call(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    use(client, acme, "openai", "gpt-4o-mini")
    deliver_late(whatsapp, make_worker, clock, BUDGET, wamid="wamid.OLD", hours_ago=25)

    assert fake_openai.requests == []
    assert whatsapp.requests_to("/messages") == []
    [job] = engage_jobs(session_factory)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "outside_24h_window" in (job.last_error or "")
    [refused] = lead_events(session_factory, "SendRefused")
    assert refused.data["reason"] == "outside_24h_window"


def test_a_pacing_deferral_after_the_draft_reuses_nothing_and_sends_once(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    first_reply(client, acme, whatsapp, make_worker, clock)
    use(client, acme, "openai", "gpt-4o-mini")
    clock.advance(seconds=20)  # past the pacing gap: the router says "send"
    whatsapp.deliver_inbound(WA_ID, BUDGET, wamid="wamid.SECOND")
    clock.advance(seconds=5)
    lead_id = lead_of(session_factory)

    def another_message_goes_out(request: RecordedRequest) -> None:
        """While the model drafts, another message reaches the lead (a follow-up, which
        answers nothing), so the reply must now wait for the pacing gap."""
        if "reply" not in str((request.json or {}).get("response_format", "")):
            return
        if len(fake_openai.requests_to("/chat/completions")) != 2:
            return
        with session_factory() as session:
            session.add(
                Message(
                    company_id=acme.company_id,
                    lead_id=lead_id,
                    channel="wa_cloud",
                    direction="out",
                    text="(a follow-up sent meanwhile)",
                    status="sent",
                    meta={"purpose": "bumpup"},
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
            session.commit()

    fake_openai.on_request = another_message_goes_out
    fake_openai.reply_json(FIVE_LAKH)
    fake_openai.reply_json(
        {"reply": "Premium is 4,999 INR a month (first draft).", "sources": [], "answered": True}
    )
    make_worker().run_until_idle()
    fake_openai.on_request = None

    assert len(fake_openai.requests_to("/chat/completions")) == 2
    assert len(whatsapp.sent_messages) == 1  # the deferred reply did not go
    assert lead_events(session_factory, "BANTUpdated") == []  # not without its reply
    with session_factory() as session:
        spent = session.scalar(
            select(func.count()).select_from(AIUsage).where(AIUsage.provider == "openai")
        )
    assert spent == 2  # the calls made are accounted for, though the send waits

    fake_openai.reply_json(FIVE_LAKH)
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    clock.advance(seconds=16)
    make_worker().run_until_idle()
    # The rerun asked again from the start: nothing of the first draft was kept or sent.
    assert len(fake_openai.requests_to("/chat/completions")) == 4
    sent = [m.body["text"]["body"] for m in whatsapp.sent_messages]
    assert len(sent) == 2
    assert sent[1] == "The premium plan costs 4,999 INR per month."
    assert "first draft" not in " ".join(sent)
    [learnt] = lead_events(session_factory, "BANTUpdated")
    assert learnt.data["fields"] == ["budget"]


def lead_of(factory: sessionmaker[Session]) -> uuid.UUID:
    with factory() as session:
        return session.scalars(select(Lead.id)).one()


def script(provider: str, fakes: dict[str, FakeAPIServer], payload: dict[str, Any]) -> None:
    fake = fakes.get(provider)
    if isinstance(fake, FakeOpenAI | FakeAnthropic):
        fake.reply_json(payload)


@pytest.mark.parametrize(
    ("provider", "model"),
    [("offline", ""), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-5")],
)
def test_what_a_refused_run_learnt_is_recorded_exactly_once(
    provider: str,
    model: str,
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Outside the window the router allows the company's re-engagement template, which
    Meta has not approved: the send is refused after the lead's words were understood. The
    budget is recorded once, with the refusal, whatever the provider."""
    set_company_settings(
        session_factory,
        acme,
        {"channels": {"reengagement_template": {"name": "we_miss_you", "language": "en"}}},
    )
    if provider != "offline":
        use(client, acme, provider, model)
    script(provider, {"openai": fake_openai, "anthropic": fake_anthropic}, FIVE_LAKH)
    deliver_late(
        whatsapp, make_worker, clock, "Our budget is 5 lakh.", wamid="wamid.OLD", hours_ago=30
    )
    clock.advance(minutes=10)
    make_worker().run_until_idle()  # nothing is left to retry

    assert whatsapp.sent_messages == []
    [job] = engage_jobs(session_factory)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "template_not_sendable" in (job.last_error or "")
    [refused] = lead_events(session_factory, "SendRefused")
    assert refused.data["reason"] == "template_not_sendable"
    [learnt] = lead_events(session_factory, "BANTUpdated")
    assert learnt.data["fields"] == ["budget"]
    with session_factory() as session:
        lead = session.scalars(select(Lead)).one()
    assert lead.attributes["bant"]["budget"]["amount"] == 500000
    calls = {
        "offline": 0,
        "openai": len(fake_openai.requests),
        "anthropic": len(fake_anthropic.requests),
    }
    assert calls[provider] == (0 if provider == "offline" else 1)  # understood, never drafted


# --- what a run that may not reply still does ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("Please don't message me anymore", "OptedOut"),
        ("Can I talk to a real person please?", "HandoffRequested"),
    ],
)
def test_a_late_message_still_stops_the_ai_or_brings_a_person_though_no_reply_may_go(
    text: str,
    event: str,
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Meta redelivers a day-old message after an outage: the window is closed, so no reply
    may go and no model is asked, but the rules still read it."""
    use(client, acme, "openai", "gpt-4o-mini")
    deliver_late(whatsapp, make_worker, clock, text, wamid="wamid.LATE", hours_ago=25)
    assert fake_openai.requests == []
    assert whatsapp.sent_messages == []
    assert len(lead_events(session_factory, event)) == 1
    with session_factory() as session:
        lead = session.scalars(select(Lead)).one()
    if event == "HandoffRequested":
        assert lead.ai_paused  # a person has the conversation, though the lead was not told
        [refused] = lead_events(session_factory, "SendRefused")
        assert refused.data["reason"] == "outside_24h_window"


def test_an_edit_made_while_the_model_reads_an_opt_out_is_kept(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    use(client, acme, "openai", "gpt-4o-mini")
    whatsapp.deliver_inbound(WA_ID, "I'm not interested, please stop writing", wamid="wamid.S")
    lead_id = lead_of(session_factory)

    def a_person_edits_the_lead(request: RecordedRequest) -> None:
        patched = client.patch(
            f"/leads/{lead_id}", json={"attributes": {"city": "Pune"}}, headers=acme.agent
        )
        assert patched.status_code == 200, patched.text

    fake_openai.on_request = a_person_edits_the_lead
    fake_openai.reply_json(understanding(intent="not_interested", opt_out=True))
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    fake_openai.on_request = None
    with session_factory() as session:
        lead = session.get_one(Lead, lead_id)
    assert lead.attributes["city"] == "Pune"
    assert lead.attributes["language"] == "en"
    assert len(lead_events(session_factory, "OptedOut")) == 1


def test_a_handoff_message_that_failed_for_a_while_still_reaches_the_lead(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    # Meta is down for the typing indicator and the handoff message: both answer 131000.
    whatsapp.fail_next(2, code=131000, path_contains="messages")
    whatsapp.deliver_inbound(WA_ID, "Can I talk to a real person please?", wamid="wamid.H")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    assert whatsapp.sent_messages == []
    with session_factory() as session:
        assert session.scalars(select(Lead.ai_paused)).one() is True
    clock.advance(seconds=30)  # the queue's backoff
    make_worker().run_until_idle()
    [sent] = whatsapp.sent_messages
    assert "team" in sent.body["text"]["body"]
    [job] = engage_jobs(session_factory)
    assert (job.status, job.result["outcome"] if job.result else None) == (
        "completed",
        "handed_off",
    )


def test_a_retried_reply_shows_what_was_sent_the_second_time(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    add_pricing(client, acme)
    use(client, acme, "openai", "gpt-4o-mini")
    for draft in ("Premium is 4,999 INR a month.", "The premium plan costs 4,999 INR per month."):
        fake_openai.reply_json(understanding(intent="price_inquiry"))
        fake_openai.reply_json({"reply": draft, "sources": [], "answered": True})
    whatsapp.fail_next(1, code=131000, path_contains="messages", details="after typing")
    whatsapp.fail_next(1, code=131000, path_contains="messages")
    whatsapp.deliver_inbound(WA_ID, "What does the premium plan cost?", wamid="wamid.R")
    clock.advance(seconds=5)
    make_worker().run_until_idle()
    clock.advance(seconds=30)
    make_worker().run_until_idle()
    sent = [m.body["text"]["body"] for m in whatsapp.sent_messages]
    assert sent == ["The premium plan costs 4,999 INR per month."]
    with session_factory() as session:
        [row] = session.scalars(select(Message).where(Message.direction == "out")).all()
    assert (row.status, row.text, row.error) == (
        "sent",
        "The premium plan costs 4,999 INR per month.",
        None,
    )


def test_a_bump_up_outside_the_window_is_the_template_with_no_model_call(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    fake_openai: FakeOpenAI,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    reengage_with(client, acme, whatsapp, session_factory, make_worker())
    first_reply(client, acme, whatsapp, make_worker, clock)
    choose_model(client, acme, "bumpup", "openai", "gpt-4o-mini")
    clock.advance(hours=30)
    lead_id = lead_of(session_factory)
    asked = client.post(f"/leads/{lead_id}/bumpup", headers=acme.agent)
    assert asked.status_code == 202, asked.text
    make_worker().run_until_idle()
    assert fake_openai.requests == []
    assert [m.type for m in whatsapp.sent_messages] == ["text", "template"]
    assert whatsapp.sent_messages[1].template == ("we_miss_you", "en_US")
