"""Amazon SES and SendGrid accounts end to end (docs/email-providers.md): connected with
POST /channels/email against local fakes of their APIs, then a person's email to a lead goes
through the job, the router and the composer to the provider, whose message id is stored.
The provider's secret is stored encrypted and never shown."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.tenancy.models import ChannelAccount
from tests.fakes.meta_graph import FakeMetaGraph
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.fakes.ses_api import FakeSes
from tests.support import Tenant

PUBLIC_URL = "https://shvya.example.com"
LEAD_EMAIL = "asha@example.org"
SENDGRID_KEY = "SG.acme-secret-key"
AWS_SECRET = "aws-secret-access-key-of-acme"


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_keys=frozenset({SENDGRID_KEY})) as fake:
        yield fake
    channels.close_email_transports()


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with FakeSes() as fake:
        yield fake
    channels.close_email_transports()


@pytest.fixture
def settings(
    database_url: str, fake_meta: FakeMetaGraph, fake_sendgrid: FakeSendGrid, fake_ses: FakeSes
) -> Settings:
    from tests.channels.conftest import fake_meta_settings

    return Settings(
        database_url=database_url,
        public_url=PUBLIC_URL,
        sendgrid_base_url=fake_sendgrid.url,
        ses_endpoint_url=fake_ses.url,
        **fake_meta_settings(fake_meta),
    )


def _email_lead_and_send(client: TestClient, tenant: Tenant) -> str:
    lead = client.post(
        "/leads",
        json={"name": "Asha", "contacts": [{"channel": "email", "value": LEAD_EMAIL}]},
        headers=tenant.admin,
    )
    assert lead.status_code == 201, lead.text
    queued = client.post(
        f"/leads/{lead.json()['id']}/messages",
        json={"channel": "email", "subject": "Your quote", "text": "Hello Asha, here it is."},
        headers=tenant.admin,
    )
    assert queued.status_code == 202, queued.text
    return str(queued.json()["message_id"])


def _stored_secret_is_hidden(
    response_text: str, secret: str, session_factory: sessionmaker[Session], account_id: str
) -> None:
    assert secret not in response_text
    with session_factory() as session:
        account = session.get_one(ChannelAccount, uuid.UUID(account_id))
        assert secret not in str(account.config)
        assert account.credentials_encrypted and secret not in account.credentials_encrypted


def test_a_sendgrid_account_sends_a_persons_email_with_one_click_unsubscribe(
    client: TestClient,
    acme: Tenant,
    fake_sendgrid: FakeSendGrid,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    body: dict[str, Any] = {
        "provider": "sendgrid",
        "from_email": "Sales@Example.com",
        "from_name": "Acme Sales",
        "api_key": SENDGRID_KEY,
    }
    connected = client.post("/channels/email", json=body, headers=acme.admin)
    assert connected.status_code == 201, connected.text
    assert connected.json()["external_id"] == "sales@example.com"
    _stored_secret_is_hidden(connected.text, SENDGRID_KEY, session_factory, connected.json()["id"])

    message_id = _email_lead_and_send(client, acme)
    make_worker().run_until_idle()

    [accepted] = fake_sendgrid.accepted
    assert accepted.body["personalizations"] == [{"to": [{"email": LEAD_EMAIL}]}]
    assert accepted.body["subject"] == "Your quote"
    headers = accepted.body["headers"]
    assert headers["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/unsubscribe/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with session_factory() as session:
        row = session.get_one(Message, uuid.UUID(message_id))
        assert row.status == "sent"
        assert row.external_id == accepted.message_id


def test_a_sendgrid_key_sendgrid_refuses_is_a_422_and_nothing_is_stored(
    client: TestClient, acme: Tenant
) -> None:
    body = {"provider": "sendgrid", "from_email": "sales@example.com", "api_key": "SG.wrong"}
    refused = client.post("/channels/email", json=body, headers=acme.admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "api_key"
    assert client.get("/channels/accounts", headers=acme.admin).json() == []


def test_an_ses_account_sends_the_raw_message_and_stores_ses_message_id(
    client: TestClient,
    acme: Tenant,
    fake_ses: FakeSes,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    body = {
        "provider": "ses",
        "from_email": "sales@example.com",
        "region": "eu-west-1",
        "access_key_id": "AKIAFAKE",
        "secret_access_key": AWS_SECRET,
    }
    connected = client.post("/channels/email", json=body, headers=acme.admin)
    assert connected.status_code == 201, connected.text
    assert connected.json()["config"]["region"] == "eu-west-1"
    _stored_secret_is_hidden(connected.text, AWS_SECRET, session_factory, connected.json()["id"])

    message_id = _email_lead_and_send(client, acme)
    make_worker().run_until_idle()

    [sent] = fake_ses.sent
    received = message_from_bytes(sent.raw)
    assert received["To"] == LEAD_EMAIL
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with session_factory() as session:
        row = session.get_one(Message, uuid.UUID(message_id))
        assert row.status == "sent"
        assert row.external_id == sent.message_id
        assert row.email_message_id == str(received["Message-ID"]).strip("<>")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "ses", "region": "eu-west-1", "access_key_id": "AKIAFAKE"}, "secret"),
        ({"provider": "ses", "access_key_id": "AKIAFAKE", "secret_access_key": "x"}, "region"),
        ({"provider": "sendgrid"}, "api_key"),
        ({"provider": "smtp", "host": "127.0.0.1", "api_key": "SG.x"}, "api_key"),
    ],
)
def test_a_provider_account_missing_its_fields_is_a_422_naming_them(
    client: TestClient, acme: Tenant, body: dict[str, Any], field: str
) -> None:
    refused = client.post(
        "/channels/email",
        json={"from_email": "sales@example.com", "verify": False, **body},
        headers=acme.admin,
    )
    assert refused.status_code == 422, refused.text
    assert field in refused.text


def test_an_account_whose_settings_cannot_send_is_refused_with_what_to_fix(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """A row written by hand without its SMTP host: a person's email is a 409 that says to
    connect the account again, not a job that fails on every run."""
    with session_factory() as session:
        session.add(
            ChannelAccount(
                company_id=acme.company_id,
                channel="email",
                external_id="sales@example.com",
                config={"provider": "smtp"},
            )
        )
        session.commit()
    lead = client.post(
        "/leads",
        json={"name": "Asha", "contacts": [{"channel": "email", "value": LEAD_EMAIL}]},
        headers=acme.admin,
    )
    refused = client.post(
        f"/leads/{lead.json()['id']}/messages",
        json={"channel": "email", "subject": "Hi", "text": "Hello"},
        headers=acme.admin,
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "channel_not_connected"
    assert "POST /channels/email" in refused.json()["detail"]


def test_a_rate_limited_sendgrid_send_is_retried_no_earlier_than_the_reset(
    client: TestClient,
    acme: Tenant,
    fake_sendgrid: FakeSendGrid,
    make_worker: Callable[..., EmbeddedWorker],
    session_factory: sessionmaker[Session],
) -> None:
    """SendGrid's 429 says when its window resets (X-RateLimit-Reset): the job waits for it,
    not only for the queue's first backoff of a few seconds (docs/email-providers.md 2.5)."""
    body = {"provider": "sendgrid", "from_email": "sales@example.com", "api_key": SENDGRID_KEY}
    assert client.post("/channels/email", json=body, headers=acme.admin).status_code == 201
    fake_sendgrid.rate_limit = 0  # every send is over the limit for the rest of the window
    fake_sendgrid.window_seconds = 3600
    message_id = _email_lead_and_send(client, acme)
    make_worker().run_until_idle()
    assert fake_sendgrid.accepted == []
    reset = datetime.fromtimestamp(
        int(fake_sendgrid._window_start + fake_sendgrid.window_seconds), tz=UTC
    )
    with session_factory() as session:
        job = session.scalars(select(Job).where(Job.type == "agent.reply")).one()
        assert (job.status, job.attempts) == ("queued", 1)
        assert job.run_at == reset
        assert session.get_one(Message, uuid.UUID(message_id)).status == "failed"
