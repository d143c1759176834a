"""Everything that leaves SHVYA goes through the router: policies, the outbound row made
durable before the provider call, the provider's errors mapped, statuses moving forward."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.channels.schemas import (
    Interactive,
    ListRow,
    ListSection,
    Media,
    OutboundContent,
    ReplyButton,
    TemplateSend,
)
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Channel, Suppression
from shvya.db.phases import run_phases
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from tests.channels.conftest import reengage_with, replying_with
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant

WA_ID = "16315551181"
REPO = Path(__file__).resolve().parents[2]


TEXT = OutboundContent(text="The pro plan is 49 USD a month.", reengage_with_template=True)


def outbound(factory: sessionmaker[Session]) -> list[Message]:
    with factory() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        )


def jobs_of(factory: sessionmaker[Session], job_type: str) -> list[Job]:
    with factory() as session:
        return list(session.scalars(select(Job).where(Job.type == job_type).order_by(Job.id)))


def event_types(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(Event.type).order_by(Event.created_at, Event.id)))


def test_a_reply_reaches_whatsapp_and_its_statuses_come_back(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    assert make_worker({"ai.engage": replying_with(TEXT)}).run_until_idle() == 1

    [sent] = whatsapp.sent_messages
    assert sent.to == WA_ID
    assert sent.body["text"]["body"] == "The pro plan is 49 USD a month."
    [message] = outbound(session_factory)
    assert (message.status, message.external_id) == ("sent", sent.wamid)
    assert message.channel_account_id is not None

    for status in ("delivered", "read"):
        assert whatsapp.deliver_status(sent.wamid, status).status_code == 200
    whatsapp.deliver_status(sent.wamid, "delivered")  # late and out of order
    whatsapp.redeliver()
    [message] = outbound(session_factory)
    assert message.status == "read"
    assert message.delivered_at is not None
    assert message.read_at is not None
    changes = [t for t in event_types(session_factory) if t == "MessageStatusChanged"]
    assert len(changes) == 2  # sent->delivered, delivered->read; repeats changed nothing
    lead_id = jobs_of(session_factory, "ai.engage")[0].lead_id
    conversation = client.get(f"/leads/{lead_id}/messages", headers=acme.agent).json()["items"]
    assert [(m["direction"], m["status"]) for m in conversation] == [
        ("in", "received"),
        ("out", "read"),
    ]


def test_every_message_type_a_conversation_needs_is_accepted_by_whatsapp(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    contents = [
        OutboundContent(text="As asked:", reply_to="wamid.IN1"),
        OutboundContent(
            media=Media(
                kind="document",
                link="https://example.com/prices.pdf",
                caption="Prices",
                filename="prices.pdf",
            )
        ),
        OutboundContent(media=Media(kind="image", media_id="1234567890", caption="Our showroom")),
        OutboundContent(media=Media(kind="audio", link="https://example.com/hello.ogg")),
        OutboundContent(
            media=Media(kind="video", link="https://example.com/tour.mp4", caption="Tour")
        ),
        OutboundContent(
            interactive=Interactive(
                kind="buttons",
                body="Want a demo this week?",
                buttons=[
                    ReplyButton(id="demo_yes", title="Yes"),
                    ReplyButton(id="demo_no", title="Not now"),
                ],
            )
        ),
        OutboundContent(
            interactive=Interactive(
                kind="list",
                body="Pick a plan",
                header="Plans",
                footer="Acme",
                list_button="See plans",
                sections=[
                    ListSection(
                        title="Monthly",
                        rows=[
                            ListRow(id="basic", title="Basic", description="5 seats"),
                            ListRow(id="pro", title="Pro"),
                        ],
                    )
                ],
            )
        ),
    ]
    whatsapp.pair_burst = None
    whatsapp.deliver_inbound(WA_ID, "show me", wamid="wamid.IN1")
    with session_factory() as session:
        lead_id = session.scalars(select(Job.lead_id)).one()
    for index, content in enumerate(contents):
        with session_factory() as session:
            sending = channels.send_message(
                session,
                company_id=session.scalars(select(Job.company_id)).one(),
                lead_id=lead_id,  # type: ignore[arg-type]
                channel=Channel.wa_cloud,
                content=content,
                send_key=f"test:{index}",
                settings=make_worker().settings,
                now=clock.now,
            )
            result = run_phases(sending, session=session, end_prepare=session.commit)
            session.commit()
        assert result.outcome == "sent", (index, result)
        clock.advance(seconds=16)
    types = [m.type for m in whatsapp.sent_messages]
    assert types == ["text", "document", "image", "audio", "video", "interactive", "interactive"]
    assert whatsapp.sent_messages[0].body["context"] == {"message_id": "wamid.IN1"}
    assert whatsapp.sent_messages[1].body["document"]["filename"] == "prices.pdf"
    assert whatsapp.sent_messages[2].body["image"] == {
        "id": "1234567890",
        "caption": "Our showroom",
    }


def test_typing_indicator_marks_the_leads_message_read(
    whatsapp: FakeMetaGraph,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hello?", wamid="wamid.TYPE")
    with session_factory() as session:
        showing = channels.show_typing(
            session,
            company_id=acme.company_id,
            channel=Channel.wa_cloud,
            reply_to_external_id="wamid.TYPE",
            settings=settings,
        )
        shown = run_phases(showing, session=session, end_prepare=session.commit)
    assert shown is True
    [receipt] = whatsapp.read_receipts
    assert (receipt.message_id, receipt.is_typing, receipt.is_known_inbound) == (
        "wamid.TYPE",
        True,
        True,
    )


def test_outside_the_window_a_reply_is_refused_before_meta_sees_it(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hi", timestamp=clock.now() - timedelta(hours=25))
    make_worker({"ai.engage": replying_with(TEXT)}).run_until_idle()
    assert whatsapp.sent_messages == []
    assert whatsapp.requests_to("/messages") == []
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("failed", 1)
    assert "outside_24h_window" in (job.last_error or "")
    with session_factory() as session:
        refusal = session.scalars(select(Event).where(Event.type == "SendRefused")).one()
        failure = session.scalars(select(Event).where(Event.type == "JobFailed")).one()
    assert refusal.data["reason"] == "outside_24h_window"
    assert failure.data["reason"] == "outside_24h_window"
    assert outbound(session_factory) == []


def test_outside_the_window_the_company_reengagement_template_goes_instead(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    reengage_with(client, acme, whatsapp, session_factory, worker)
    whatsapp.deliver_inbound(WA_ID, "hi", timestamp=clock.now() - timedelta(days=2))
    worker.run_until_idle()
    [sent] = whatsapp.sent_messages
    assert sent.type == "template"
    assert sent.template == ("we_miss_you", "en_US")
    [message] = outbound(session_factory)
    assert message.text == "[template we_miss_you]"
    assert message.template_id is not None


def test_a_second_reply_within_15_seconds_is_deferred_without_counting_an_attempt(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "one")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    worker.run_until_idle()
    clock.advance(seconds=2)
    whatsapp.deliver_inbound(WA_ID, "two")
    clock.advance(seconds=3)  # its quiet period: due 5 s after the first reply
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 1
    second = jobs_of(session_factory, "ai.engage")[1]
    assert (second.status, second.attempts) == ("queued", 0)
    assert second.run_at == clock.now() + timedelta(seconds=10)
    clock.current = second.run_at
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 2


def test_rate_limits_retry_the_same_message_and_never_send_it_twice(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.fail_next(code=130429, path_contains="/messages")
    worker.run_until_idle()
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("queued", 1)
    [failed] = outbound(session_factory)
    assert failed.status == "failed"
    assert failed.error.startswith("130429")
    clock.current = job.run_at
    worker.run_until_idle()
    [message] = outbound(session_factory)
    assert message.id == failed.id
    assert message.status == "sent"
    assert len(whatsapp.sent_messages) == 1
    assert jobs_of(session_factory, "ai.engage")[0].status == "completed"


def test_permanent_errors_fail_the_message_with_the_reason_shown(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.fail_next(code=131026, details="Message undeliverable", path_contains="/messages")
    worker.run_until_idle()
    [message] = outbound(session_factory)
    assert message.status == "failed"
    assert "131026" in (message.error or "")
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("failed", 1)


def company_events(factory: sessionmaker[Session], type_: str) -> list[dict[str, Any]]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event.data).where(Event.type == type_).order_by(Event.created_at, Event.id)
            )
        )


def test_a_bad_token_fails_at_once_marks_the_channel_and_alerts_the_company(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.access_token = "EAAG-rotated-elsewhere"  # Meta now answers 401, code 190
    worker.run_until_idle()
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("failed", 1)  # a configuration error: no retries
    assert "channel_auth_failed" in (job.last_error or "")
    [account] = client.get("/channels/accounts", headers=acme.admin).json()
    assert "190" in account["needs_attention"]
    assert account["needs_attention_since"] is not None
    [alert] = company_events(session_factory, "ChannelAuthFailed")
    assert alert["account_id"] == account["id"]
    assert alert["channel"] == "wa_cloud"
    # Connecting the number again with the new token clears the mark.
    again = client.post(
        "/channels/whatsapp",
        json={"phone_number_id": whatsapp.phone_number_id, "access_token": whatsapp.access_token},
        headers=acme.admin,
    )
    assert again.status_code == 201, again.text
    assert again.json()["needs_attention"] is None


def test_a_stored_token_meta_could_never_take_fails_at_once_without_calling_meta(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """A token stored before tokens were checked at the door (a typographic character in
    it) cannot go into an HTTP header: once that was a UnicodeEncodeError retried five
    times into the dead-letter queue."""
    from shvya.crypto import encrypt_secret
    from shvya.tenancy.models import ChannelAccount

    with session_factory() as session:
        account = session.scalars(select(ChannelAccount)).one()
        account.credentials_encrypted = encrypt_secret(
            "EAAG\u2013acme\u2013token", secret_key=settings.secret_key.get_secret_value()
        )
        session.commit()
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    worker.run_until_idle()
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("failed", 1)
    assert "channel_auth_failed" in (job.last_error or "")
    assert "token_unusable" in (job.last_error or "")
    assert whatsapp.requests_to("/messages") == []  # nothing with a broken header left SHVYA
    [message] = outbound(session_factory)
    assert message.status == "failed"
    [shown] = client.get("/channels/accounts", headers=acme.admin).json()
    assert "not usable" in shown["needs_attention"]
    assert len(company_events(session_factory, "ChannelAuthFailed")) == 1


def test_a_server_error_from_meta_is_retried_not_failed(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.fail_next(code=131000, path_contains="/messages")  # HTTP 500
    worker.run_until_idle()
    [job] = jobs_of(session_factory, "ai.engage")
    assert (job.status, job.attempts) == ("queued", 1)
    clock.current = job.run_at
    worker.run_until_idle()
    assert jobs_of(session_factory, "ai.engage")[0].status == "completed"
    assert [m.status for m in outbound(session_factory)] == ["sent"]
    [account] = client.get("/channels/accounts", headers=acme.admin).json()
    assert account["needs_attention"] is None
    assert company_events(session_factory, "ChannelAuthFailed") == []


def test_a_policy_block_stops_the_channel_with_an_alert(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.fail_next(code=368, path_contains="/messages")
    worker.run_until_idle()
    assert "ChannelBlocked" in event_types(session_factory)
    assert jobs_of(session_factory, "ai.engage")[0].status == "failed"


def test_no_answer_from_meta_leaves_the_message_unknown_and_never_resends(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    whatsapp.drop_next(path_contains="/messages")  # Meta took it; the answer was lost
    worker.run_until_idle()
    [message] = outbound(session_factory)
    assert message.status == "unknown"
    clock.advance(hours=1)
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 1
    assert outbound(session_factory)[0].status == "unknown"
    assert jobs_of(session_factory, "ai.engage")[0].status == "failed"


def test_a_crash_after_meta_accepted_never_produces_a_second_message(
    whatsapp: FakeMetaGraph,
    database_url: str,
    session_factory: sessionmaker[Session],
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    # A real worker process dies (os._exit, like kill -9) right after Meta answered 200 and
    # before anything of it was committed.
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
    [message] = outbound(session_factory)
    assert message.status == "sending"
    # The job's lease runs out; another worker takes it up again.
    clock.advance(minutes=5)
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    with session_factory() as session:
        from shvya.jobs.service import reap_expired_leases

        reap_expired_leases(session, now=clock.now())
        session.commit()
    clock.advance(minutes=1)
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # never a second message to the lead
    [message] = outbound(session_factory)
    assert message.status == "unknown"
    assert "OutboundMessageUnknown" in event_types(session_factory)


def test_an_unapproved_template_or_wrong_parameters_never_reach_meta(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    whatsapp.add_template(
        "offer", "en_US", "MARKETING", body_params=2, quick_replies=1, url_buttons=1
    )
    whatsapp.add_template("pending_one", "en_US", status="PENDING", body_params=0)
    client.post("/templates/sync", headers=acme.admin)
    make_worker().run_until_idle()
    cases = {
        "wrong_count": TemplateSend(
            name="offer", language="en_US", body_params=["Ana"], button_url_params=["x1"]
        ),
        "unapproved": TemplateSend(name="pending_one", language="en_US"),
        "unknown": TemplateSend(name="nope", language="en_US"),
        "good": TemplateSend(
            name="offer", language="en_US", body_params=["Ana", "20%"], button_url_params=["ref-9"]
        ),
    }
    for label, template in cases.items():
        worker = make_worker({"ai.engage": replying_with(OutboundContent(template=template))})
        whatsapp.deliver_inbound(WA_ID, f"please send {label}")
        clock.advance(seconds=3)  # the stage's quiet period: the reply is due
        worker.run_until_idle()
    [sent] = whatsapp.sent_messages
    assert sent.template == ("offer", "en_US")
    button = next(c for c in sent.body["template"]["components"] if c["type"] == "button")
    assert button["index"] == "1"  # after the quick reply: Meta counts every button
    refusals = []
    with session_factory() as session:
        refusals = [
            e.data["detail"]
            for e in session.scalars(select(Event).where(Event.type == "SendRefused"))
        ]
    assert len(refusals) == 3
    assert any("takes 2 body parameter(s), 1 given" in r for r in refusals)
    assert any("is submitted, not approved" in r for r in refusals)
    assert any("'nope' (en_US) is unknown" in r for r in refusals)


def test_async_marketing_opt_out_suppresses_the_contact(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.fail_async(WA_ID, code=131050)
    whatsapp.deliver_inbound(WA_ID, "hi")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    worker.run_until_idle()
    whatsapp.deliver_statuses()
    [message] = outbound(session_factory)
    assert message.status == "failed"
    assert (message.error or "").startswith("131050")
    with session_factory() as session:
        suppression = session.scalars(select(Suppression)).one()
    assert (suppression.address, suppression.reason) == (f"+{WA_ID}", "marketing_opt_out")
    clock.advance(minutes=1)
    whatsapp.deliver_inbound(WA_ID, "anyone?")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # the suppressed contact got nothing more


def test_stop_suppresses_confirms_once_and_start_lifts_it(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    worker = make_worker({"ai.engage": replying_with(TEXT)})
    whatsapp.deliver_inbound(WA_ID, "Stop")
    assert jobs_of(session_factory, "ai.engage") == []  # never a sales reply to STOP
    worker.run_until_idle()
    [confirmation] = whatsapp.sent_messages
    assert "unsubscribed" in confirmation.body["text"]["body"]
    clock.advance(minutes=1)
    whatsapp.deliver_inbound(WA_ID, "STOP!")
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # one confirmation only
    types = event_types(session_factory)
    assert types.count("OptedOut") == 2
    assert types.count("ContactSuppressed") == 1
    clock.advance(minutes=1)
    whatsapp.deliver_inbound(WA_ID, "start")
    with session_factory() as session:
        assert session.scalars(select(Suppression)).all() == []
    clock.advance(minutes=1)
    whatsapp.deliver_inbound(WA_ID, "What does it cost?")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    worker.run_until_idle()
    assert len(whatsapp.sent_messages) == 2
    assert "OptedIn" in event_types(session_factory)


def test_company_opt_out_words_in_its_own_language(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    from shvya.tenancy.models import Company

    with session_factory() as session:
        session.get_one(Company, acme.company_id).settings = {
            "opt_out_keywords": ["band karo", "रुको"]
        }
        session.commit()
    whatsapp.deliver_inbound(WA_ID, "Band Karo")
    whatsapp.deliver_inbound("16315552222", "रुको")
    with session_factory() as session:
        assert len(session.scalars(select(Suppression)).all()) == 2
    assert jobs_of(session_factory, "ai.engage") == []


def test_lead_media_is_fetched_through_the_graph_api(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    whatsapp.add_media("media-77", b"%PDF-1.7 quote", "application/pdf")
    whatsapp.deliver_inbound(WA_ID, "quote", type="document", media_id="media-77", filename="q.pdf")
    [message] = _all_messages(session_factory)
    response = client.get(f"/messages/{message.id}/media", headers=acme.agent)
    assert response.status_code == 200
    assert response.content == b"%PDF-1.7 quote"
    assert response.headers["content-type"] == "application/pdf"
    text_message = post_text(client, acme)
    missing = client.get(f"/messages/{text_message}/media", headers=acme.agent)
    assert missing.status_code == 404


def _all_messages(factory: sessionmaker[Session]) -> list[Message]:
    with factory() as session:
        return list(session.scalars(select(Message)))


def post_text(client: TestClient, tenant: Tenant) -> str:
    from tests.support import post_inbound

    body = post_inbound(client, tenant, phone="+14155550100").json()
    return str(body["message_id"])


def test_templates_sync_submit_and_approval(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
) -> None:
    for index in range(30):
        whatsapp.add_template(f"catalog_{index:02d}", "en_US", body_params=1)
    whatsapp.add_template("paused_one", "en_US", status="PAUSED", body_params=0)
    job = client.post("/templates/sync", headers=acme.admin).json()["job_id"]
    make_worker().run_until_idle()
    result = client.get(f"/jobs/{job}", headers=acme.agent).json()
    assert result["status"] == "completed", result
    assert result["result"] == {"templates": 31, "approved": 30}
    listed = client.get("/templates?limit=200", headers=acme.agent).json()
    assert listed["total"] == 31
    assert {t["status"] for t in listed["items"]} == {"approved", "paused"}

    draft = client.post(
        "/templates",
        json={
            "name": "price_drop",
            "language": "en_US",
            "category": "MARKETING",
            "body": "Hi {{1}}, {{2}} off",
        },
        headers=acme.admin,
    )
    assert draft.status_code == 201
    assert (
        client.post(
            "/templates",
            json={"name": "price_drop", "language": "en_US", "body": "x"},
            headers=acme.admin,
        ).status_code
        == 409
    )
    submit = client.post(f"/templates/{draft.json()['id']}/submit", headers=acme.admin)
    assert submit.status_code == 202
    make_worker().run_until_idle()
    submitted = client.get(f"/templates/{draft.json()['id']}", headers=acme.agent).json()
    assert submitted["status"] == "submitted"
    assert submitted["external_id"]
    assert whatsapp.template("price_drop", "en_US") is not None
    assert (
        client.post(f"/templates/{draft.json()['id']}/submit", headers=acme.admin).status_code
        == 409
    )
    whatsapp.set_template_status("price_drop", "en_US", "APPROVED", deliver=True)
    approved = client.get(f"/templates/{draft.json()['id']}", headers=acme.agent).json()
    assert approved["status"] == "approved"
    assert client.post("/templates/sync", headers=acme.agent).status_code == 403


def test_a_lead_without_a_phone_number_is_reached_by_their_business_scoped_id(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(None, "hi, I use a username", user_id="US.13491208655302741918")
    [lead] = client.get("/leads", headers=acme.agent).json()["items"]
    assert lead["contacts"][0]["value"] == "bsuid:US.13491208655302741918"
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    make_worker({"ai.engage": replying_with(TEXT)}).run_until_idle()
    [sent] = whatsapp.sent_messages
    assert sent.body["recipient"] == "US.13491208655302741918"
    assert "to" not in sent.body
    # the same person later writing with a phone number stays the same lead
    whatsapp.deliver_inbound(WA_ID, "now with my number", user_id="US.13491208655302741918")
    assert client.get("/leads", headers=acme.agent).json()["total"] == 1


def test_three_simultaneous_copies_of_a_delivery_get_one_reply(
    whatsapp: FakeMetaGraph,
    live_server: str,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    whatsapp.webhook_client = None
    whatsapp.webhook_url = f"{live_server}/webhooks/whatsapp"
    first = whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.TRIPLE")
    assert first.status_code == 200
    original = whatsapp.deliveries[-1]
    barrier = threading.Barrier(3)

    def again(_: int) -> int:
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            return http.post(
                original.url, content=original.body, headers=dict(original.headers)
            ).status_code

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(again, range(3))) == [200, 200, 200]
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    make_worker({"ai.engage": replying_with(TEXT)}).run_until_idle()
    with session_factory() as session:
        inbound = session.scalars(select(Message).where(Message.direction == "in")).all()
    assert len(inbound) == 1
    assert len(jobs_of(session_factory, "ai.engage")) == 1
    assert len(whatsapp.sent_messages) == 1


def test_suppressions_are_managed_by_admins(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    body = {"channel": "wa_cloud", "address": "+1 (631) 555-1181"}
    assert client.post("/suppressions", json=body, headers=acme.agent).status_code == 403
    created = client.post("/suppressions", json=body, headers=acme.admin)
    assert created.status_code == 201
    assert created.json()["address"] == "+16315551181"
    assert (created.json()["reason"], created.json()["source"]) == ("manual", "manual")
    again = client.post("/suppressions", json=body, headers=acme.admin)
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    bad = client.post(
        "/suppressions", json={"channel": "email", "address": "nope"}, headers=acme.admin
    )
    assert bad.status_code == 422
    listed = client.get("/suppressions", headers=acme.admin).json()
    assert [s["id"] for s in listed["items"]] == [created.json()["id"]]
    deleted = client.delete(f"/suppressions/{created.json()['id']}", headers=acme.admin)
    assert deleted.status_code == 200
    assert client.get("/suppressions", headers=acme.admin).json()["total"] == 0
    assert (
        client.delete(f"/suppressions/{created.json()['id']}", headers=acme.admin).status_code
        == 404
    )


def test_channel_accounts_never_show_the_token(
    whatsapp: FakeMetaGraph, client: TestClient, acme: Tenant, database_url: str
) -> None:
    from sqlalchemy import create_engine, text

    [account] = client.get("/channels/accounts", headers=acme.admin).json()
    assert account["external_id"] == "106540352242922"
    assert account["token_hint"] == "…1234"
    assert "EAAG-acme-token-1234" not in str(account)
    assert client.get("/channels/accounts", headers=acme.agent).status_code == 403
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT credentials_encrypted FROM channel_accounts")).scalar()
    engine.dispose()
    assert stored
    assert "EAAG-acme-token-1234" not in stored


def test_a_read_and_a_delivered_applied_at_once_never_move_the_status_back(
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    acme: Tenant,
    clock: FakeClock,
) -> None:
    """Two webhooks for one message in flight together: the `delivered` has read the message
    and not yet committed when the `read` arrives. The message must end `read`, never moved
    back to `delivered` (PostgreSQL: a row lock; SQLite: its writers are serial)."""
    from shvya.conversations.models import MessageStatus
    from shvya.conversations.service import DeliveryStatus, apply_delivery_status
    from shvya.crm.models import Channel

    whatsapp.deliver_inbound(WA_ID, "price?", wamid="wamid.IN1")
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    make_worker({"ai.engage": replying_with(TEXT)}).run_until_idle()
    [sent] = whatsapp.sent_messages
    first_applied = threading.Event()
    first_may_commit = threading.Event()

    def apply(status: MessageStatus, *, hold: bool) -> None:
        with session_factory() as session:
            apply_delivery_status(
                session,
                company_id=acme.company_id,
                channel=Channel.wa_cloud,
                status=DeliveryStatus(external_id=sent.wamid, status=status, at=clock.now()),
                now=clock.now(),
            )
            if hold:
                first_applied.set()
                first_may_commit.wait(timeout=10)
            session.commit()

    delivered = threading.Thread(
        target=apply, args=(MessageStatus.delivered,), kwargs={"hold": True}
    )
    delivered.start()
    assert first_applied.wait(timeout=10)
    read = threading.Thread(target=apply, args=(MessageStatus.read,), kwargs={"hold": False})
    read.start()
    read.join(timeout=0.5)  # without the lock it would commit `read` now, before `delivered`
    first_may_commit.set()
    delivered.join(timeout=20)
    read.join(timeout=20)
    [message] = outbound(session_factory)
    assert message.status == "read"
