"""Where SHVYA will not connect (docs/webhooks.md 5): the URL's form and literal addresses at
subscription, every resolved address at delivery, and the connection pinned to the address
that was checked. Pure checks need no database; the delivery ones use a receiver on
127.0.0.1 and a resolver of the test's making."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.jobs.models import Job
from shvya.webhooks import safety
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import FakeClock, Tenant, post_inbound
from tests.webhooks.support import deliveries, subscribe, tick, worker

REFUSED = {
    "https://127.0.0.1/hook": "loopback",
    "https://127.1/hook": "loopback",
    "https://2130706433/hook": "loopback",  # 127.0.0.1 as one decimal number
    "https://0x7f.0.0.1/hook": "loopback",
    "https://0x7f000001/hook": "loopback",
    "https://0177.0.0.1/hook": "loopback",  # octal
    "https://[::1]/hook": "loopback",
    "https://[::ffff:127.0.0.1]/hook": "loopback",  # IPv4-mapped IPv6
    "https://[::ffff:7f00:1]/hook": "loopback",
    "https://[64:ff9b::a00:1]/hook": "private",  # NAT64 of 10.0.0.1
    "https://[2002:c0a8:101::1]/hook": "private",  # 6to4 of 192.168.1.1
    "https://10.0.0.5/hook": "private",
    "https://172.16.3.4/hook": "private",
    "https://192.168.1.1/hook": "private",
    "https://[fd12:3456::1]/hook": "private",
    "https://169.254.10.10/hook": "link-local",
    "https://[fe80::1]/hook": "link-local",
    "https://169.254.169.254/latest/meta-data/": "metadata",
    "https://[fd00:ec2::254]/": "metadata",
    "https://metadata.google.internal/computeMetadata/v1/": "metadata",
    "https://224.0.0.1/hook": "multicast",
    "https://0.0.0.0/hook": "unspecified",
    "https://[::]/hook": "unspecified",
    "https://100.64.0.1/hook": "public",  # shared address space (carrier-grade NAT)
    "https://240.0.0.1/hook": "private",  # 240.0.0.0/4, reserved: Python counts it private
    "https://localhost/hook": "loopback name",
    "https://api.localhost./hook": "loopback name",
    "http://hooks.example.com/hook": "https",
    "ftp://hooks.example.com/hook": "https",
    "https://user:pw@hooks.example.com/hook": "password",
    "https:///hook": "no host",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_unsafe_urls_are_refused_at_subscription_with_the_reason(url: str) -> None:
    with pytest.raises(safety.WebhookUrlRefused) as refused:
        safety.check_url(url, allow_private=False, production=False)
    assert REFUSED[url] in refused.value.message


def test_public_https_urls_pass_and_allow_private_lifts_all_but_metadata() -> None:
    for url in ("https://hooks.example.com/shvya?token=1", "https://93.184.216.34:8443/x"):
        assert safety.check_url(url, allow_private=False, production=True).scheme == "https"
    allowed = safety.check_url("http://127.0.0.1:8080/h", allow_private=True, production=False)
    assert (allowed.host, allowed.port) == ("127.0.0.1", 8080)
    for url in ("https://169.254.169.254/", "https://[::ffff:169.254.169.254]/"):
        with pytest.raises(safety.WebhookUrlRefused, match="metadata"):
            safety.check_url(url, allow_private=True, production=False)
    with pytest.raises(safety.WebhookUrlRefused, match="https"):  # never http in production
        safety.check_url("http://10.0.0.1/h", allow_private=True, production=True)


def test_every_resolved_address_is_checked_and_one_bad_one_refuses_the_name() -> None:
    target = safety.check_url("https://hooks.example.com/h", allow_private=False, production=True)
    public = safety.checked_addresses(
        target, resolver=lambda host, port: ["93.184.216.34"], allow_private=False
    )
    assert public == ["93.184.216.34"]
    for answer in (["93.184.216.34", "10.1.2.3"], ["::1"], ["169.254.169.254"], []):
        with pytest.raises(safety.WebhookUrlRefused):
            safety.checked_addresses(
                target, resolver=lambda host, port, a=answer: list(a), allow_private=False
            )


def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header() -> None:
    """A name the system cannot resolve reaches the receiver through the address the resolver
    gave and the guard checked: no second lookup happens where a rebinding could answer."""
    with WebhookReceiver() as receiver:
        lookups: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1"]

        attempt = safety.post(
            f"http://hooks.shvya-test.invalid:{receiver.port}/in",
            b"{}",
            {"Content-Type": "application/json"},
            resolver=resolver,
            allow_private=True,
            production=False,
            timeout=5,
        )
    assert attempt.delivered, attempt.error
    assert lookups == ["hooks.shvya-test.invalid"]
    [request] = receiver.received
    assert request.headers["host"] == f"hooks.shvya-test.invalid:{receiver.port}"


@pytest.fixture
def ipv6_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(host="::1")
    try:
        receiver.__enter__()
    except OSError as exc:  # only the server's start: a failure of the test is not a skip
        pytest.skip(f"no IPv6 loopback here: {exc}")
    yield receiver
    receiver.__exit__(None, None, None)


def test_an_ipv6_receiver_is_reached_through_its_checked_address(
    ipv6_receiver: WebhookReceiver,
) -> None:
    attempt = safety.post(
        f"http://v6.shvya-test.invalid:{ipv6_receiver.port}/",
        b"{}",
        {},
        resolver=lambda host, port: ["::1"],
        allow_private=True,
        production=False,
        timeout=5,
    )
    assert attempt.delivered, attempt.error
    assert len(ipv6_receiver.received) == 1


# --- through the API and the job ----------------------------------------------------------------


def test_the_api_refuses_an_unsafe_url_or_an_unknown_event_saying_why(
    client: TestClient, acme: Tenant
) -> None:
    refused = client.post(
        "/webhook-subscriptions",
        json={"url": "https://169.254.169.254/latest/meta-data", "events": ["LeadCreated"]},
        headers=acme.admin,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "webhook_url_refused"
    assert "metadata" in refused.json()["detail"]

    unknown = client.post(
        "/webhook-subscriptions",
        json={"url": "https://hooks.example.com/x", "events": ["MessageSent"]},
        headers=acme.admin,
    )
    assert unknown.status_code == 422, unknown.text
    assert "OutboundMessageSent" in unknown.text and "StageChanged" in unknown.text

    agent = client.post(
        "/webhook-subscriptions",
        json={"url": "https://hooks.example.com/x", "events": ["LeadCreated"]},
        headers=acme.agent,
    )
    assert agent.status_code == 403
    assert client.get("/webhook-subscriptions", headers=acme.admin).json()["total"] == 0


def test_a_name_that_rebinds_to_a_refused_address_gets_nothing_at_delivery(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    """The name answered a good address at the first delivery and the metadata address at the
    next (refused even with allow-private): the second sends nothing and fails for good."""
    with WebhookReceiver() as receiver:
        answers = [["127.0.0.1"], ["169.254.169.254"]]
        lookups: list[str] = []

        def rebinding(host: str, port: int) -> list[str]:
            lookups.append(host)
            return answers.pop(0) if answers else ["127.0.0.1"]

        subscription = subscribe(
            client, acme, f"http://rebind.shvya-test.invalid:{receiver.port}/hook"
        )
        run = worker(engine, clock, settings, resolver=rebinding)
        post_inbound(client, acme, phone="+14155550101")
        clock.advance(seconds=1)
        tick(session_factory, clock)
        run.run_until_idle()
        post_inbound(client, acme, phone="+14155550102")
        clock.advance(seconds=1)
        tick(session_factory, clock)
        run.run_until_idle()

    assert len(receiver.received) == 1
    assert lookups == ["rebind.shvya-test.invalid"] * 2
    latest, first = deliveries(client, acme, subscription["id"])
    assert first["status"] == "delivered"
    assert latest["status"] == "failed"
    assert latest["last_response_code"] is None
    assert "169.254.169.254, a cloud metadata address" in latest["last_error"]
    with session_factory() as session:
        job = session.get_one(Job, uuid.UUID(latest["job_id"]))
    assert (job.status, job.attempts) == ("failed", 1)  # refused: not retried


def _self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_keeps_the_name_for_tls_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    """Pinned to 127.0.0.1, the TLS handshake still names the host (SNI) and the certificate
    is verified against that name: an untrusted certificate is refused, nothing is sent."""
    cert_path, key_path = _self_signed("hooks.shvya-test.invalid", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    seen: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen.append(name)  # type: ignore[assignment]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True):
            pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        attempt = safety.post(
            f"https://hooks.shvya-test.invalid:{port}/hook",
            b"{}",
            {},
            resolver=lambda host, port: ["127.0.0.1"],
            allow_private=True,
            production=True,
            timeout=5,
        )
    finally:
        server.join(timeout=5)
        listener.close()
    assert seen == ["hooks.shvya-test.invalid"]
    assert not attempt.delivered
    assert attempt.error is not None and "CERTIFICATE_VERIFY_FAILED" in attempt.error
