"""Channel tests talk to a fake Graph API server on 127.0.0.1 (tests/fakes/meta_graph.py),
and the fake delivers its signed webhooks to the app under test. Numbers are connected through
POST /channels/whatsapp, which asks the fake (Meta) before it stores anything."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.channels.policies import SendKind
from shvya.channels.schemas import OutboundContent
from shvya.config import Settings
from shvya.crm.models import Channel
from shvya.db.phases import Phases
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.runner import Handler, JobContext
from shvya.tenancy.models import Company
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant

APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
ACCESS_TOKEN = "EAAG-acme-token-1234"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"


@pytest.fixture
def fake_meta(clock: FakeClock) -> Iterator[FakeMetaGraph]:
    with FakeMetaGraph(
        access_token=ACCESS_TOKEN,
        app_secret=APP_SECRET,
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        now=clock.now,
    ) as fake:
        yield fake


def fake_meta_settings(fake_meta: FakeMetaGraph) -> dict[str, Any]:
    """The Settings fields that send SHVYA's Graph API calls to the fake and check its
    webhooks."""
    return {
        "meta_app_secret": APP_SECRET,
        "meta_verify_token": VERIFY_TOKEN,
        "meta_graph_base_url": fake_meta.base_url,
        "meta_graph_version": fake_meta.version,
    }


@pytest.fixture
def settings(database_url: str, fake_meta: FakeMetaGraph) -> Settings:
    return Settings(database_url=database_url, **fake_meta_settings(fake_meta))


def connect_number(
    client: TestClient,
    tenant: Tenant,
    *,
    phone_number_id: str = PHONE_NUMBER_ID,
    access_token: str = ACCESS_TOKEN,
    waba_id: str | None = WABA_ID,
) -> httpx.Response:
    """POST /channels/whatsapp as the tenant's admin."""
    body = {"phone_number_id": phone_number_id, "access_token": access_token}
    if waba_id is not None:
        body["waba_id"] = waba_id
    return client.post("/channels/whatsapp", json=body, headers=tenant.admin)


@pytest.fixture
def whatsapp(acme: Tenant, fake_meta: FakeMetaGraph, client: TestClient) -> FakeMetaGraph:
    """Acme's number connected to the fake, and the fake's webhooks delivered to the app."""
    connected = connect_number(client, acme)
    assert connected.status_code == 201, connected.text
    fake_meta.webhook_client = client
    fake_meta.webhook_url = "/webhooks/whatsapp"
    return fake_meta


@pytest.fixture
def make_worker(
    engine: Engine, settings: Settings, clock: FakeClock
) -> Callable[..., EmbeddedWorker]:
    """A worker with SHVYA's own handlers, some replaced by the test's."""

    def build(handlers: dict[str, Handler] | None = None) -> EmbeddedWorker:
        chosen: dict[str, Any] = {**default_handlers(), **(handlers or {})}
        return EmbeddedWorker(engine, handlers=chosen, clock=clock, settings=settings)

    return build


def replying_with(
    content: OutboundContent, kind: SendKind | None = None
) -> Callable[[JobContext], Phases[dict[str, Any]]]:
    """A stand-in for the AI: answer every inbound message with `content`, sent as `kind`
    (else the kind the router picks)."""

    def reply(ctx: JobContext) -> Phases[dict[str, Any]]:
        result = yield from channels.send_message(
            ctx.session,
            company_id=ctx.job.company_id,
            lead_id=uuid.UUID(ctx.job.payload["lead_id"]),
            channel=Channel.wa_cloud,
            content=content,
            send_key=f"reply:{ctx.job.id}",
            settings=ctx.settings,
            now=ctx.clock.now,
            **({} if kind is None else {"kind": kind}),
        )
        return result.model_dump(mode="json", exclude_none=True)

    return reply


def set_company_settings(
    factory: sessionmaker[Session], tenant: Tenant, settings: dict[str, Any]
) -> None:
    with factory() as session:
        session.get_one(Company, tenant.company_id).settings = settings
        session.commit()


def reengage_with(
    client: TestClient,
    tenant: Tenant,
    whatsapp: FakeMetaGraph,
    factory: sessionmaker[Session],
    worker: EmbeddedWorker,
) -> None:
    """The company's re-engagement template: a MARKETING one, approved and synced."""
    whatsapp.add_template("we_miss_you", "en_US", "MARKETING", body_params=1)
    assert client.post("/templates/sync", headers=tenant.admin).status_code == 202
    worker.run_until_idle()
    set_company_settings(
        factory,
        tenant,
        {
            "channels": {
                "reengagement_template": {
                    "name": "we_miss_you",
                    "language": "en_US",
                    "body_params": ["there"],
                }
            }
        },
    )
