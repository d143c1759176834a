"""The demo `make run` gives: in Chromium, a person asks the sandbox page a price question and
the offline AI answers with the price from the company's knowledge base, without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from shvya.app import create_app
from shvya.config import Settings
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.ai.support import PRICING_MD
from tests.support import FakeClock, Tenant
from tests.web.test_sandbox_browser import REPLY_TIMEOUT_MS, chromium  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def worker(engine: Engine, settings: Settings, clock: FakeClock) -> Iterator[EmbeddedWorker]:
    # SHVYA's own handlers: the real ai.engage with the offline provider.
    worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=clock, settings=settings)
    yield worker
    worker.stop(grace_seconds=5)


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock, worker: EmbeddedWorker) -> FastAPI:
    return create_app(settings, engine=engine, clock=clock, job_engine=worker)


def test_the_offline_ai_answers_a_price_question_from_the_knowledge_base(
    chromium: Browser,  # noqa: F811
    live_server: str,
    default_company: Tenant,
) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=live_server) as api:
        added = api.post(
            "/kb/documents",
            json={"title": "Pricing", "content": PRICING_MD},
            headers=default_company.admin,
        )
        assert added.status_code == 201, added.text
        # The clock is frozen for the test, so the quiet period before a reply is set to 0.
        stage = api.get("/pipelines", headers=default_company.agent).json()[0]["stages"][0]
        api.patch(
            f"/stages/{stage['id']}",
            json={"ai_config": {"quiet_seconds": 0}},
            headers=default_company.admin,
        ).raise_for_status()

    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{live_server}/")
        page.locator("#text").fill("How much is the premium plan?")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".bubble.out .text")
        expect(reply).to_contain_text("4,999 INR", timeout=REPLY_TIMEOUT_MS)
    finally:
        context.close()
