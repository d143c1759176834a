"""Small factories and test doubles, kept beside the tests (docs/architecture.md, "Tests")."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya import onboarding
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Role

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


@dataclass
class Tenant:
    company_id: uuid.UUID
    name: str
    admin_key: str
    agent_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def agent(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_key}"}


def make_tenant(
    factory: sessionmaker[Session], name: str, *, phone_region: str | None = None
) -> Tenant:
    with factory() as session:
        company = onboarding.create_company(session, name=name, phone_region=phone_region, now=T0)
        _, admin_key = tenancy.create_api_key(
            session, company_id=company.id, role=Role.admin, now=T0
        )
        _, agent_key = tenancy.create_api_key(
            session, company_id=company.id, role=Role.agent, now=T0
        )
        session.commit()
        return Tenant(company.id, name, admin_key, agent_key)


def make_operator_key(factory: sessionmaker[Session], name: str = "ops") -> str:
    """The installation's operator key, as `shvya apikey create --operator` makes it."""
    with factory() as session:
        _, raw_key = tenancy.create_operator_key(session, name=name, now=T0)
        session.commit()
        return raw_key


def post_inbound(
    client: TestClient,
    tenant: Tenant,
    *,
    phone: str = "+14155550100",
    text: str = "Hi, what does the premium plan cost?",
    channel: str = "wa_cloud",
    **fields: Any,
) -> Any:
    body = {"channel": channel, "from": phone, "text": text, **fields}
    return client.post("/inbound-message", json=body, headers=tenant.agent)
