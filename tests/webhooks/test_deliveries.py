"""Signed outbound webhooks end to end: subscribe, an event happens, a scheduler tick fans it
out, a worker POSTs it to a receiver on 127.0.0.1 that checks the signature with the snippet
docs/webhooks.md publishes (docs/webhooks.md 2-4)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.events.service import append_lead_event
from shvya.jobs.models import Job
from shvya.jobs.service import replay_dead_jobs
from shvya.webhooks.models import WebhookDelivery
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import FakeClock, Tenant, post_inbound
from tests.webhooks.support import (
    company_events,
    deliveries,
    documented_verifier,
    subscribe,
    tick,
    worker,
)


def _subscribed(
    client: TestClient, acme: Tenant, receiver: WebhookReceiver, events: list[str] | None = None
) -> dict[str, Any]:
    subscription = subscribe(client, acme, f"{receiver.url}/hook", events)
    receiver.secret = subscription["secret"]
    return subscription


def test_a_lead_message_reaches_the_receiver_signed_and_the_secret_is_shown_once(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    subscription = _subscribed(client, acme, receiver)
    assert subscription["secret"].startswith("whsec_")
    shown_later = [
        client.get(f"/webhook-subscriptions/{subscription['id']}", headers=acme.admin).json(),
        client.get("/webhook-subscriptions", headers=acme.admin).json()["items"][0],
    ]
    for shown in shown_later:
        assert shown["id"] == subscription["id"]
        assert subscription["secret"] not in json.dumps(shown)
        assert "secret" not in shown

    created = post_inbound(client, acme, text="Is the premium plan monthly?")
    assert created.status_code == 201
    clock.advance(seconds=1)
    assert tick(session_factory, clock) == 1  # InboundMessageReceived; LeadCreated not asked for
    worker(engine, clock, settings).run_until_idle()

    [request] = receiver.received
    assert request.signature_ok is True
    assert request.path == "/hook"
    body = json.loads(request.body)
    assert set(body) == {"id", "type", "created_at", "company_id", "data"}
    assert body["type"] == "InboundMessageReceived"
    assert body["company_id"] == str(acme.company_id)
    assert body["data"]["lead_id"] == created.json()["lead_id"]
    assert body["data"]["message_id"] == created.json()["message_id"]
    assert request.headers["shvya-event-id"] == body["id"]
    assert request.headers["content-type"] == "application/json"
    timeline = client.get(f"/leads/{created.json()['lead_id']}/events", headers=acme.agent)
    assert body["id"] in {e["id"] for e in timeline.json()["items"]}

    [delivery] = deliveries(client, acme, subscription["id"])
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_response_code"] == 200
    assert [a["response_code"] for a in delivery["attempt_log"]] == [200]

    # The documented check refuses what a receiver must refuse.
    verify = documented_verifier()
    header, now = request.headers["shvya-signature"], clock.now().timestamp()
    assert verify(receiver.secret, header, request.body, now=now)
    assert not verify(receiver.secret, header, request.body + b" ", now=now)
    assert not verify("whsec_other", header, request.body, now=now)
    assert not verify(receiver.secret, header, request.body, now=now + 301)
    assert not verify(receiver.secret, "t=x,v1=00", request.body, now=now)


def test_500s_are_retried_with_the_queues_backoff_until_the_receiver_takes_it(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    subscription = _subscribed(client, acme, receiver)
    receiver.answer(500, body=b"x" * 1_000_000)  # a huge error page: only 4 KiB of it is read
    receiver.answer(503)
    post_inbound(client, acme)
    clock.advance(seconds=1)
    tick(session_factory, clock)
    run = worker(engine, clock, settings)

    run.run_until_idle()
    [delivery] = deliveries(client, acme, subscription["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_response_code"]) == (
        "pending",
        1,
        500,
    )
    assert delivery["last_error"].startswith("HTTP 500: xxx")
    assert len(delivery["last_error"]) <= 500
    run.run_until_idle()
    assert len(receiver.received) == 1  # not due before the backoff

    clock.advance(seconds=6)
    run.run_until_idle()
    assert len(receiver.received) == 2
    clock.advance(seconds=25)
    run.run_until_idle()

    [delivery] = deliveries(client, acme, subscription["id"])
    assert delivery["status"] == "delivered"
    assert [a["response_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
    assert len(receiver.received) == 3
    assert len({r.headers["shvya-event-id"] for r in receiver.received}) == 1
    assert all(r.signature_ok for r in receiver.received)


def test_a_redirect_is_recorded_and_never_followed(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    subscription = _subscribed(client, acme, receiver)
    receiver.answer(302, {"Location": f"{receiver.url}/elsewhere"})
    post_inbound(client, acme)
    clock.advance(seconds=1)
    tick(session_factory, clock)
    worker(engine, clock, settings).run_until_idle()

    assert [r.path for r in receiver.received] == ["/hook"]
    [delivery] = deliveries(client, acme, subscription["id"])
    assert delivery["status"] == "pending"
    assert delivery["last_response_code"] == 302
    assert "/elsewhere not followed" in delivery["last_error"]


def test_a_subscription_that_keeps_failing_is_disabled_with_an_event_and_re_enabled(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    receiver.default_status = 500
    subscription = _subscribed(client, acme, receiver)
    post_inbound(client, acme, phone="+14155550101")
    post_inbound(client, acme, phone="+14155550102")
    clock.advance(seconds=1)
    assert tick(session_factory, clock) == 2
    run = worker(engine, clock, settings)
    for _ in range(8):  # every attempt of both deliveries
        run.run_until_idle()
        clock.advance(minutes=11)

    assert len(receiver.received) == 16
    assert [d["status"] for d in deliveries(client, acme, subscription["id"])] == ["failed"] * 2
    shown = client.get(f"/webhook-subscriptions/{subscription['id']}", headers=acme.admin).json()
    assert shown["active"] is False
    assert shown["consecutive_failures"] == 2
    assert shown["disabled_reason"] == "2 deliveries in a row failed"
    [disabled] = company_events(session_factory, acme.company_id, "WebhookSubscriptionDisabled")
    assert disabled.data["subscription_id"] == subscription["id"]
    assert disabled.data["last_error"] == "HTTP 500: ok"
    with session_factory() as session:
        dead = session.scalar(
            select(func.count()).where(Job.type == "webhook.reminder", Job.status == "dlq")
        )
    assert dead == 2

    # Disabled: new events are not fanned out, and a redelivery is refused until re-enabled.
    post_inbound(client, acme, phone="+14155550103")
    clock.advance(seconds=1)
    assert tick(session_factory, clock) == 0
    first = deliveries(client, acme, subscription["id"])[0]
    redeliver = f"/webhook-subscriptions/{subscription['id']}/deliveries/{first['id']}/redeliver"
    refused = client.post(redeliver, headers=acme.admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "webhook_subscription_inactive"

    enabled = client.patch(
        f"/webhook-subscriptions/{subscription['id']}", json={"active": True}, headers=acme.admin
    )
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["active"], enabled.json()["consecutive_failures"]) == (True, 0)
    assert enabled.json()["disabled_reason"] is None
    receiver.default_status = 200
    assert client.post(redeliver, headers=acme.admin).status_code == 202
    # And the dead jobs back from the DLQ: the first's is superseded by its redelivery, the
    # second's delivers its own delivery again.
    with session_factory() as session:
        replayed = replay_dead_jobs(
            session, company_id=acme.company_id, job_type=None, limit=None, now=clock.now()
        )
        session.commit()
    assert replayed == 2
    run.run_until_idle()
    assert len(receiver.received) == 18
    assert {r.headers["shvya-event-id"] for r in receiver.received[-2:]} == {
        str(d["event_id"]) for d in deliveries(client, acme, subscription["id"])
    }
    assert [d["status"] for d in deliveries(client, acme, subscription["id"])] == ["delivered"] * 2


def test_redeliver_posts_the_same_event_again_freshly_signed_once_per_request(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    subscription = _subscribed(client, acme, receiver)
    post_inbound(client, acme)
    clock.advance(seconds=1)
    tick(session_factory, clock)
    run = worker(engine, clock, settings)
    run.run_until_idle()
    [delivery] = deliveries(client, acme, subscription["id"])

    clock.advance(minutes=10)
    path = f"/webhook-subscriptions/{subscription['id']}/deliveries/{delivery['id']}/redeliver"
    first = client.post(path, headers=acme.admin)
    again = client.post(path, headers=acme.admin)  # a double click: the same job
    assert first.status_code == again.status_code == 202, first.text
    assert first.json()["job_id"] == again.json()["job_id"]
    assert first.json()["status"] == "pending"
    run.run_until_idle()

    assert len(receiver.received) == 2
    original, repeat = receiver.received
    assert original.body == repeat.body
    assert original.headers["shvya-signature"] != repeat.headers["shvya-signature"]
    assert repeat.signature_ok is True  # signed at the redelivery's time, not the event's
    [delivery] = deliveries(client, acme, subscription["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    assert len(company_events(session_factory, acme.company_id, "WebhookRedeliveryRequested")) == 1


def test_the_fan_out_never_doubles_a_delivery_and_catches_late_commits(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> None:
    post_inbound(client, acme, phone="+14155550109")  # before the subscription: never sent
    clock.advance(seconds=1)
    subscription = _subscribed(client, acme, receiver, ["LeadCreated", "InboundMessageReceived"])
    post_inbound(client, acme)
    clock.advance(seconds=1)
    assert tick(session_factory, clock) == 2
    assert tick(session_factory, clock) == 0  # the same instant
    clock.advance(seconds=5)
    assert tick(session_factory, clock) == 0  # the lag window is read again, nothing doubled

    # An event stamped before the last scan but committed after it (a slow transaction).
    with session_factory() as session:
        append_lead_event(
            session,
            company_id=acme.company_id,
            lead_id=None,
            type="LeadCreated",
            now=clock.now() - timedelta(seconds=3),
        )
        session.commit()
    clock.advance(seconds=5)
    assert tick(session_factory, clock) == 1

    with session_factory() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        jobs = session.scalar(select(func.count()).where(Job.type == "webhook.reminder"))
    assert len(rows) == 3 == jobs
    assert sorted(r.event_type for r in rows) == [
        "InboundMessageReceived",
        "LeadCreated",
        "LeadCreated",
    ]
    assert {r.subscription_id for r in rows} == {uuid.UUID(subscription["id"])}


def test_a_deleted_subscriptions_queued_delivery_sends_nothing(
    client: TestClient,
    acme: Tenant,
    receiver: WebhookReceiver,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    subscription = _subscribed(client, acme, receiver)
    post_inbound(client, acme)
    clock.advance(seconds=1)
    tick(session_factory, clock)
    deleted = client.delete(f"/webhook-subscriptions/{subscription['id']}", headers=acme.admin)
    assert deleted.status_code == 200, deleted.text
    worker(engine, clock, settings).run_until_idle()
    assert receiver.received == []
    gone = client.get(f"/webhook-subscriptions/{subscription['id']}", headers=acme.admin)
    assert gone.status_code == 404
    assert company_events(session_factory, acme.company_id, "WebhookSubscriptionDeleted")
