"""The sandbox channel through its JSON endpoints: each browser is its own lead by a signed
cookie, replies go through the same jobs and router as every channel and are only stored,
and the page is off in production unless the company turns it on."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Lead
from shvya.events.models import Event
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.tenancy.models import Company
from tests.support import T0, FakeClock, Tenant
from tests.web.support import answer_on_sandbox, sandbox_reply_to

COOKIE = "shvya_sandbox"
PAGE = Path(__file__).resolve().parents[2] / "src" / "shvya" / "web" / "static" / "sandbox.html"
PRODUCTION_KEY = "a-production-secret-key-of-40-characters"


def say(client: TestClient, text: str) -> httpx.Response:
    response: httpx.Response = client.post("/sandbox/messages", json={"text": text})
    assert response.status_code == 201, response.text
    return response


def chat(client: TestClient) -> list[tuple[str, str, str]]:
    response = client.get("/sandbox/messages")
    assert response.status_code == 200, response.text
    return [(m["direction"], m["text"], m["status"]) for m in response.json()["messages"]]


def set_cookie(response: httpx.Response) -> Morsel[str]:
    """The sandbox cookie as the response set it, attributes and all."""
    jar = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar[COOKIE]


def visitor_of(client: TestClient) -> str:
    return str(client.cookies[COOKIE]).split(".")[0]


def leads_of(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    response = client.get("/leads", headers=tenant.agent)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def sandbox_visitors(client: TestClient, tenant: Tenant) -> list[str]:
    return sorted(
        c["value"]
        for lead in leads_of(client, tenant)
        for c in lead["contacts"]
        if c["channel"] == "sandbox"
    )


def count(factory: sessionmaker[Session], model: type[Any]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def app_with(database_url: str, engine: Engine, clock: FakeClock, **settings: Any) -> FastAPI:
    return create_app(Settings(database_url=database_url, **settings), engine=engine, clock=clock)


# --- one lead per browser -----------------------------------------------------------------------


def test_a_first_message_gets_a_signed_cookie_and_a_sandbox_lead_in_the_default_company(
    client: TestClient,
    default_company: Tenant,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    first = say(client, "Hi, what does the pro plan cost?")
    assert {k: first.json()[k] for k in ("direction", "text", "status")} == {
        "direction": "in",
        "text": "Hi, what does the pro plan cost?",
        "status": "received",
    }
    cookie = set_cookie(first)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == 30 * 24 * 3600
    assert not cookie["secure"]  # plain http on a development machine
    visitor, mac = cookie.value.split(".")
    assert visitor.startswith("visitor-")
    assert len(mac) == 32

    [lead] = leads_of(client, default_company)
    assert [(c["channel"], c["value"]) for c in lead["contacts"]] == [("sandbox", visitor)]
    assert lead["name"] == "Sandbox visitor"
    assert leads_of(client, acme) == []
    with session_factory() as session:
        [job] = session.scalars(select(Job)).all()
    assert (job.type, job.status) == ("ai.engage", "queued")
    assert (job.company_id, str(job.lead_id)) == (default_company.company_id, lead["id"])
    assert job.payload["message_id"] == first.json()["id"]

    clock.advance(seconds=5)
    second = say(client, "And is there a free trial?")
    assert "set-cookie" not in second.headers  # the browser keeps its lead
    body = client.get("/sandbox/messages").json()
    assert body["company"] == "Default"
    assert [(m["direction"], m["text"], m["status"]) for m in body["messages"]] == [
        ("in", "Hi, what does the pro plan cost?", "received"),
        ("in", "And is there a free trial?", "received"),
    ]
    times = [datetime.fromisoformat(m["created_at"]) for m in body["messages"]]
    assert times == [T0, T0 + timedelta(seconds=5)]
    # The company sees the same conversation as any lead's.
    listed = client.get(f"/leads/{lead['id']}/messages", headers=default_company.agent).json()
    assert [(m["channel"], m["text"]) for m in listed["items"]] == [
        ("sandbox", "Hi, what does the pro plan cost?"),
        ("sandbox", "And is there a free trial?"),
    ]


def test_each_browser_is_its_own_lead_and_reads_only_its_own_chat(
    app: FastAPI, client: TestClient, default_company: Tenant
) -> None:
    with TestClient(app) as other:
        say(client, "I am the first browser")
        say(other, "I am the second browser")
        assert visitor_of(client) != visitor_of(other)
        assert chat(client) == [("in", "I am the first browser", "received")]
        assert chat(other) == [("in", "I am the second browser", "received")]
        assert sandbox_visitors(client, default_company) == sorted(
            [visitor_of(client), visitor_of(other)]
        )
    with TestClient(app) as stranger:
        response = stranger.get("/sandbox/messages")
        assert response.json() == {"company": "Default", "messages": []}
        assert "set-cookie" not in response.headers  # reading starts no lead


def _flip(hex_text: str) -> str:
    """The same text with its last hex digit changed."""
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


# Each forgery gets (victim's cookie, attacker's own valid cookie) and returns the cookie sent.
FORGERIES: dict[str, Callable[[str, str], str]] = {
    "victim's id with the attacker's own MAC": lambda victim, own: (
        f"{victim.split('.')[0]}.{own.split('.')[1]}"
    ),
    "victim's id with its MAC changed": lambda victim, own: (
        f"{victim.split('.')[0]}.{_flip(victim.split('.')[1])}"
    ),
    "visitor id changed, victim's MAC kept": lambda victim, own: (
        f"{_flip(victim.split('.')[0])}.{victim.split('.')[1]}"
    ),
    "victim's MAC in capitals": lambda victim, own: (
        f"{victim.split('.')[0]}.{victim.split('.')[1].upper()}"
    ),
    "victim's id without a MAC": lambda victim, own: victim.split(".")[0],
    "victim's cookie with more after it": lambda victim, own: f"{victim}.x",
    "victim's id with a non-ASCII character": lambda victim, own: (
        f"{victim.split('.')[0]}\u00e9.{victim.split('.')[1]}"
    ),
    "empty": lambda victim, own: "",
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_tampered_cookie_counts_as_no_cookie(
    forge: Callable[[str, str], str],
    app: FastAPI,
    client: TestClient,
    default_company: Tenant,
) -> None:
    say(client, "my private question")
    victim = client.cookies[COOKIE]
    with TestClient(app) as attacker:
        say(attacker, "hello")
        forged = forge(victim, attacker.cookies[COOKIE])
    # Sent as raw bytes: a client other than a browser may put anything in the header.
    forged_header = {"Cookie": f"{COOKIE}={forged}".encode()}
    with TestClient(app) as intruder:
        response = intruder.get("/sandbox/messages", headers=forged_header)
        assert response.json() == {"company": "Default", "messages": []}

        posted = intruder.post(
            "/sandbox/messages", json={"text": "what did they ask?"}, headers=forged_header
        )
        assert posted.status_code == 201, posted.text
        fresh = set_cookie(posted).value
        assert fresh.split(".")[0] not in {victim.split(".")[0], forged.split(".")[0]}
        assert chat(intruder) == [("in", "what did they ask?", "received")]
    assert chat(client) == [("in", "my private question", "received")]
    assert len(sandbox_visitors(client, default_company)) == 3  # victim, attacker, intruder


# --- replies ------------------------------------------------------------------------------------


def test_the_reply_goes_through_the_job_and_the_router_and_is_only_stored(
    client: TestClient,
    default_company: Tenant,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    say(client, "What does the pro plan cost?")
    worker = EmbeddedWorker(
        engine,
        handlers={**default_handlers(), "ai.engage": answer_on_sandbox},
        clock=clock,
        settings=settings,
    )
    clock.advance(seconds=3)  # the stage's quiet period: the reply is due
    # A tripwire on every socket this process opens while the job runs (libpq's connections
    # to PostgreSQL are made in C and pass beside it): the sandbox sends nothing anywhere.
    attempts: list[object] = []

    def no_network(_sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("the sandbox channel must not use the network")

    with monkeypatch.context() as patched:
        patched.setattr(socket.socket, "connect", no_network)
        patched.setattr(socket.socket, "connect_ex", no_network)
        assert worker.run_until_idle() == 1
    assert attempts == []

    reply = sandbox_reply_to("What does the pro plan cost?")
    assert chat(client) == [
        ("in", "What does the pro plan cost?", "received"),
        ("out", reply, "sent"),
    ]
    with session_factory() as session:
        job = session.scalars(select(Job)).one()
        sent = session.scalars(select(Message).where(Message.direction == "out")).one()
        event = session.scalars(select(Event).where(Event.type == "OutboundMessageSent")).one()
    assert (job.status, job.result["outcome"] if job.result else None) == ("completed", "sent")
    assert (sent.channel, sent.channel_account_id) == ("sandbox", None)
    assert (sent.external_id or "").startswith("sandbox.")
    assert event.data["channel"] == "sandbox"
    assert event.data["external_id"] == sent.external_id


def test_a_long_chat_shows_its_latest_messages_oldest_first(
    client: TestClient, default_company: Tenant, clock: FakeClock
) -> None:
    for text in ("one", "two", "three"):
        say(client, text)
        clock.advance(seconds=1)
    latest = client.get("/sandbox/messages", params={"limit": 2}).json()["messages"]
    assert [m["text"] for m in latest] == ["two", "three"]


# --- on and off ---------------------------------------------------------------------------------


def _answers(browser: TestClient) -> list[httpx.Response]:
    return [
        browser.get("/"),
        browser.get("/sandbox/messages"),
        browser.post("/sandbox/messages", json={"text": "anyone there?"}),
    ]


@pytest.mark.parametrize(
    ("environment", "is_on"),
    [
        ({}, True),
        ({"SHVYA_SANDBOX_PAGE": "false"}, False),
        ({"SHVYA_ENV": "production", "SHVYA_SECRET_KEY": PRODUCTION_KEY}, False),
        (
            {
                "SHVYA_ENV": "production",
                "SHVYA_SECRET_KEY": PRODUCTION_KEY,
                "SHVYA_SANDBOX_PAGE": "true",
            },
            True,
        ),
    ],
    ids=["development", "development-turned-off", "production", "production-turned-on"],
)
def test_the_server_setting_turns_every_route_on_or_off(
    environment: dict[str, str],
    is_on: bool,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    engine: Engine,
    clock: FakeClock,
    default_company: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    app = app_with(database_url, engine, clock)  # the rest of Settings from the environment
    with TestClient(app, base_url="https://testserver") as browser:
        answers = _answers(browser)
    if is_on:
        assert [a.status_code for a in answers] == [200, 200, 201]
        assert count(session_factory, Message) == 1
        return
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "sandbox_off"
        assert "set-cookie" not in answer.headers
    assert count(session_factory, Message) == 0
    assert count(session_factory, Lead) == 0


def test_in_production_the_company_turns_it_on(
    database_url: str,
    engine: Engine,
    clock: FakeClock,
    default_company: Tenant,
    acme: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    app = app_with(database_url, engine, clock, env="production", secret_key=PRODUCTION_KEY)

    def turn_on(tenant: Tenant) -> None:
        with session_factory() as session:
            company = session.get_one(Company, tenant.company_id)
            company.settings = {**company.settings, "sandbox_page": True}
            session.commit()

    with TestClient(app, base_url="https://testserver") as browser:
        turn_on(acme)  # another company's choice does not open the Default company's page
        assert [a.status_code for a in _answers(browser)] == [404, 404, 404]
        turn_on(default_company)
        page, _, posted = _answers(browser)
        assert (page.status_code, posted.status_code) == (200, 201)
        assert set_cookie(posted)["secure"] is True  # https only in production
        assert chat(browser) == [("in", "anyone there?", "received")]


def test_without_any_company_the_page_is_off(client: TestClient) -> None:
    for answer in _answers(client):
        assert answer.status_code == 404
        assert answer.json() == {
            "error": "sandbox_off",
            "detail": "the sandbox page has no company to chat with",
        }


def test_renaming_the_default_company_keeps_the_page(
    client: TestClient, default_company: Tenant, acme: Tenant
) -> None:
    """The page chats with the installation's default company, not with a name."""
    renamed = client.patch(
        "/company", json={"name": "Sunrise Motors"}, headers=default_company.admin
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Sunrise Motors"

    assert client.get("/").status_code == 200
    say(client, "still there?")
    chatted = client.get("/sandbox/messages")
    assert chatted.status_code == 200, chatted.text
    assert chatted.json()["company"] == "Sunrise Motors"
    assert sandbox_visitors(client, default_company) == [visitor_of(client)]
    assert leads_of(client, acme) == []


def test_the_sandbox_company_setting_names_another_company(
    database_url: str, engine: Engine, clock: FakeClock, default_company: Tenant, acme: Tenant
) -> None:
    app = app_with(database_url, engine, clock, sandbox_company="Acme")
    with TestClient(app) as browser:
        say(browser, "hello Acme")
        assert browser.get("/sandbox/messages").json()["company"] == "Acme"
        assert sandbox_visitors(browser, acme) == [visitor_of(browser)]
        assert leads_of(browser, default_company) == []


# --- what a lead types ---------------------------------------------------------------------------


def test_what_a_lead_types_is_stored_and_returned_verbatim(
    client: TestClient, default_company: Tenant
) -> None:
    text = "<script>alert(1)</script>\n  <img src=x onerror=alert(2)> & \"q\" 'é' ☃ 🙂  "
    posted = say(client, text)
    assert posted.json()["text"] == text
    response = client.get("/sandbox/messages")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["messages"][0]["text"] == text
    [lead] = leads_of(client, default_company)
    stored = client.get(f"/leads/{lead['id']}/messages", headers=default_company.agent).json()
    assert stored["items"][0]["text"] == text


def test_the_page_is_the_static_html_with_a_content_security_policy(
    client: TestClient, default_company: Tenant
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == PAGE.read_text("utf-8")
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    policy = {d[0]: d[1:] for d in directives if d}
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in response.headers
    # No inline script or style (the policy would block them); the script is served beside.
    assert "<style>" not in response.text
    assert "<script>" not in response.text
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    script = client.get("/static/sandbox.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    # The page puts what a lead typed into the DOM as text only.
    assert "textContent" in script.text
    assert "innerHTML" not in script.text
    assert client.get("/static/sandbox.css").status_code == 200


def test_blank_messages_and_floods_are_refused(
    client: TestClient, default_company: Tenant, session_factory: sessionmaker[Session]
) -> None:
    blank = client.post("/sandbox/messages", json={"text": "  \n "})
    assert blank.status_code == 422
    statuses = [
        client.post("/sandbox/messages", json={"text": f"message {i}"}).status_code
        for i in range(31)
    ]
    assert statuses == [201] * 30 + [429]
    limited = client.post("/sandbox/messages", json={"text": "one more"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


BAD_BODIES: dict[str, object] = {
    "empty text": {"text": ""},
    "4097 characters": {"text": "x" * 4097},
    "a NUL character": {"text": "hello\x00there"},
    "a lone surrogate": {"text": "hello \ud800"},
    "an unknown field": {"text": "hello", "lead_id": str(uuid.uuid4())},
    "no text": {},
    "text that is not a string": {"text": 42},
    "not an object": ["hello"],
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_is_refused_and_nothing_is_stored(
    body: object,
    client: TestClient,
    default_company: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    response = client.post(
        "/sandbox/messages",
        content=json.dumps(body).encode(),  # escapes NUL and surrogates as JSON does
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert "set-cookie" not in response.headers
    assert [count(session_factory, m) for m in (Message, Lead, Job)] == [0, 0, 0]


def test_a_message_of_4096_characters_is_the_longest_taken(
    client: TestClient, default_company: Tenant
) -> None:
    say(client, "x" * 4096)
    assert chat(client) == [("in", "x" * 4096, "received")]
