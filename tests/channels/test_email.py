"""Email out through a real SMTP server on 127.0.0.1 (tests/fakes/smtp_sink.py): what the
server receives is asserted byte for byte where it matters (docs/email.md): List-Unsubscribe
with its https one-click URL and mailto, List-Unsubscribe-Post, SHVYA's Message-ID, both
parts with the unsubscribe link, and nothing at all for a suppressed address. The clock is
10:00 in the lead's zone (UTC: no timezone, no phone), inside any quiet-hours window."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.channels.email import (
    EMAIL_POLICY,
    SmtpTransport,
    compose_email,
    read_unsubscribe_token,
    unsubscribe_token,
)
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Suppression
from shvya.db.phases import commit_between_phases, run_phases
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.tenancy.models import ChannelAccount
from tests.fakes.meta_graph import FakeMetaGraph
from tests.fakes.smtp_sink import SmtpSink
from tests.support import T0, Tenant

# SMTP's bytes are what these prove: the same on either database (the send-once rows are the
# router's, proved on both by tests/channels/test_sending.py).
pytestmark = pytest.mark.one_database

PUBLIC_URL = "https://shvya.example.com"
LEAD_EMAIL = "asha@example.org"
FROM = "sales@acme.example"
SMTP_USER, SMTP_PASS = "acme-mailer", "s3cret-smtp-pass"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(users={SMTP_USER: SMTP_PASS}) as server:
        yield server
    channels.close_email_transports()


@pytest.fixture
def settings(database_url: str, fake_meta: FakeMetaGraph) -> Settings:
    from tests.channels.conftest import fake_meta_settings

    return Settings(
        database_url=database_url, public_url=PUBLIC_URL, **fake_meta_settings(fake_meta)
    )


def connect_email(
    client: TestClient, tenant: Tenant, sink: SmtpSink, **overrides: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "provider": "smtp",
        "from_email": FROM,
        "from_name": "Acme Sales",
        "host": "127.0.0.1",
        "port": sink.port,
        "security": "none",
        "username": SMTP_USER,
        "password": SMTP_PASS,
        **overrides,
    }
    return client.post("/channels/email", json=body, headers=tenant.admin)


def new_lead(client: TestClient, tenant: Tenant, email: str = LEAD_EMAIL) -> str:
    response = client.post(
        "/leads",
        json={"name": "Asha", "contacts": [{"channel": "email", "value": email}]},
        headers=tenant.admin,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def send(client: TestClient, tenant: Tenant, lead_id: str, **body: Any) -> httpx.Response:
    payload = {"channel": "email", "subject": "Your quote", "text": "Hello Asha,\n\nHere it is."}
    return client.post(f"/leads/{lead_id}/messages", json={**payload, **body}, headers=tenant.admin)


def unfolded(message_bytes: bytes) -> str:
    return message_bytes.decode().replace("\r\n ", " ")


def test_email_is_sent_with_one_click_unsubscribe_both_parts_and_message_id(
    client: TestClient,
    acme: Tenant,
    sink: SmtpSink,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    connected = connect_email(client, acme, sink)
    assert connected.status_code == 201, connected.text
    account = connected.json()
    assert account["external_id"] == FROM and SMTP_PASS not in connected.text
    assert account["config"]["host"] == "127.0.0.1"
    lead_id = new_lead(client, acme)

    queued = send(client, acme, lead_id, html="<html><body><p>Hello <b>Asha</b></p></body></html>")
    assert queued.status_code == 202, queued.text
    assert queued.json()["verdict"]["decision"] == "send_now"
    make_worker().run_until_idle()

    [received] = sink.to(LEAD_EMAIL)
    assert received.sender == FROM
    raw = received.data
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    text = unfolded(raw)
    url = re.search(r"^List-Unsubscribe: <(https://[^>]+)>, <(mailto:[^>]+)>\r$", text, re.M)
    assert url is not None, text
    assert url.group(1).startswith(f"{PUBLIC_URL}/unsubscribe/")
    assert url.group(2).startswith(f"mailto:{FROM}")
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in text
    message = received.message
    assert message["Subject"] == "Your quote"
    assert message["From"] == f"Acme Sales <{FROM}>"
    assert message["To"] == LEAD_EMAIL
    message_id = str(message["Message-ID"])
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", message_id)
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert "Here it is." in plain.get_content() and url.group(1) in plain.get_content()
    assert "Hello <b>Asha</b>" in html.get_content()
    assert f'href="{url.group(1)}"' in html.get_content()

    with session_factory() as session:
        row = session.get_one(Message, uuid.UUID(queued.json()["message_id"]))
        assert row.status == "sent"
        assert row.email_message_id == message_id.strip("<>")
        assert row.external_id == "Q000001"  # the server's queue id


def test_without_html_a_minimal_escaped_html_part_is_derived(
    client: TestClient, acme: Tenant, sink: SmtpSink, make_worker: Callable[..., EmbeddedWorker]
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    lead_id = new_lead(client, acme)
    assert send(client, acme, lead_id, text="Price < 5 & more").status_code == 202
    make_worker().run_until_idle()
    [received] = sink.to(LEAD_EMAIL)
    html = received.message.get_body(("html",))
    assert html is not None and "Price &lt; 5 &amp; more" in html.get_content()


def test_an_email_without_subject_is_refused_with_nothing_written(
    client: TestClient, acme: Tenant, sink: SmtpSink, session_factory: sessionmaker[Session]
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    lead_id = new_lead(client, acme)
    response = client.post(
        f"/leads/{lead_id}/messages",
        json={"channel": "email", "text": "no subject"},
        headers=acme.admin,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "subject_required"
    assert "subject" in response.json()["detail"]
    with session_factory() as session:
        assert session.scalars(select(Message)).all() == []


def test_a_suppressed_address_receives_nothing(
    client: TestClient,
    acme: Tenant,
    sink: SmtpSink,
    make_worker: Callable[..., EmbeddedWorker],
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    lead_id = new_lead(client, acme)
    suppressed = client.post(
        "/suppressions",
        json={"channel": "email", "address": LEAD_EMAIL, "reason": "opt_out"},
        headers=acme.admin,
    )
    assert suppressed.status_code == 201, suppressed.text
    response = send(client, acme, lead_id)
    assert response.status_code == 409
    assert response.json()["error"] == "suppressed"
    make_worker().run_until_idle()
    assert sink.received == []


def test_one_connection_is_kept_and_reused_across_sends(
    client: TestClient, acme: Tenant, sink: SmtpSink, make_worker: Callable[..., EmbeddedWorker]
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    verify_connections = sink.connections
    leads = [new_lead(client, acme, f"lead{i}@example.org") for i in range(5)]
    for lead_id in leads:
        assert send(client, acme, lead_id).status_code == 202
    make_worker().run_until_idle()
    assert len(sink.received) == 5
    assert sink.connections - verify_connections == 1
    ids = {r.message["Message-ID"] for r in sink.received}
    assert len(ids) == 5


def test_unsubscribe_link_one_click(
    client: TestClient,
    acme: Tenant,
    sink: SmtpSink,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    lead_id = new_lead(client, acme)
    assert send(client, acme, lead_id).status_code == 202
    make_worker().run_until_idle()
    [received] = sink.to(LEAD_EMAIL)
    found = re.search(r"<https://[^/]+(/unsubscribe/[^>]+)>", unfolded(received.data))
    assert found is not None
    path = found.group(1)

    page = client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert LEAD_EMAIL in page.text
    # What a mail client sends for RFC 8058: no cookies, no login.
    first = client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert first.status_code == 200 and "Unsubscribed" in first.text
    assert "set-cookie" not in first.headers
    with session_factory() as session:
        [row] = session.scalars(select(Suppression)).all()
        assert (row.channel, row.address, row.reason, row.source) == (
            "email",
            LEAD_EMAIL,
            "opt_out",
            "unsubscribe_link",
        )
        opted = session.scalars(select(Event).where(Event.type == "OptedOut")).all()
        assert [e.entity_id for e in opted] == [uuid.UUID(lead_id)]
        events_before = len(session.scalars(select(Event)).all())

    again = client.post(path)
    assert again.status_code == 200
    with session_factory() as session:
        assert len(session.scalars(select(Suppression)).all()) == 1
        assert len(session.scalars(select(Event)).all()) == events_before

    # And the lead gets no more email.
    assert send(client, acme, lead_id).status_code == 409
    make_worker().run_until_idle()
    assert len(sink.to(LEAD_EMAIL)) == 1


def test_a_forged_or_altered_token_is_404(
    client: TestClient, acme: Tenant, settings: Settings
) -> None:
    token = unsubscribe_token(settings, company_id=acme.company_id, address=LEAD_EMAIL)
    assert read_unsubscribe_token(settings, token) is not None
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    other_key = Settings(database_url=settings.database_url, secret_key="x" * 40)
    forged = unsubscribe_token(other_key, company_id=acme.company_id, address=LEAD_EMAIL)
    for bad in (altered, forged, "not-a-token-at-all"):
        assert client.get(f"/unsubscribe/{bad}").status_code == 404
        assert client.post(f"/unsubscribe/{bad}").status_code == 404


def test_smtp_errors_map_to_retry_permanent_and_auth(sink: SmtpSink) -> None:
    def email(to: str) -> Any:
        return compose_email(
            from_address=FROM,
            from_name=None,
            to=to,
            subject="s",
            text="t",
            html=None,
            unsubscribe_url=f"{PUBLIC_URL}/unsubscribe/x",
            unsubscribe_mailto=f"mailto:{FROM}",
        )

    sink.refuse_rcpt["gone@example.org"] = "550 5.1.1 no such user"
    sink.refuse_rcpt["full@example.org"] = "452 4.2.2 mailbox full"
    sink.refuse_data["spam@example.org"] = "554 5.7.1 rejected as spam"
    sink.refuse_data["later@example.org"] = "451 4.3.0 try again later"
    transport = SmtpTransport(
        host="127.0.0.1", port=sink.port, security="none", username=SMTP_USER, password=SMTP_PASS
    )
    try:
        for to, kind in [
            ("gone@example.org", FailureKind.permanent),
            ("full@example.org", FailureKind.retry),
            ("spam@example.org", FailureKind.permanent),
            ("later@example.org", FailureKind.retry),
        ]:
            with pytest.raises(ChannelSendError) as caught:
                transport.send_email(email(to))
            assert caught.value.kind is kind, (to, caught.value)
        # The transport recovers and sends afterwards.
        assert transport.send_email(email("ok@example.org")).external_id.startswith("Q")
    finally:
        transport.close()

    wrong = SmtpTransport(
        host="127.0.0.1", port=sink.port, security="none", username=SMTP_USER, password="nope"
    )
    try:
        with pytest.raises(ChannelSendError) as refused:
            wrong.verify()
        assert refused.value.kind is FailureKind.auth
    finally:
        wrong.close()

    closed = SmtpTransport(host="127.0.0.1", port=1, security="none", username=None, password=None)
    try:
        with pytest.raises(ChannelSendError) as unreachable:
            closed.send_email(email("ok@example.org"))
        assert unreachable.value.kind is FailureKind.retry
    finally:
        closed.close()
    assert [r.recipients for r in sink.received] == [["ok@example.org"]]


def test_a_refused_address_fails_the_message_for_good(
    client: TestClient,
    acme: Tenant,
    sink: SmtpSink,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    sink.refuse_rcpt[LEAD_EMAIL] = "550 5.1.1 no such user"
    lead_id = new_lead(client, acme)
    queued = send(client, acme, lead_id)
    make_worker().run_until_idle()
    with session_factory() as session:
        row = session.get_one(Message, uuid.UUID(queued.json()["message_id"]))
        assert row.status == "failed" and "550" in (row.error or "")


def test_connecting_checks_the_credentials_and_names_the_field(
    client: TestClient, acme: Tenant, sink: SmtpSink, session_factory: sessionmaker[Session]
) -> None:
    wrong = connect_email(client, acme, sink, password="wrong-password")
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["errors"][0]["field"] == "password"
    unknown = connect_email(client, acme, sink, provider="carrier-pigeon")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "provider"
    no_host = connect_email(client, acme, sink, host=None)
    assert no_host.status_code == 422 and no_host.json()["errors"][0]["field"] == "host"
    with session_factory() as session:
        assert session.scalars(select(ChannelAccount)).all() == []
    # Reconnecting replaces the account: the newest from address is the one sent from.
    assert connect_email(client, acme, sink).status_code == 201
    other = connect_email(client, acme, sink, from_email="hello@acme.example", verify=False)
    assert other.status_code == 201
    accounts = client.get("/channels/accounts", headers=acme.admin).json()
    active = [a["external_id"] for a in accounts if a["channel"] == "email" and a["is_active"]]
    assert active == ["hello@acme.example"]
    assert SMTP_PASS not in str(accounts)


def test_another_company_cannot_send_to_or_read_acme_email(
    client: TestClient, acme: Tenant, globex: Tenant, sink: SmtpSink
) -> None:
    assert connect_email(client, acme, sink).status_code == 201
    lead_id = new_lead(client, acme)
    assert send(client, globex, lead_id).status_code == 404
    accounts = client.get("/channels/accounts", headers=globex.admin).json()
    assert all(a["channel"] != "email" for a in accounts)
    # Globex has no mailbox of its own: its lead cannot be emailed from Acme's.
    globex_lead = new_lead(client, globex, "someone@example.org")
    refused = send(client, globex, globex_lead)
    assert refused.status_code == 409 and refused.json()["error"] == "channel_not_connected"
    assert sink.received == []


def test_headers_are_never_refolded() -> None:
    long_url = f"{PUBLIC_URL}/unsubscribe/" + "a" * 300
    email = compose_email(
        from_address=FROM,
        from_name="Acme",
        to=LEAD_EMAIL,
        subject="Hi",
        text="t",
        html=None,
        unsubscribe_url=long_url,
        unsubscribe_mailto=f"mailto:{FROM}",
        in_reply_to="abc@example.org",
        references=["first@example.org"],
        sign=lambda raw: b"DKIM-Signature: v=1; test\r\n",
    )
    assert email.raw.startswith(b"DKIM-Signature: v=1; test\r\n")
    assert f"List-Unsubscribe: <{long_url}>, <mailto:{FROM}>\r\n".encode() in email.raw
    assert b"In-Reply-To: <abc@example.org>\r\n" in email.raw
    assert b"References: <first@example.org> <abc@example.org>\r\n" in email.raw
    assert EMAIL_POLICY.max_line_length == 998


def test_subject_and_html_on_another_channel_are_refused(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    response = client.post(
        "/leads",
        json={"name": "Ravi", "contacts": [{"channel": "sandbox", "value": "+14155550199"}]},
        headers=acme.admin,
    )
    assert response.status_code == 201, response.text
    lead_id = response.json()["id"]
    refused = client.post(
        f"/leads/{lead_id}/messages",
        json={"channel": "sandbox", "subject": "Hi", "text": "hello"},
        headers=acme.admin,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "email_fields_on_other_channel"
    with session_factory() as session:
        assert session.scalars(select(Message)).all() == []


def test_email_from_a_domain_with_a_dkim_key_arrives_signed_over_its_unsubscribe_headers(
    client: TestClient, acme: Tenant, sink: SmtpSink, make_worker: Callable[..., EmbeddedWorker]
) -> None:
    """The router signs with the sending domain's key (docs/email-domains.md): the bytes the
    server received verify against the record SHVYA told the admin to publish, and the
    signature covers List-Unsubscribe and List-Unsubscribe-Post (RFC 8058)."""
    import dkim  # type: ignore[import-untyped]

    domain = client.post(
        "/channels/email/domains", json={"domain": "acme.example"}, headers=acme.admin
    )
    assert domain.status_code == 201, domain.text
    record = domain.json()["dns_record"]
    assert connect_email(client, acme, sink).status_code == 201
    assert send(client, acme, new_lead(client, acme)).status_code == 202
    make_worker().run_until_idle()

    [received] = sink.to(LEAD_EMAIL)
    published = {record["name"].rstrip(".").encode(): record["value"].encode()}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return published.get(name.rstrip(b"."))

    assert dkim.verify(received.data, dnsfunc=dns)
    signature = received.message["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
    signed = signature.split("h=")[1].split(";")[0].lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "message-id"} <= set(signed)
    one_click = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    tampered = received.data.replace(one_click, one_click.replace(b"One", b"Two"))
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_smtp_settings_connect_the_default_mailbox_once_checked_with_the_server(
    settings: Settings, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASS, SMTP_FROM_EMAIL at `shvya serve` (docs/email.md
    5): a password the server refuses connects nothing and names the setting; the right one
    connects the mailbox with the password encrypted; a restart with the same settings asks
    the server nothing and changes nothing; a new password is checked and replaces the old."""

    def connect(sink: SmtpSink, password: str) -> ChannelAccount | None:
        configured = settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": sink.port,
                "smtp_security": "none",
                "smtp_user": "sales",
                "smtp_pass": SecretStr(password),
                "smtp_from_email": "Sales@Example.com",
            }
        )
        with session_factory() as session:
            account = run_phases(
                channels.connect_email_from_environment(
                    session, company_id=acme.company_id, settings=configured, now=T0
                ),
                session=session,
                end_prepare=commit_between_phases(session),
            )
            session.commit()
            return account

    def accounts() -> list[ChannelAccount]:
        with session_factory() as session:
            return list(
                session.scalars(
                    select(ChannelAccount).where(ChannelAccount.company_id == acme.company_id)
                )
            )

    with SmtpSink(users={"sales": "right-password"}) as sink:
        with pytest.raises(channels.EmailCheckFailed) as refused:
            connect(sink, "wrong-password")
        assert "password" in str(refused.value)
        assert accounts() == []
        assert connect(sink, "right-password") is not None
        [account] = accounts()
        assert account.external_id == "sales@example.com"
        assert account.credentials_encrypted
        assert "right-password" not in account.credentials_encrypted
        asked = sink.connections
        assert connect(sink, "right-password") is not None
        assert sink.connections == asked  # connected already with these settings
        assert len(accounts()) == 1
        sink.users = {"sales": "new-password"}
        assert connect(sink, "new-password") is not None
        assert sink.connections > asked
        [account] = accounts()
        assert account.external_id == "sales@example.com"
