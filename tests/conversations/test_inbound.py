from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message
from shvya.crm.models import Lead, LeadContact, Pipeline, Stage
from shvya.events.models import Event
from shvya.jobs.models import Job
from tests.support import FakeClock, Tenant, post_inbound


def count_rows(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Lead, LeadContact, Message, Event, Job)
        }


def test_first_message_creates_lead_message_events_and_engage_job(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    response = post_inbound(
        client, acme, phone="+1 (415) 555-0100", name="Priya", external_id="wamid.A1"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["lead_created"] is True and body["duplicate"] is False

    lead = client.get(f"/leads/{body['lead_id']}", headers=acme.agent).json()
    assert lead["name"] == "Priya"
    assert lead["stage"]["name"] == "New"
    assert [(c["channel"], c["value"]) for c in lead["contacts"]] == [("wa_cloud", "+14155550100")]

    messages = client.get(f"/leads/{body['lead_id']}/messages", headers=acme.agent).json()
    assert messages["total"] == 1
    only = messages["items"][0]
    assert only["id"] == body["message_id"]
    assert (only["direction"], only["status"], only["external_id"]) == (
        "in",
        "received",
        "wamid.A1",
    )
    assert only["text"] == "Hi, what does the premium plan cost?"

    events = client.get(f"/leads/{body['lead_id']}/events", headers=acme.agent).json()
    assert [e["type"] for e in events["items"]] == ["LeadCreated", "InboundMessageReceived"]
    assert events["items"][1]["data"]["message_id"] == body["message_id"]

    with session_factory() as session:
        job = session.get_one(Job, uuid.UUID(body["job_id"]))
        assert (job.type, job.priority, job.status) == ("ai.engage", 100, "queued")
        assert job.payload == {"lead_id": body["lead_id"], "message_id": body["message_id"]}
        assert job.idempotency_key == f"ai.engage:{body['message_id']}"
        # Due after the New stage's quiet period (3 s by default), from the message's time.
        assert job.run_at == clock.now() + timedelta(seconds=3)
        assert job.company_id == acme.company_id


def test_redelivered_message_answers_200_with_same_ids_and_writes_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    first = post_inbound(client, acme, external_id="wamid.DUP")
    assert first.status_code == 201
    before = count_rows(session_factory)

    again = post_inbound(client, acme, external_id="wamid.DUP", text="edited text")
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True, "lead_created": False}
    assert count_rows(session_factory) == before


def test_a_stored_message_id_from_a_new_number_is_a_repeat_and_makes_no_lead(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    first = post_inbound(client, acme, external_id="wamid.MOVED")
    before = count_rows(session_factory)

    again = post_inbound(client, acme, phone="+14155550177", external_id="wamid.MOVED")
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True, "lead_created": False}
    assert count_rows(session_factory) == before  # no lead, contact or event for the new number


def test_a_company_without_a_pipeline_gets_the_default_one_with_its_first_lead(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        session.execute(delete(Stage).where(Stage.company_id == acme.company_id))
        session.execute(delete(Pipeline).where(Pipeline.company_id == acme.company_id))
        session.commit()

    response = post_inbound(client, acme, name="Asha")
    assert response.status_code == 201
    assert response.json()["lead_created"] is True
    pipelines = client.get("/pipelines", headers=acme.agent).json()
    assert [s["name"] for s in pipelines[0]["stages"]] == [
        "New",
        "Qualified",
        "Nurture",
        "Converted",
        "Lost",
    ]
    lead = client.get(f"/leads/{response.json()['lead_id']}", headers=acme.agent).json()
    assert (lead["name"], lead["stage"]["name"]) == ("Asha", "New")


def test_same_external_id_on_another_channel_or_company_is_not_a_duplicate(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    assert post_inbound(client, acme, external_id="X1").status_code == 201
    assert post_inbound(client, acme, external_id="X1", channel="wa_web").status_code == 201
    assert post_inbound(client, globex, external_id="X1").status_code == 201


def test_second_message_reuses_the_lead_and_queues_another_job(
    client: TestClient, acme: Tenant, clock: FakeClock
) -> None:
    first = post_inbound(client, acme).json()
    clock.advance(minutes=3)
    second = post_inbound(client, acme, text="and do you deliver to Pune?")
    assert second.status_code == 201
    body = second.json()
    assert body["lead_id"] == first["lead_id"]
    assert body["lead_created"] is False
    assert body["job_id"] != first["job_id"]
    events = client.get(f"/leads/{body['lead_id']}/events", headers=acme.agent).json()
    assert [e["type"] for e in events["items"]] == [
        "LeadCreated",
        "InboundMessageReceived",
        "InboundMessageReceived",
    ]


def test_received_at_is_the_providers_time_and_drives_the_contact_window(
    client: TestClient, acme: Tenant, clock: FakeClock
) -> None:
    response = post_inbound(client, acme, received_at="2026-11-26T15:25:00+05:30")
    assert response.status_code == 201
    lead = client.get(f"/leads/{response.json()['lead_id']}", headers=acme.agent).json()
    assert lead["contacts"][0]["last_inbound_at"] == "2026-11-26T09:55:00Z"
    assert lead["last_inbound_at"] == "2026-11-26T09:55:00Z"


def test_national_number_is_read_in_the_companys_region(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    from tests.support import make_tenant

    india = make_tenant(session_factory, "Mumbai Motors", phone_region="IN")
    response = post_inbound(client, india, phone="098765 43210")
    assert response.status_code == 201, response.text
    lead = client.get(f"/leads/{response.json()['lead_id']}", headers=india.agent).json()
    assert lead["contacts"][0]["value"] == "+919876543210"


def test_email_contact_is_lower_cased(client: TestClient, acme: Tenant) -> None:
    response = post_inbound(client, acme, channel="email", phone="Priya.Shah@Example.COM")
    assert response.status_code == 201, response.text
    lead = client.get(f"/leads/{response.json()['lead_id']}", headers=acme.agent).json()
    assert lead["contacts"][0] == {
        **lead["contacts"][0],
        "channel": "email",
        "value": "priya.shah@example.com",
    }


def test_paused_lead_gets_no_engage_job(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    first = post_inbound(client, acme).json()
    with session_factory() as session:
        session.execute(
            update(Lead).where(Lead.id == uuid.UUID(first["lead_id"])).values(ai_paused=True)
        )
        session.commit()
    second = post_inbound(client, acme, text="hello?")
    assert second.status_code == 201
    assert second.json()["job_id"] is None
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_lead_text_is_stored_verbatim_and_returned_as_json(
    client: TestClient, acme: Tenant
) -> None:
    nasty = '<script>alert(1)</script> =HYPERLINK("http://x") \' OR sleep(5)-- 👩‍💻 \u202eRTL'
    response = post_inbound(client, acme, text=nasty)
    assert response.status_code == 201
    messages = client.get(f"/leads/{response.json()['lead_id']}/messages", headers=acme.agent)
    assert messages.headers["content-type"] == "application/json"
    assert messages.json()["items"][0]["text"] == nasty


# --- bad input: a clear 4xx naming the field, and nothing written -------------------------


def assert_rejected(
    response: Any, status: int, field: str | None, factory: sessionmaker[Session]
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["detail"]
    if field is not None:
        assert field in body["detail"], body
    assert count_rows(factory)["messages"] == 0


def test_invalid_phone_is_422_naming_from(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    for phone in ("12", "+1415555010000000000", "call me", "+", "+999 1234567"):
        assert_rejected(post_inbound(client, acme, phone=phone), 422, "from", session_factory)


def test_invalid_email_is_422(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    for address in ("not-an-email", "a@", "x" * 310 + "@example.com"):
        response = post_inbound(client, acme, channel="email", phone=address)
        assert_rejected(response, 422, "from", session_factory)


def test_unknown_channel_and_bad_text_are_422(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    cases = [
        ({"channel": "telegram"}, "channel"),
        ({"text": ""}, "text"),
        ({"text": "   \n"}, "text"),
        ({"text": "x" * 4097}, "text"),
        ({"text": "nul \u0000 inside"}, "text"),
        ({"name": "bad\u0000name"}, "name"),
        ({"received_at": "2026-11-26T10:00:00"}, "received_at"),  # no offset
        ({"received_at": "2027-01-01T00:00:00Z"}, "received_at"),  # in the future
        ({"external_id": ""}, "external_id"),
        ({"surprise": 1}, "surprise"),
    ]
    for fields, field in cases:
        assert_rejected(post_inbound(client, acme, **fields), 422, field, session_factory)


def test_lone_surrogate_is_422_not_a_database_error(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    raw = '{"channel": "wa_cloud", "from": "+14155550100", "text": "bad \\ud800 half"}'
    response = client.post(
        "/inbound-message",
        content=raw,
        headers={**acme.agent, "Content-Type": "application/json"},
    )
    assert_rejected(response, 422, "text", session_factory)


def test_malformed_bodies_are_4xx_never_500(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    headers = {**acme.agent, "Content-Type": "application/json"}
    bodies = [
        b"",
        b"null",
        b"[]",
        b"{not json",
        b'{"channel": "wa_cloud", "from": "+14155550100", "text": NaN}',
        b'{"text": 1e400}',
        b"\xff\xfe\x00garbage",
        b"[" * 10_000 + b"]" * 10_000,
        json.dumps({"channel": ["wa_cloud"] * 60_000}).encode(),
    ]
    for raw in bodies:
        response = client.post("/inbound-message", content=raw, headers=headers)
        assert response.status_code in (400, 422), (raw[:40], response.status_code, response.text)
        assert response.json()["error"]
    assert count_rows(session_factory)["messages"] == 0


def test_body_over_one_mebibyte_is_413_before_parsing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    big = {"channel": "wa_cloud", "from": "+14155550100", "text": "x" * (2 * 1024 * 1024)}
    response = client.post("/inbound-message", json=big, headers=acme.agent)
    assert_rejected(response, 413, None, session_factory)

    def chunks() -> object:
        for _ in range(20):
            yield b"x" * 100_000

    chunked = client.post(
        "/inbound-message",
        content=chunks(),  # type: ignore[arg-type]
        headers={**acme.agent, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413


def test_an_opt_out_through_the_api_suppresses_and_queues_only_the_confirmation(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    response = post_inbound(client, acme, text="  unsubscribe ")
    assert response.status_code == 201
    assert response.json()["job_id"] is None  # no AI reply to an opt-out
    with session_factory() as session:
        [job] = session.scalars(select(Job)).all()
        assert job.type == "channel.notice"
        assert job.payload["notice"] == "opt_out_confirmation"
    events = client.get(f"/leads/{response.json()['lead_id']}/events", headers=acme.agent).json()
    assert [e["type"] for e in events["items"]] == [
        "LeadCreated",
        "InboundMessageReceived",
        "ContactSuppressed",
        "OptedOut",
    ]


def test_a_body_not_declared_json_is_415_and_writes_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    raw = json.dumps({"channel": "wa_cloud", "from": "+14155550100", "text": "hello"})
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        None,
    ):
        headers = dict(acme.agent)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = client.post("/inbound-message", content=raw, headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["error"] == "unsupported_media_type"
        assert "Content-Type: application/json" in response.json()["detail"]
    assert count_rows(session_factory)["messages"] == 0

    for content_type in ("application/json", "application/json; charset=utf-8", "APPLICATION/JSON"):
        response = client.post(
            "/inbound-message",
            content=json.dumps(
                {"channel": "wa_cloud", "from": "+14155550100", "text": content_type}
            ),
            headers={**acme.agent, "Content-Type": content_type},
        )
        assert response.status_code == 201, (content_type, response.text)
    assert count_rows(session_factory)["messages"] == 3


def test_the_key_is_checked_before_the_content_type(client: TestClient) -> None:
    response = client.post(
        "/inbound-message", content="hello", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 401, response.text
