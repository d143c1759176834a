"""A person's reply to a lead (POST /leads/{id}/messages): asked of the router first, sent by an
agent.reply job through the same router and send-once protocol as the AI's replies, named
after the person whose key sent it, and the AI kept quiet for that lead afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message
from shvya.crm.models import Lead
from shvya.db.base import Base
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.jobs.service import reap_expired_leases
from tests.channels.test_sending import REPO
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant, post_inbound

WA_ID = "16315551181"
VISITOR = "+14155550123"


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    """Rows of what a refused request must not write."""
    tables: list[type[Base]] = [Message, Job, Event]
    with factory() as session:
        return {
            t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
            for t in tables
        }


def only_lead_id(factory: sessionmaker[Session]) -> uuid.UUID:
    with factory() as session:
        [lead_id] = session.scalars(select(Lead.id)).all()
        return lead_id


def message_row(factory: sessionmaker[Session], message_id: str) -> Message:
    with factory() as session:
        return session.get_one(Message, uuid.UUID(message_id))


def events_of(factory: sessionmaker[Session], *types: str) -> list[Event]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event).where(Event.type.in_(types)).order_by(Event.created_at, Event.id)
            )
        )


def user_key(
    client: TestClient, tenant: Tenant, *, email: str, role: str = "agent"
) -> tuple[str, dict[str, str]]:
    """A person of the tenant (POST /users) and a key of theirs (POST /api-keys user_id)."""
    user = client.post(
        "/users", json={"email": email, "name": "Priya Shah", "role": role}, headers=tenant.admin
    )
    assert user.status_code == 201, user.text
    key = client.post("/api-keys", json={"user_id": user.json()["id"]}, headers=tenant.admin)
    assert key.status_code == 201, key.text
    assert (key.json()["role"], key.json()["user_id"]) == (role, user.json()["id"])
    return user.json()["id"], {"Authorization": f"Bearer {key.json()['key']}"}


def reply(client: TestClient, lead_id: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post(f"/leads/{lead_id}/messages", json=body, headers=headers)


# --- the sandbox, end to end --------------------------------------------------------------------


def test_a_persons_reply_is_sent_by_the_worker_in_their_name_and_the_ai_stays_quiet(
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    first = post_inbound(
        client, acme, channel="sandbox", phone=VISITOR, text="Can I talk to someone?"
    )
    lead_id = first.json()["lead_id"]
    user_id, priya = user_key(client, acme, email="Priya@Acme.example")

    answer = reply(client, lead_id, priya, text="Hi, Priya here from Acme. How can I help?")

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["verdict"] == {
        "decision": "send_now",
        "until": None,
        "reason": None,
        "detail": "sends now",
    }
    assert (body["channel"], body["status"]) == ("sandbox", "queued")
    # The conversation shows it at once, queued, with the id the 202 gave.
    conversation = client.get(f"/leads/{lead_id}/messages", headers=acme.agent).json()["items"]
    assert [(m["id"], m["status"]) for m in conversation if m["direction"] == "out"] == [
        (body["message_id"], "queued")
    ]
    assert client.get(f"/leads/{lead_id}", headers=acme.agent).json()["ai_paused"] is True

    make_worker().run_until_idle()

    message = message_row(session_factory, body["message_id"])
    assert (message.status, message.text) == ("sent", "Hi, Priya here from Acme. How can I help?")
    assert message.external_id is not None and message.external_id.startswith("sandbox.")
    assert message.meta["actor"] == f"user:{user_id}"
    with session_factory() as session:
        job = session.get_one(Job, uuid.UUID(body["job_id"]))
        assert (job.type, job.status, job.priority) == ("agent.reply", "completed", 100)
        # The lead's first message got no AI answer: the person took over before the worker ran.
        outbound = session.scalars(select(Message.id).where(Message.direction == "out")).all()
        assert [str(m) for m in outbound] == [body["message_id"]]
    named = {
        e.type: e.actor
        for e in events_of(
            session_factory, "OutboundMessageQueued", "OutboundMessageSent", "AIPaused"
        )
    }
    assert named == {
        "OutboundMessageQueued": f"user:{user_id}",
        "OutboundMessageSent": f"user:{user_id}",
        "AIPaused": f"user:{user_id}",
    }
    [paused] = events_of(session_factory, "AIPaused")
    assert paused.data["reason"] == "agent_replied"

    # The lead answers: the AI stays quiet until someone resumes it.
    clock.advance(minutes=1)
    later = post_inbound(
        client, acme, channel="sandbox", phone=VISITOR, text="What does Premium cost?"
    )
    assert later.status_code == 201 and later.json()["job_id"] is None
    make_worker().run_until_idle()
    conversation = client.get(f"/leads/{lead_id}/messages", headers=acme.agent).json()["items"]
    assert [m["direction"] for m in conversation] == ["in", "out", "in"]


def test_a_key_without_a_user_still_sends_and_is_named_by_itself(
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = post_inbound(client, acme, channel="sandbox", phone=VISITOR).json()["lead_id"]
    me = client.get("/me", headers=acme.agent).json()
    answer = reply(client, lead_id, acme.agent, text="Someone from sales here.")
    assert answer.status_code == 202, answer.text
    make_worker().run_until_idle()
    message = message_row(session_factory, answer.json()["message_id"])
    assert (message.status, message.meta["actor"]) == ("sent", f"api_key:{me['key_id']}")


# --- WhatsApp Cloud ---------------------------------------------------------------------------


def test_text_inside_the_window_reaches_whatsapp(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "I want to speak to a person", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    clock.advance(minutes=5)
    answer = reply(client, lead_id, acme.agent, text="Hello, this is Sam from Acme.")
    assert answer.status_code == 202, answer.text
    assert answer.json()["channel"] == "wa_cloud"
    make_worker().run_until_idle()

    [sent] = whatsapp.sent_messages
    assert (sent.to, sent.type, sent.body["text"]["body"]) == (
        WA_ID,
        "text",
        "Hello, this is Sam from Acme.",
    )
    message = message_row(session_factory, answer.json()["message_id"])
    assert (message.status, message.external_id) == ("sent", sent.wamid)


def test_text_outside_the_window_is_refused_and_nothing_is_written(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    clock.advance(hours=25)
    before = counts(session_factory)

    answer = reply(client, lead_id, acme.agent, text="Sorry for the wait!")

    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "outside_24h_window"
    assert "send an approved template" in answer.json()["detail"]
    assert counts(session_factory) == before
    assert client.get(f"/leads/{lead_id}", headers=acme.agent).json()["ai_paused"] is False
    assert whatsapp.sent_messages == []


def sync_templates(
    client: TestClient, tenant: Tenant, make_worker: Callable[..., EmbeddedWorker]
) -> None:
    assert client.post("/templates/sync", headers=tenant.admin).status_code == 202
    make_worker().run_until_idle()


def test_a_template_outside_the_window_goes_with_its_parameters(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.add_template("order_update", "en_US", "UTILITY", body_params=2)
    sync_templates(client, acme, make_worker)
    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    clock.advance(hours=30)

    answer = reply(
        client,
        lead_id,
        acme.agent,
        template={"name": "order_update", "language": "en_US", "body_params": ["Ravi", "Premium"]},
    )

    assert answer.status_code == 202, answer.text
    assert answer.json()["verdict"]["decision"] == "send_now"
    make_worker().run_until_idle()
    [sent] = whatsapp.sent_messages
    assert sent.template == ("order_update", "en_US")
    template = sent.body["template"]
    assert template["language"]["code"] == "en_US"
    [component] = template["components"]
    assert component["type"] == "body"
    assert [p["text"] for p in component["parameters"]] == ["Ravi", "Premium"]
    message = message_row(session_factory, answer.json()["message_id"])
    assert message.status == "sent" and message.template_id is not None


def test_a_template_not_approved_or_with_wrong_parameters_is_a_422_and_nothing_is_written(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.add_template("order_update", "en_US", "UTILITY", body_params=2)
    whatsapp.add_template("new_offer", "en_US", "MARKETING", status="PENDING", body_params=0)
    sync_templates(client, acme, make_worker)
    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    clock.advance(hours=30)
    before = counts(session_factory)

    pending = reply(
        client, lead_id, acme.agent, template={"name": "new_offer", "language": "en_US"}
    )
    short = reply(
        client,
        lead_id,
        acme.agent,
        template={"name": "order_update", "language": "en_US", "body_params": ["Ravi"]},
    )

    for answer, said in ((pending, "not approved"), (short, "2 body parameter(s), 1 given")):
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "template_not_sendable"
        assert said in answer.json()["detail"]
    assert counts(session_factory) == before


def test_a_marketing_template_to_a_lead_who_stopped_marketing_is_refused(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.add_template("new_offer", "en_US", "MARKETING", body_params=0)
    sync_templates(client, acme, make_worker)
    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    assert whatsapp.deliver_user_preference(WA_ID, "stop").status_code == 200
    lead_id = only_lead_id(session_factory)
    before = counts(session_factory)

    answer = reply(client, lead_id, acme.agent, template={"name": "new_offer", "language": "en_US"})

    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "no_marketing_consent"
    assert "only free-form text or a template that is not MARKETING" in answer.json()["detail"]
    assert counts(session_factory) == before
    # A service reply inside the window still goes.
    assert reply(client, lead_id, acme.agent, text="Happy to help.").status_code == 202


def test_media_by_link_reaches_whatsapp_with_its_caption(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    whatsapp.deliver_inbound(WA_ID, "can you send the brochure?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    answer = reply(
        client,
        lead_id,
        acme.agent,
        media={
            "kind": "document",
            "link": "https://acme.example/brochure.pdf",
            "caption": "Our brochure",
            "filename": "brochure.pdf",
        },
    )
    assert answer.status_code == 202, answer.text
    make_worker().run_until_idle()
    [sent] = whatsapp.sent_messages
    assert sent.type == "document"
    assert sent.body["document"] == {
        "link": "https://acme.example/brochure.pdf",
        "caption": "Our brochure",
        "filename": "brochure.pdf",
    }
    assert message_row(session_factory, answer.json()["message_id"]).text == "Our brochure"


def test_a_reply_too_soon_after_the_last_waits_for_the_pacing_and_says_until_when(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    first = reply(client, lead_id, acme.agent, text="Hi! One moment.")
    assert first.json()["verdict"]["decision"] == "send_now"
    make_worker().run_until_idle()
    sent_at = clock.now()
    clock.advance(seconds=2)

    second = reply(client, lead_id, acme.agent, text="Here is what I found.")

    assert second.status_code == 202, second.text
    verdict = second.json()["verdict"]
    until = sent_at + timedelta(seconds=15)
    assert verdict["decision"] == "wait"
    assert verdict["until"] == until.isoformat().replace("+00:00", "Z")
    assert verdict["reason"] == "at most one message per 15 s"
    assert verdict["detail"].startswith("will wait until ")
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # not before its time
    clock.advance(seconds=13)
    make_worker().run_until_idle()
    assert [m.body["text"]["body"] for m in whatsapp.sent_messages] == [
        "Hi! One moment.",
        "Here is what I found.",
    ]
    # The pacing counts from when the waiting message went, not from when it was asked for.
    went_at = clock.now()
    clock.advance(seconds=1)
    third = reply(client, lead_id, acme.agent, text="Anything else?").json()["verdict"]
    assert third["until"] == (went_at + timedelta(seconds=15)).isoformat().replace("+00:00", "Z")


def test_an_opted_out_lead_is_refused_and_nothing_is_written(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    whatsapp.deliver_inbound(WA_ID, "STOP", wamid="wamid.IN1")
    make_worker().run_until_idle()  # the opt-out's confirmation
    lead_id = only_lead_id(session_factory)
    before = counts(session_factory)
    sent_before = len(whatsapp.sent_messages)

    answer = reply(client, lead_id, acme.agent, text="Are you sure?")

    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "suppressed"
    assert "opted out" in answer.json()["detail"]
    assert counts(session_factory) == before
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == sent_before


def test_a_job_run_again_never_sends_twice(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    answer = reply(client, lead_id, acme.agent, text="Hello from Acme.").json()
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1

    def run_job_again() -> None:
        with session_factory() as session:
            session.execute(
                update(Job)
                .where(Job.id == uuid.UUID(answer["job_id"]))
                .values(status="queued", run_at=clock.now(), attempts=0)
            )
            session.commit()
        clock.advance(minutes=1)
        make_worker().run_until_idle()

    run_job_again()  # a redelivered job: the message was sent
    assert len(whatsapp.sent_messages) == 1
    assert message_row(session_factory, answer["message_id"]).status == "sent"


def test_a_crash_after_meta_accepted_a_persons_message_never_sends_it_again(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    database_url: str,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    answer = reply(client, lead_id, acme.agent, text="Hello from Acme.").json()
    with session_factory() as session:  # the lead's own ai.engage job is not this test's
        session.execute(update(Job).where(Job.type == "ai.engage").values(status="completed"))
        session.commit()
    # A real worker process dies (os._exit, like kill -9) right after Meta answered 200 and
    # before anything of it was committed (docs/reliability.md F2).
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.channels.send_once"],
        cwd=REPO,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "META_GRAPH_BASE_URL": whatsapp.base_url,
            "SHVYA_CRASH_AT": "channels.after_provider_accepted",
            "SHVYA_TEST_NOW": clock.now().isoformat(),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 137, crashed.stderr
    assert len(whatsapp.sent_messages) == 1
    assert message_row(session_factory, answer["message_id"]).status == "sending"

    clock.advance(minutes=5)  # the lease runs out; another worker takes the job up again
    with session_factory() as session:
        reap_expired_leases(session, now=clock.now())
        session.commit()
    clock.advance(minutes=1)
    make_worker().run_until_idle()

    assert len(whatsapp.sent_messages) == 1  # never a second message to the lead
    assert message_row(session_factory, answer["message_id"]).status == "unknown"
    [unknown] = events_of(session_factory, "OutboundMessageUnknown")
    assert unknown.data["message_id"] == answer["message_id"]


def test_a_refusal_at_send_time_fails_the_job_and_the_message_with_the_reason(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.IN1")
    lead_id = only_lead_id(session_factory)
    clock.advance(hours=23, minutes=59)
    answer = reply(client, lead_id, acme.agent, text="Still there?").json()
    clock.advance(minutes=2)  # the window closed before the worker came to it

    make_worker().run_until_idle()

    assert whatsapp.sent_messages == []
    message = message_row(session_factory, answer["message_id"])
    assert message.status == "failed"
    assert message.error is not None and message.error.startswith("outside_24h_window")
    with session_factory() as session:
        job = session.get_one(Job, uuid.UUID(answer["job_id"]))
        assert job.status == "failed"
    [refused] = events_of(session_factory, "SendRefused")
    assert refused.data["reason"] == "outside_24h_window"
    assert refused.actor.startswith("api_key:")


# --- who may, and bad bodies --------------------------------------------------------------------


def test_every_role_may_reply_and_another_companys_lead_is_not_found(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = post_inbound(client, acme, channel="sandbox", phone=VISITOR).json()["lead_id"]
    _, supervisor = user_key(client, acme, email="sup@acme.example", role="supervisor")
    for headers in (acme.agent, supervisor, acme.admin):
        assert reply(client, lead_id, headers, text="Hello").status_code == 202

    before = counts(session_factory)
    for headers in (globex.agent, globex.admin):
        foreign = reply(client, lead_id, headers, text="Hello from Globex")
        assert foreign.status_code == 404, foreign.text
        assert foreign.json()["error"] == "lead_not_found"
    assert counts(session_factory) == before


def test_bad_bodies_are_a_422_naming_the_field(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    lead_id = post_inbound(client, acme, channel="sandbox", phone=VISITOR).json()["lead_id"]
    before = counts(session_factory)
    link = "https://acme.example/a.png"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "", "give exactly one of text, template or media (got none)"),
        (
            {"text": "hi", "media": {"kind": "image", "link": link}},
            "",
            "got text, media",
        ),
        ({"text": None}, "", "text cannot be null"),
        ({"text": "x" * 4097}, "text", "4096"),
        ({"text": "   "}, "text", ""),
        ({"media": {"kind": "image", "link": "ftp://acme.example/a.png"}}, "media.link", "URL"),
        ({"media": {"kind": "image", "link": "not a url"}}, "media.link", "URL"),
        ({"media": {"kind": "audio", "link": link, "caption": "x"}}, "media", "caption"),
        ({"template": {"language": "en"}}, "template.name", ""),
        ({"text": "hi", "channel": "fax"}, "channel", ""),
        ({"text": "hi", "urgent": True}, "urgent", ""),
    ]
    for body, field, said in cases:
        answer = reply(client, lead_id, acme.agent, **body)
        assert answer.status_code == 422, (body, answer.text)
        errors = answer.json()["errors"] if "errors" in answer.json() else answer.json()["detail"]
        text = str(errors)
        assert said in text, (body, text)
        if field:
            assert field in text, (body, text)
    assert counts(session_factory) == before
