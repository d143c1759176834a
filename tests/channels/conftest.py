"""Channel tests talk to a fake Graph API server on 127.0.0.1 (tests/fakes/meta_graph.py),
and the fake delivers its signed webhooks to the app under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.channels.schemas import WhatsAppAccountIn
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


@pytest.fixture
def whatsapp(
    acme: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
    fake_meta: FakeMetaGraph,
    client: TestClient,
) -> FakeMetaGraph:
    """Acme's number connected to the fake, and the fake's webhooks delivered to the app."""
    with session_factory() as session:
        channels.connect_whatsapp(
            session,
            company_id=acme.company_id,
            data=WhatsAppAccountIn(
                phone_number_id=PHONE_NUMBER_ID, access_token=ACCESS_TOKEN, waba_id=WABA_ID
            ),
            settings=settings,
            actor="test",
            now=clock.now(),
        )
        session.commit()
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
