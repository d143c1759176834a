"""Fixtures of the sequences' tests. Their modules run on SQLite (`one_database`) unless the
database matters (the scheduler's claim, the sending-limit counts): the timing and policy code
is the same on both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.sequences.service import due_steps
from tests.support import FakeClock, Tenant


def new_lead(client: TestClient, tenant: Tenant, *contacts: tuple[str, str], **fields: Any) -> str:
    body = {
        "name": "Asha",
        "contacts": [{"channel": c, "value": v} for c, v in contacts],
        **fields,
    }
    response = client.post("/leads", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create_sequence(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {
        "name": "Welcome",
        "stop_on": ["reply", "stage_change", "unsubscribe", "handoff"],
        "steps": [{"channel": "sandbox", "text": "Hello!"}],
        **body,
    }
    response = client.post("/sequences", json=payload, headers=tenant.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def enroll(client: TestClient, tenant: Tenant, sequence_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/sequences/{sequence_id}/enrollments", json=body, headers=tenant.agent)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def enrollments(client: TestClient, tenant: Tenant, sequence_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/sequences/{sequence_id}/enrollments", headers=tenant.agent)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
def tick(session_factory: sessionmaker[Session], clock: FakeClock) -> Callable[[], int]:
    """One scheduler pass over the due steps, committed (as the scheduler does)."""

    def run() -> int:
        total = 0
        while True:
            with session_factory() as session:
                count = due_steps(session, now=clock.now(), limit=100)
                session.commit()
            total += count
            if count < 100:
                return total

    return run


@pytest.fixture
def work(engine: Engine, settings: Settings, clock: FakeClock) -> Callable[[], int]:
    """Run every due job with SHVYA's own handlers."""

    def run() -> int:
        worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=clock, settings=settings)
        return worker.run_until_idle()

    return run
