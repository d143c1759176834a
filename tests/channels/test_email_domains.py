"""DKIM keys per sending domain: the API, the signer, and signatures that survive SMTP."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

import aiosmtplib
import dkim
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels.email_domains import EmailDomain, dkim_signer
from shvya.config import Settings
from tests.support import T0, Tenant

POLICY = SMTP.clone(max_line_length=998)
LONG_URL = "https://shvya.example.com/unsubscribe/" + "Ab3_" * 60


def _add(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/channels/email/domains", json={"domain": "mail.acme.test", **body}, headers=tenant.admin
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _message(to: str = "lead@example.org") -> bytes:
    """A message built the way the composer builds one (text and HTML, RFC 8058 headers)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = "Acme <sales@mail.acme.test>"
    message["To"] = to
    message["Subject"] = "Your quote, with a subject long enough that a careless policy folds it"
    message["Date"] = format_datetime(T0)
    message["Message-ID"] = make_msgid(domain="mail.acme.test")
    message["List-Unsubscribe"] = f"<{LONG_URL}>, <mailto:unsubscribe@mail.acme.test?subject=x>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("Hello Asha,\n\nYour quote is attached.\n")
    message.add_alternative("<p>Hello Asha,</p><p>Your quote is attached.</p>", subtype="html")
    return message.as_bytes(policy=POLICY)


def _dns_for(record: dict[str, Any]) -> Any:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        if name.decode().rstrip(".") == record["name"]:
            return str(record["value"]).encode()
        return b""

    return dnsfunc


def _signed(session_factory: sessionmaker[Session], tenant: Tenant, settings: Settings) -> bytes:
    with session_factory() as session:
        sign = dkim_signer(
            session, company_id=tenant.company_id, from_domain="Mail.Acme.Test", settings=settings
        )
    assert sign is not None
    raw = _message()
    return sign(raw) + raw


def test_adding_a_domain_answers_the_record_and_never_the_private_key(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    data = _add(client, acme, domain="Mail.ACME.test.")
    assert data["domain"] == "mail.acme.test"
    assert data["selector"] == "shvya"
    assert data["dns_record"]["type"] == "TXT"
    assert data["dns_record"]["name"] == "shvya._domainkey.mail.acme.test"
    value = data["dns_record"]["value"]
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(value.split("p=", 1)[1]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert "PRIVATE" not in str(data)

    listed = client.get("/channels/email/domains", headers=acme.admin).json()
    assert listed == [data]
    with session_factory() as session:
        row = session.scalars(select(EmailDomain)).one()
        assert "PRIVATE KEY" not in row.private_key_encrypted  # encrypted at rest


def test_a_given_key_is_used_and_bad_input_says_what_to_fix(
    client: TestClient, acme: Tenant
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    data = _add(client, acme, selector="s2026", private_key_pem=pem)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert data["dns_record"]["value"].endswith("p=" + base64.b64encode(der).decode())
    assert data["dns_record"]["name"] == "s2026._domainkey.mail.acme.test"

    again = client.post(
        "/channels/email/domains", json={"domain": "mail.acme.test"}, headers=acme.admin
    )
    assert again.status_code == 409

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for body, words in [
        ({"domain": "not a domain"}, "domain"),
        ({"domain": "example"}, "domain"),
        ({"domain": "b.test", "selector": "bad_selector!"}, "selector"),
        ({"domain": "c.test", "private_key_pem": "hello"}, "PEM"),
        ({"domain": "d.test", "private_key_pem": small.decode()}, "1024 bits"),
    ]:
        response = client.post("/channels/email/domains", json=body, headers=acme.admin)
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"]
    assert len(client.get("/channels/email/domains", headers=acme.admin).json()) == 1
    assert (
        client.post(
            "/channels/email/domains", json={"domain": "e.test"}, headers=acme.agent
        ).status_code
        == 403
    )


def test_companies_see_and_delete_only_their_own_domains(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    _add(client, acme)
    assert client.get("/channels/email/domains", headers=globex.admin).json() == []
    gone = client.delete("/channels/email/domains/mail.acme.test", headers=globex.admin)
    assert gone.status_code == 404
    with session_factory() as session:
        assert (
            dkim_signer(
                session,
                company_id=globex.company_id,
                from_domain="mail.acme.test",
                settings=settings,
            )
            is None
        )
    # Globex may hold its own key for the same name; Acme's is untouched.
    _add(client, globex)
    assert len(client.get("/channels/email/domains", headers=acme.admin).json()) == 1
    assert (
        client.delete("/channels/email/domains/mail.acme.test", headers=acme.admin).status_code
        == 204
    )
    assert client.get("/channels/email/domains", headers=acme.admin).json() == []
    assert len(client.get("/channels/email/domains", headers=globex.admin).json()) == 1


def test_no_key_means_no_signer(
    session_factory: sessionmaker[Session], acme: Tenant, settings: Settings
) -> None:
    with session_factory() as session:
        assert (
            dkim_signer(
                session, company_id=acme.company_id, from_domain="acme.test", settings=settings
            )
            is None
        )


def test_the_signature_covers_list_unsubscribe_and_verifies(
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    record = _add(client, acme)["dns_record"]
    signed = _signed(session_factory, acme, settings)
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("DKIM-Signature:")
    signature = dkim.DKIM(signed)
    assert "a=rsa-sha256" in header and "c=relaxed/relaxed" in header
    assert "l=" not in header.replace("\r\n", "").split("b=")[0].replace("; ", ";").split(";")
    h_tag = header.replace("\r\n", "").replace(" ", "").split("h=", 1)[1].split(";", 1)[0]
    signed_headers = set(h_tag.lower().split(":"))
    assert {"from", "to", "subject", "date", "message-id", "mime-version"} <= signed_headers
    assert {"list-unsubscribe", "list-unsubscribe-post", "content-type"} <= signed_headers
    assert signature.verify(dnsfunc=_dns_for(record))

    # Changing the unsubscribe link, or the body, breaks it.
    forged = signed.replace(LONG_URL.encode(), (LONG_URL[:-4] + "XXXX").encode())
    assert forged != signed
    assert not dkim.verify(forged, dnsfunc=_dns_for(record))
    tampered = signed.replace(b"Your quote is attached.", b"Pay to this account.")
    assert not dkim.verify(tampered, dnsfunc=_dns_for(record))
    # Another key at the selector (a rotated or wrong record) fails too.
    other = client.post(
        "/channels/email/domains", json={"domain": "other.test"}, headers=acme.admin
    ).json()["dns_record"]
    assert not dkim.verify(signed, dnsfunc=_dns_for({**other, "name": record["name"]}))


class _Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(bytes(envelope.original_content or envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, _Sink]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, sink
    finally:
        controller.stop()


def test_the_signature_survives_a_real_smtp_server(
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    smtp_sink: tuple[int, _Sink],
) -> None:
    port, sink = smtp_sink
    record = _add(client, acme)["dns_record"]
    signed = _signed(session_factory, acme, settings)

    async def send() -> None:
        await aiosmtplib.send(
            signed,
            sender="sales@mail.acme.test",
            recipients=["lead@example.org"],
            hostname="127.0.0.1",
            port=port,
        )

    thread = threading.Thread(target=lambda: asyncio.run(send()))
    thread.start()
    thread.join(timeout=30)
    assert len(sink.received) == 1
    received = sink.received[0]
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in received
    assert LONG_URL.encode() in received.replace(b"\r\n ", b" ")
    assert dkim.verify(received, dnsfunc=_dns_for(record))
