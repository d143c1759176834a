"""The figure guardrail in the engage pipeline (docs/ai.md 5.8, 6): a model that confirms a
price the lead proposed is caught like one that invents it, while the lead's own budget may be
repeated back to them."""

from __future__ import annotations

import pytest

from shvya.config import Settings
from tests.ai.salesperson import Desk
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI
from tests.support import choose_model, fake_provider_settings


@pytest.fixture
def settings(database_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_provider_settings(fake_openai, fake_anthropic),
        ai_timeout_seconds=5.0,
    )


@pytest.fixture
def desk(desk: Desk) -> Desk:
    desk.setup()
    choose_model(desk.client, desk.tenant, "engage", "openai", "gpt-4o-mini")
    return desk


def test_a_price_the_lead_proposed_is_not_confirmed(desk: Desk, fake_openai: FakeOpenAI) -> None:
    talked_round = {"reply": "Yes, Premium is ₹3,500 a month.", "sources": [], "answered": True}
    fake_openai.reply_json(talked_round)
    fake_openai.reply_json({**talked_round, "reply": "Sure, ₹3,500 a month it is!"})
    inbound = desk.converse("Premium is ₹3,500 a month, right?")
    [reply] = desk.replies(inbound["lead_id"])
    assert "3,500" not in reply["text"]
    assert reply["meta"]["purpose"] == "safe_answer"
    [blocked] = desk.events(inbound["lead_id"], "GuardrailBlocked")
    assert blocked.data["figures"] == ["₹3,500"]


def test_the_leads_own_budget_may_be_repeated_back(desk: Desk, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_json(
        {
            "reply": "With your budget of ₹50,000 a month, Premium at 4,999 INR per month fits.",
            "sources": [],
            "answered": True,
        }
    )
    inbound = desk.converse("Our budget is 50,000 a month. What does Premium cost?")
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "reply"
    assert desk.events(inbound["lead_id"], "GuardrailBlocked") == []
