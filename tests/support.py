"""Small factories and test doubles, kept beside the tests (docs/architecture.md, "Tests")."""

from __future__ import annotations

import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya import onboarding
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Role
from tests.ai.support import PRICING_MD
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
# The keys the fake model servers accept (the `fake_openai` and `fake_anthropic` fixtures).
OPENAI_TEST_KEY = "sk-test-openai"
ANTHROPIC_TEST_KEY = "sk-ant-test"


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


# --- the AI on the fake model servers -----------------------------------------------------------


def fake_provider_settings(
    openai: FakeOpenAI | None = None, anthropic: FakeAnthropic | None = None
) -> dict[str, Any]:
    """The Settings fields that send SHVYA's model calls to the given fake servers."""
    fields: dict[str, Any] = {}
    if openai is not None:
        fields["openai_api_key"] = OPENAI_TEST_KEY
        fields["openai_base_url"] = f"{openai.base_url}/v1"
    if anthropic is not None:
        fields["anthropic_api_key"] = ANTHROPIC_TEST_KEY
        fields["anthropic_base_url"] = anthropic.base_url
    return fields


def choose_model(client: TestClient, tenant: Tenant, task: str, provider: str, model: str) -> None:
    """PUT /ai/models/{task} as the tenant's admin: the company's model for that task."""
    response = client.put(
        f"/ai/models/{task}", json={"provider": provider, "model": model}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text


def understanding(*, intent: str, **fields: Any) -> dict[str, Any]:
    """What a model returns for the understanding step: nothing learnt but `fields`."""
    return {
        "intent": intent,
        "language": "en",
        "budget": None,
        "authority": None,
        "need": None,
        "timeline": None,
        "handoff": False,
        "handoff_reason": None,
        "opt_out": False,
        **fields,
    }


def add_pricing(client: TestClient, tenant: Tenant) -> None:
    """What the AI answers price questions from (else it hands the lead to a person)."""
    added = client.post(
        "/kb/documents", json={"title": "Pricing", "content": PRICING_MD}, headers=tenant.admin
    )
    assert added.status_code == 201, added.text


def wait_until_it_catches(pid: int, signum: int = signal.SIGTERM, *, timeout: float = 90) -> None:
    """Wait until process `pid` has its own handler for `signum` (Linux: SigCgt in /proc).

    A test that signals a freshly started `shvya` process must not race its imports: before
    the handler is installed, SIGTERM kills the interpreter (exit -15) instead of stopping it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as status:
                caught = next(line for line in status if line.startswith("SigCgt:"))
        except FileNotFoundError as exc:  # it exited before it was ready
            raise AssertionError(f"process {pid} exited before handling signal {signum}") from exc
        if int(caught.split()[1], 16) & (1 << (signum - 1)):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not handle signal {signum} within {timeout} s")
