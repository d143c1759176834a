"""Helpers for the AI salesperson's tests: a company with a knowledge base, leads writing on the
sandbox channel (which stands in for WhatsApp), and a worker that runs their jobs."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.events.models import Event
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.ai.support import PRICING_MD
from tests.support import FakeClock, Tenant

PHONE = "+919812345678"


class Desk:
    """One company's view of SHVYA in a test: the API, the worker and the clock."""

    def __init__(
        self,
        client: TestClient,
        tenant: Tenant,
        engine: Engine,
        settings: Settings,
        clock: FakeClock,
        factory: sessionmaker[Session],
    ) -> None:
        self.client = client
        self.tenant = tenant
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.factory = factory

    def setup(self, *, kb: str = PRICING_MD, **company: Any) -> None:
        body = {"currency": "INR", "timezone": "Asia/Kolkata", **company}
        response = self.client.patch("/company", json=body, headers=self.tenant.admin)
        assert response.status_code == 200, response.text
        if kb:
            response = self.client.post(
                "/kb/documents", json={"title": "Pricing", "content": kb}, headers=self.tenant.admin
            )
            assert response.status_code == 201, response.text

    def write(
        self, text: str, *, phone: str = PHONE, channel: str = "sandbox", **fields: Any
    ) -> dict[str, Any]:
        body = {"channel": channel, "from": phone, "text": text, **fields}
        response = self.client.post("/inbound-message", json=body, headers=self.tenant.agent)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    def run(self, *, after_seconds: float = 5) -> int:
        """Let the quiet period pass, then run every due job."""
        self.clock.advance(seconds=after_seconds)
        worker = EmbeddedWorker(
            self.engine, handlers=default_handlers(), clock=self.clock, settings=self.settings
        )
        return worker.run_until_idle()

    def converse(self, text: str, **fields: Any) -> dict[str, Any]:
        """The lead writes; the AI answers. Returns the inbound result."""
        result = self.write(text, **fields)
        self.run()
        return result

    def job(self, job_id: str | uuid.UUID) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}", headers=self.tenant.agent)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def lead(self, lead_id: str | uuid.UUID) -> dict[str, Any]:
        response = self.client.get(f"/leads/{lead_id}", headers=self.tenant.agent)
        assert response.status_code == 200, response.text
        lead: dict[str, Any] = response.json()
        return lead

    def messages(self, lead_id: str | uuid.UUID) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/leads/{lead_id}/messages", params={"limit": 200}, headers=self.tenant.agent
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return sorted(items, key=lambda m: (m["created_at"], m["direction"] == "out"))

    def replies(self, lead_id: str | uuid.UUID) -> list[dict[str, Any]]:
        return [m for m in self.messages(lead_id) if m["direction"] == "out"]

    def events(self, lead_id: str | uuid.UUID, type_: str) -> list[Event]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(Event)
                    .where(Event.entity_id == uuid.UUID(str(lead_id)), Event.type == type_)
                    .order_by(Event.created_at, Event.id)
                )
            )

    def stage_id(self, name: str) -> str:
        pipelines = self.client.get("/pipelines", headers=self.tenant.agent).json()
        return next(s["id"] for s in pipelines[0]["stages"] if s["name"] == name)

    def configure_stage(self, name: str, **ai_config: Any) -> None:
        response = self.client.patch(
            f"/stages/{self.stage_id(name)}",
            json={"ai_config": ai_config},
            headers=self.tenant.admin,
        )
        assert response.status_code == 200, response.text
