"""Helpers of the webhook tests: the documented verifier, a subscription, a scheduler tick and a
worker with a resolver of the test's choosing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.webhooks import safety, tasks
from shvya.webhooks.service import due_deliveries
from tests.support import FakeClock, Tenant

REPO = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r"```python\n(.*?)```", re.S)


def documented_snippet(path: Path) -> str:
    """The first Python block of a document: the verification snippet."""
    match = SNIPPET.search(path.read_text(encoding="utf-8"))
    assert match is not None, f"{path} has no python block"
    return match.group(1)


def documented_verifier() -> Callable[..., bool]:
    """verify_shvya_signature exactly as docs/webhooks.md publishes it."""
    namespace: dict[str, Any] = {}
    exec(documented_snippet(REPO / "docs" / "webhooks.md"), namespace)
    verify: Callable[..., bool] = namespace["verify_shvya_signature"]
    return verify


def subscribe(
    client: TestClient, tenant: Tenant, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = client.post(
        "/webhook-subscriptions",
        json={"url": url, "events": events or ["InboundMessageReceived"]},
        headers=tenant.admin,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def tick(factory: sessionmaker[Session], clock: FakeClock, *, limit: int = 500) -> int:
    """One scheduler call of the webhook due source, committed as the scheduler does."""
    with factory() as session:
        written = due_deliveries(session, now=clock.now(), limit=limit)
        session.commit()
    return written


def worker(
    engine: Engine,
    clock: FakeClock,
    settings: Settings,
    resolver: safety.Resolver = safety.system_resolver,
) -> EmbeddedWorker:
    return EmbeddedWorker(
        engine,
        handlers={"webhook.reminder": tasks.make_deliver(resolver)},
        clock=clock,
        settings=settings,
        threads=1,
        p1_threads=1,
    )


def deliveries(client: TestClient, tenant: Tenant, subscription_id: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/webhook-subscriptions/{subscription_id}/deliveries", headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def company_events(factory: sessionmaker[Session], company_id: uuid.UUID, type: str) -> list[Event]:
    with factory() as session:
        return list(
            session.scalars(
                select(Event).where(Event.company_id == company_id, Event.type == type)
            ).all()
        )
