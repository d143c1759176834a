"""Channel tests talk to a fake Graph API server on 127.0.0.1 (tests/fakes/meta_graph.py),
and the fake delivers its signed webhooks to the app under test. Numbers are connected through
POST /channels/whatsapp, which asks the fake (Meta) before it stores anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from shvya.config import Settings
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.runner import Handler
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


@pytest.fixture
def settings(database_url: str, fake_meta: FakeMetaGraph) -> Settings:
    return Settings(
        database_url=database_url,
        meta_app_secret=APP_SECRET,
        meta_verify_token=VERIFY_TOKEN,
        meta_graph_base_url=fake_meta.base_url,
        meta_graph_version=fake_meta.version,
    )


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
