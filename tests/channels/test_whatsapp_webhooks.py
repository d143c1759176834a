"""Signed WhatsApp deliveries in, exactly as the fake Graph server (Meta) sends them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels.whatsapp_cloud import verify_signature
from shvya.conversations.models import Message
from shvya.crm.models import Lead, LeadContact, Suppression
from shvya.events.models import Event
from shvya.jobs.models import Job
from tests.channels.conftest import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WABA_ID,
    connect_number,
)
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant, make_tenant, post_inbound

WA_ID = "16315551181"


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Lead, LeadContact, Message, Job, Suppression)
        }


def inbound_messages(factory: sessionmaker[Session]) -> list[Message]:
    with factory() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))
        )


# --- verification handshake ------------------------------------------------------------------


def test_verification_handshake_answers_the_challenge(client: TestClient) -> None:
    ok = client.get(
        "/webhooks/whatsapp",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200
    assert ok.text == "1158201444"
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    ):
        refused = client.get("/webhooks/whatsapp", params=params)
        assert refused.status_code == 403
        assert "1" not in refused.text.replace("403", "")


# --- signatures ------------------------------------------------------------------------------


def test_unsigned_or_wrongly_signed_deliveries_are_401_and_store_nothing(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    item = whatsapp.inbound_item(WA_ID, "hello")
    body = json.dumps(whatsapp.envelope([item]), separators=(",", ":")).encode()
    good = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    sha1 = "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    wrong_secret = "sha256=" + hmac.new(b"another-secret", body, hashlib.sha256).hexdigest()
    forged = [
        (body, None),
        (body, ""),
        (body, sha1),
        (body, good.upper()),
        (body, "sha256=" + good.removeprefix("sha256=").upper()),
        (bytes(flipped), good),
        (body, wrong_secret),
        (json.dumps(json.loads(body), indent=1).encode(), good),  # re-serialised JSON
    ]
    for raw, signature in forged:
        response = whatsapp.deliver_raw(raw, signature=signature)
        assert response.status_code == 401, (signature, response.text)
        assert response.json()["error"] == "unauthorized"
    assert counts(session_factory) == dict.fromkeys(counts(session_factory), 0)
    # a header with non-ASCII characters (possible on a raw socket) is a refusal, not a crash
    assert not verify_signature(body=body, header="sha256=zzz\u00e9\u00e9", app_secret=APP_SECRET)
    assert whatsapp.deliver_raw(body, signature=good).status_code == 200
    assert counts(session_factory)["messages"] == 1


def test_a_signed_body_that_is_not_json_is_400(whatsapp: FakeMetaGraph) -> None:
    response = whatsapp.deliver_raw(b"{not json")
    assert response.status_code == 400
    assert response.json()["error"] == "bad_webhook_body"


# --- inbound messages ------------------------------------------------------------------------


def test_a_text_message_becomes_lead_message_events_and_engage_job(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    sent_at = clock.now() - timedelta(minutes=2)
    response = whatsapp.deliver_inbound(
        WA_ID, "How much is the pro plan?", name="Ana", timestamp=sent_at, user_id="US.1349"
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    [lead] = client.get("/leads", headers=acme.agent).json()["items"]
    assert lead["name"] == "Ana"
    assert lead["contacts"][0]["channel"] == "wa_cloud"
    assert lead["contacts"][0]["value"] == f"+{WA_ID}"
    # the window runs from Meta's timestamp, not from when the delivery arrived
    assert lead["contacts"][0]["last_inbound_at"] == sent_at.isoformat().replace("+00:00", "Z")
    [message] = client.get(f"/leads/{lead['id']}/messages", headers=acme.agent).json()["items"]
    assert message["text"] == "How much is the pro plan?"
    assert message["external_id"].startswith("wamid.")
    with session_factory() as session:
        contact = session.scalars(select(LeadContact)).one()
        assert contact.external_user_id == "US.1349"
        [job] = session.scalars(select(Job)).all()
        assert (job.type, job.status) == ("ai.engage", "queued")


def test_the_same_delivery_three_times_leaves_one_message_and_one_job(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    assert whatsapp.deliver_inbound(WA_ID, "hi", wamid="wamid.SAME").status_code == 200
    for _ in range(2):
        assert whatsapp.redeliver().status_code == 200
    assert whatsapp.deliver_inbound(WA_ID, "hi again", wamid="wamid.SAME").status_code == 200
    assert counts(session_factory) == {
        "leads": 1,
        "lead_contacts": 1,
        "messages": 1,
        "jobs": 1,
        "suppressions": 0,
    }


def test_every_message_of_a_batch_is_recorded_and_each_type_understood(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    whatsapp.add_media("media-1", b"%PDF-1.7 price list", "application/pdf")
    whatsapp.add_media("media-2", b"\x89PNG fake", "image/png")
    items = [
        whatsapp.inbound_item(WA_ID, "plain text"),
        whatsapp.inbound_item(WA_ID, "Book demo", type="button", reply_id="BOOK_DEMO"),
        whatsapp.inbound_item(WA_ID, "Yes", type="interactive_button", reply_id="demo_yes"),
        whatsapp.inbound_item(WA_ID, "Basic", type="interactive_list", reply_id="plan_basic"),
        whatsapp.inbound_item(
            WA_ID, None, type="document", media_id="media-1", filename="prices.pdf"
        ),
        whatsapp.inbound_item(WA_ID, "my car", type="image", media_id="media-2"),
        whatsapp.inbound_item(WA_ID, "Office", type="location"),
        whatsapp.inbound_item(WA_ID, None, type="contacts"),
        whatsapp.inbound_item(WA_ID, None, type="unsupported"),
        whatsapp.inbound_item("4915112345678", "Hallo", name="Jonas"),
    ]
    response = whatsapp.deliver_batch(items, items_per_change=3, changes_per_entry=2)
    assert response.status_code == 200
    messages = inbound_messages(session_factory)
    assert len(messages) == 10
    by_type = {m.meta["type"]: m for m in messages}
    assert by_type["button"].text == "Book demo"
    assert by_type["button"].meta["payload"] == "BOOK_DEMO"
    assert by_type["interactive"].meta["reply_id"] in {"demo_yes", "plan_basic"}
    assert by_type["document"].meta["media"]["id"] == "media-1"
    assert by_type["document"].meta["media"]["mime_type"] == "application/pdf"
    assert by_type["image"].text == "[image] my car"
    assert by_type["location"].text.startswith("[location]")
    assert by_type["contacts"].text.startswith("[contact]")
    assert by_type["unsupported"].text == "[unsupported message]"
    assert counts(session_factory)["leads"] == 2


def test_a_thousand_items_in_one_delivery(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    items = [whatsapp.inbound_item(f"1631555{i:04d}", f"message {i}") for i in range(1000)]
    response = whatsapp.deliver_batch(items, items_per_change=10, changes_per_entry=10)
    assert response.status_code == 200
    assert counts(session_factory)["messages"] == 1000


def test_an_unknown_number_is_answered_200_and_not_processed(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    item = whatsapp.inbound_item(WA_ID, "hello")
    envelope = whatsapp.envelope([item])
    envelope["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999999999"
    body = json.dumps(envelope, separators=(",", ":")).encode()
    assert whatsapp.deliver_raw(body).status_code == 200
    assert counts(session_factory)["messages"] == 0


def test_a_number_of_company_b_never_touches_company_a(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    globex = make_tenant(session_factory, "Globex")
    whatsapp.add_phone_number("200000000000001", waba_id="200000000000099")
    connected = connect_number(
        client, globex, phone_number_id="200000000000001", waba_id="200000000000099"
    )
    assert connected.status_code == 201, connected.text
    item = whatsapp.inbound_item(WA_ID, "hello Globex")
    envelope = whatsapp.envelope([item])
    envelope["entry"][0]["id"] = "200000000000099"
    envelope["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "200000000000001"
    assert whatsapp.deliver_raw(json.dumps(envelope).encode()).status_code == 200
    assert client.get("/leads", headers=acme.agent).json()["total"] == 0
    [lead] = client.get("/leads", headers=globex.agent).json()["items"]
    assert lead["contacts"][0]["value"] == f"+{WA_ID}"
    # the same lead phone writing to Acme's number is Acme's own, separate lead
    assert whatsapp.deliver_inbound(WA_ID, "hello Acme").status_code == 200
    assert client.get("/leads", headers=acme.agent).json()["total"] == 1
    assert client.get("/leads", headers=globex.agent).json()["total"] == 1


def test_connecting_a_number_of_another_company_is_409(
    whatsapp: FakeMetaGraph, client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    globex = make_tenant(session_factory, "Globex")
    # A token Meta refuses proves nothing: 422, and nothing about the number is told.
    guessed = connect_number(client, globex, access_token="EAAG-stolen-token", waba_id=None)
    assert guessed.status_code == 422
    assert guessed.json()["error"] == "whatsapp_token_refused"
    # Even a token that may use the number does not take it from the company that has it.
    response = connect_number(client, globex, waba_id=None)
    assert response.status_code == 409
    assert response.json()["error"] == "channel_account_taken"
    assert client.get("/channels/accounts", headers=globex.admin).json() == []


def test_far_past_future_and_garbage_timestamps_are_never_a_500(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    items = [
        whatsapp.inbound_item(WA_ID, "from 1970", timestamp=1),
        whatsapp.inbound_item(WA_ID, "from 2099", timestamp=4_070_908_800),
        whatsapp.inbound_item(WA_ID, "garbage"),
        whatsapp.inbound_item(WA_ID, "huge"),
    ]
    envelope = whatsapp.envelope(items, items_per_change=4)
    messages_sent = envelope["entry"][0]["changes"][0]["value"]["messages"]
    messages_sent[2]["timestamp"] = "soon"
    messages_sent[3]["timestamp"] = "9" * 40
    assert whatsapp.deliver_raw(json.dumps(envelope).encode()).status_code == 200
    messages = inbound_messages(session_factory)
    assert len(messages) == 4
    for message in messages:
        assert message.received_at is not None
        assert message.received_at <= clock.now() + timedelta(minutes=10)


def test_unknown_fields_types_and_shapes_are_ignored_with_200(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    odd_bodies = [
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": "not a list"},
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "account_update", "value": {}}]}],
        },
        {
            "entry": [
                {
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": PHONE_NUMBER_ID},
                                "messages": [{"id": None}],
                                "statuses": [{"id": "wamid.nobody", "status": "read"}],
                            },
                        }
                    ]
                }
            ]
        },
        [1, 2, 3],
    ]
    for body in odd_bodies:
        response = whatsapp.deliver_raw(json.dumps(body).encode())
        assert response.status_code == 200, body
    assert whatsapp.deliver_batch([whatsapp.error_item(130429)]).status_code == 200
    assert counts(session_factory)["messages"] == 0


# --- preferences and templates ---------------------------------------------------------------


def test_user_preferences_set_marketing_consent(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    whatsapp.deliver_inbound(WA_ID, "hi")
    assert whatsapp.deliver_user_preference(WA_ID, "stop").status_code == 200
    assert whatsapp.redeliver().status_code == 200
    with session_factory() as session:
        contact = session.scalars(select(LeadContact)).one()
        assert contact.marketing_consent == "stop"
    clock.advance(minutes=5)
    whatsapp.deliver_user_preference(WA_ID, "resume")
    with session_factory() as session:
        assert session.scalars(select(LeadContact)).one().marketing_consent == "resume"
        changes = session.scalars(
            select(Event.data).where(Event.type == "MarketingConsentChanged")
        ).all()
    assert [c["value"] for c in changes] == ["stop", "resume"]


def test_template_status_updates_move_the_template(
    whatsapp: FakeMetaGraph, client: TestClient, acme: Tenant
) -> None:
    created = client.post(
        "/templates",
        json={"name": "lead_followup", "language": "en_US", "body": "Hi {{1}}"},
        headers=acme.admin,
    ).json()
    assert whatsapp.deliver_template_status("lead_followup", "en_US", "APPROVED").status_code == 200
    assert (
        client.get(f"/templates/{created['id']}", headers=acme.agent).json()["status"] == "approved"
    )
    whatsapp.deliver_template_status("lead_followup", "en_US", "PAUSED", reason="LOW_QUALITY")
    paused = client.get(f"/templates/{created['id']}", headers=acme.agent).json()
    assert (paused["status"], paused["rejection_reason"]) == ("paused", "LOW_QUALITY")


@pytest.mark.parametrize("value", ["stop"])
def test_preference_of_an_unknown_user_changes_nothing(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session], value: str
) -> None:
    assert whatsapp.deliver_user_preference("19999999999", "stop").status_code == 200
    assert counts(session_factory)["lead_contacts"] == 0


def test_wamid_uniqueness_is_per_company_and_channel(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    whatsapp.deliver_inbound(WA_ID, "one", wamid="wamid.X")
    whatsapp.deliver_inbound("16315559999", "two", wamid="wamid.X")  # Meta never does this
    assert Counter(m.external_id for m in inbound_messages(session_factory)) == {"wamid.X": 1}
    _ = (datetime.now(UTC), WABA_ID)


def test_a_burst_of_deliveries_is_answered_not_wedged(
    whatsapp: FakeMetaGraph, live_server: str, session_factory: sessionmaker[Session]
) -> None:
    """More deliveries in flight than the server has threads and connections (Meta sends in
    bursts). Each delivery's unit of work holds a connection inside one thread-pool call, so
    none waits for a thread while holding a connection: every delivery is answered 200 and
    stored, none times out into a 503."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.fakes.meta_graph import serialise_webhook

    bodies = []
    for n in range(120):
        item = whatsapp.inbound_item(f"1631555{n:04d}", f"hello {n}", wamid=f"wamid.BURST{n}")
        body = serialise_webhook(whatsapp.envelope([item]))
        bodies.append((body, whatsapp._headers(body, whatsapp.sign(body))))

    def post(signed: tuple[bytes, dict[str, str]]) -> int:
        # A client per request: one httpx client shared by 80 threads once failed with EBADF
        # inside httpcore's pool, a fault of the test's client, not of the server.
        with httpx.Client(base_url=live_server, timeout=60) as http:
            return http.post("/webhooks/whatsapp", content=signed[0], headers=signed[1]).status_code

    with ThreadPoolExecutor(max_workers=80) as pool:
        statuses = list(pool.map(post, bodies))
    assert statuses == [200] * len(bodies)
    assert len(inbound_messages(session_factory)) == len(bodies)


# --- messages the database cannot store as they are (docs/reliability.md P1) ------------------


def inbound_events(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.type == "InboundMessageReceived")
            )
            or 0
        )


def test_a_batch_with_poison_messages_is_200_and_keeps_every_message_cleaned(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    """NUL characters and lone surrogates (which PostgreSQL refuses) and ids over 255
    characters used to fail the whole delivery with a 500: Meta redelivered it, good messages
    and all, for days. Each message now stands alone and is kept, cleaned."""
    long_wamid = "wamid." + "HBgLMTU1NTEyMzQ1Njc4FQIAEhggQUJDREVGMDEy" * 8  # 326 characters
    huge_wamid = "wamid." + "x" * 5000  # longer than a unique index entry may be
    items = [
        whatsapp.inbound_item(WA_ID, "first, fine", wamid="wamid.GOOD1"),
        whatsapp.inbound_item(WA_ID, "price\u0000list", wamid="wamid.NUL"),
        whatsapp.inbound_item(WA_ID, "half \ud800 a pair, \ud83d\ude00 whole", wamid="wamid.SUR"),
        whatsapp.inbound_item("4915112345678", "Hallo", name="Jo\u0000nas \udfff", wamid="w.NAME"),
        whatsapp.inbound_item(WA_ID, "a long id", wamid=long_wamid),
        whatsapp.inbound_item(WA_ID, "a huge id", wamid=huge_wamid),
        whatsapp.inbound_item(
            WA_ID, "caption\u0000", type="image", media_id="m-1", wamid="wamid.META"
        ),
        whatsapp.inbound_item(WA_ID, "\u0000", wamid="wamid.ONLYNUL"),
        whatsapp.inbound_item(WA_ID, "last, fine", wamid="wamid.GOOD2"),
    ]
    response = whatsapp.deliver_batch(items, items_per_change=3)
    assert response.status_code == 200, response.text
    by_id = {m.external_id: m for m in inbound_messages(session_factory)}
    assert len(by_id) == len(items)
    assert by_id["wamid.GOOD1"].text == "first, fine"
    assert by_id["wamid.GOOD2"].text == "last, fine"
    assert by_id["wamid.NUL"].text == "pricelist"
    assert by_id["wamid.SUR"].text == "half \ufffd a pair, \U0001f600 whole"
    assert by_id["wamid.META"].text == "[image] caption"
    assert by_id["wamid.META"].meta["media"]["caption"] == "caption"
    assert by_id["wamid.ONLYNUL"].text == "[text]"
    assert by_id[long_wamid].text == "a long id"  # kept whole
    hashed = f"sha256:{hashlib.sha256(huge_wamid.encode()).hexdigest()}"
    assert by_id[hashed].text == "a huge id"
    assert by_id[hashed].meta["external_id"] == huge_wamid
    leads = {
        lead["contacts"][0]["value"]: lead
        for lead in client.get("/leads", headers=acme.agent).json()["items"]
    }
    assert leads["+4915112345678"]["name"] == "Jonas \ufffd"
    before = counts(session_factory)
    assert before["jobs"] == len(items)
    assert inbound_events(session_factory) == len(items)

    # Meta's redelivery of the same bytes stores nothing new: the cleaned ids are found again.
    assert whatsapp.redeliver().status_code == 200
    assert counts(session_factory) == before
    assert inbound_events(session_factory) == len(items)


def test_a_delivery_of_one_poison_message_is_200_and_kept_once(
    whatsapp: FakeMetaGraph, session_factory: sessionmaker[Session]
) -> None:
    """The single-message delivery takes no savepoint: the same cleaning applies."""
    long_wamid = "wamid." + "Z" * 400
    for body, wamid in (("nul\u0000here", "wamid.ONE"), ("lone \udbff", long_wamid)):
        assert whatsapp.deliver_inbound(WA_ID, body, wamid=wamid).status_code == 200
        assert whatsapp.redeliver().status_code == 200
    messages = inbound_messages(session_factory)
    assert [(m.external_id, m.text) for m in messages] == [
        ("wamid.ONE", "nulhere"),
        (long_wamid, "lone \ufffd"),
    ]
    assert counts(session_factory)["jobs"] == 2


@pytest.fixture
def refusing_trigger(engine: Engine, backend: str) -> Iterator[str]:
    """A database that refuses one row: the text 'poison row' in messages. Any unexpected
    error of the database on one message, made real (the database is never mocked)."""
    if backend == "sqlite":
        create = [
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages "
            "WHEN NEW.text = 'poison row' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS refuse_poison"]
    else:
        create = [
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.text = 'poison row' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS refuse_poison ON messages",
            "DROP FUNCTION IF EXISTS refuse_poison()",
        ]
    with engine.begin() as connection:
        for statement in create:
            connection.execute(text(statement))
    try:
        yield "poison row"
    finally:
        with engine.begin() as connection:
            for statement in drop:
                connection.execute(text(statement))


def test_a_row_the_database_refuses_never_costs_the_others(
    whatsapp: FakeMetaGraph,
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    refusing_trigger: str,
) -> None:
    items = [
        whatsapp.inbound_item(WA_ID, "before", wamid="wamid.B"),
        whatsapp.inbound_item("4915112345678", refusing_trigger, wamid="wamid.P"),
        whatsapp.inbound_item(WA_ID, "after", wamid="wamid.A"),
    ]
    assert whatsapp.deliver_batch(items, items_per_change=3).status_code == 200
    assert [m.text for m in inbound_messages(session_factory)] == ["before", "after"]
    # the refused message's new lead went with it: nothing half-written
    leads = client.get("/leads", headers=acme.agent).json()["items"]
    assert [lead["contacts"][0]["value"] for lead in leads] == [f"+{WA_ID}"]
    assert counts(session_factory)["jobs"] == 2
    # alone in its delivery, too (no savepoint there): 200, nothing of it kept
    alone = whatsapp.deliver_inbound("4915112345678", refusing_trigger, wamid="wamid.P2")
    assert alone.status_code == 200
    assert counts(session_factory)["leads"] == 1
    # and the next delivery is served as ever
    assert whatsapp.deliver_inbound(WA_ID, "still here", wamid="wamid.N").status_code == 200
    assert len(inbound_messages(session_factory)) == 3


# --- senders the phone library does not know (docs/reliability.md P2) -------------------------


def test_a_wa_id_of_a_range_the_phone_library_does_not_know_is_kept(
    whatsapp: FakeMetaGraph, client: TestClient, acme: Tenant
) -> None:
    """447700900123 is a possible UK mobile number that phonenumbers calls invalid (07700
    900xxx). Meta delivered it, so it is the lead's number: once dropped with a warning."""
    assert whatsapp.deliver_inbound("447700900123", "hello from London").status_code == 200
    [lead] = client.get("/leads", headers=acme.agent).json()["items"]
    assert lead["contacts"][0]["value"] == "+447700900123"
    [message] = client.get(f"/leads/{lead['id']}/messages", headers=acme.agent).json()["items"]
    assert message["text"] == "hello from London"
    # the second message finds the same lead
    assert whatsapp.deliver_inbound("447700900123", "are you there?").status_code == 200
    assert client.get("/leads", headers=acme.agent).json()["total"] == 1
    # not a possible number at all (too short for +44): still not a lead
    assert whatsapp.deliver_inbound("44770", "short").status_code == 200
    assert client.get("/leads", headers=acme.agent).json()["total"] == 1


def test_numbers_people_type_keep_the_strict_check(
    whatsapp: FakeMetaGraph, client: TestClient, acme: Tenant
) -> None:
    typed = post_inbound(client, acme, phone="+447700900123")
    assert typed.status_code == 422, typed.text
    assert typed.json()["error"] == "invalid_contact"
    assert typed.json()["field"] == "from"
    lead = client.post(
        "/leads",
        json={"name": "Typed", "contacts": [{"channel": "wa_cloud", "value": "+447700900123"}]},
        headers=acme.agent,
    )
    assert lead.status_code == 422, lead.text
    assert "not a valid phone number" in lead.json()["detail"]
    assert client.get("/leads", headers=acme.agent).json()["total"] == 0
