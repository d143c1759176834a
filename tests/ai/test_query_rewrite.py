"""A lead writing in another language than the knowledge base's, with an LLM: the question is
rewritten into the knowledge base's language by one cheap call (task `rewrite`, recorded in
usage), and both wordings are searched (docs/ai.md 5.6). Full text alone here (no embedding
model), so a passage is found only by words it shares with a wording of the question."""

from __future__ import annotations

from typing import Any

import pytest

from shvya.config import Settings
from tests.ai.salesperson import Desk
from tests.ai.support import PRICING_MD
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI
from tests.support import choose_model, fake_provider_settings, understanding

EXCHANGE_MD = (
    PRICING_MD
    + """
## Exchange
We take your old car in exchange, valued by our own inspector within a day.
"""
)
EXCHANGE = "We take your old car in exchange"
# Words no lexicon carries: only a translation finds the Exchange passage.
HINDI_QUESTION = "क्या आप पुरानी गाड़ी के बदले नई गाड़ी देते हैं?"
REWRITTEN = "Do you take an old car in exchange for a new one?"


@pytest.fixture
def settings(database_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_provider_settings(fake_openai, fake_anthropic),
        ai_timeout_seconds=5.0,
        embeddings="none",
    )


@pytest.fixture
def desk(desk: Desk) -> Desk:
    desk.setup(kb=EXCHANGE_MD)
    return desk


def engage_reply(text: str) -> dict[str, Any]:
    return {"reply": text, "sources": [], "answered": True}


def usage_by_task(desk: Desk, lead_id: str) -> dict[str, Any]:
    response = desk.client.get("/ai/usage", params={"lead_id": lead_id}, headers=desk.tenant.agent)
    assert response.status_code == 200, response.text
    by_task: dict[str, Any] = response.json()["by_task"]
    return by_task


def test_a_hindi_question_is_rewritten_into_english_and_finds_the_english_passage(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    choose_model(desk.client, desk.tenant, "rewrite", "openai", "gpt-4o-mini")
    choose_model(desk.client, desk.tenant, "engage", "openai", "gpt-4o")
    fake_openai.reply(REWRITTEN)
    fake_openai.reply_json(engage_reply("हाँ, हम आपकी पुरानी गाड़ी एक्सचेंज में लेते हैं।"))
    inbound = desk.converse(HINDI_QUESTION)

    rewrite, engage = fake_openai.chat_calls
    assert rewrite.model == "gpt-4o-mini"
    assert "search query in English" in rewrite.messages[0]["content"]
    assert rewrite.messages[-1]["content"] == HINDI_QUESTION
    assert EXCHANGE in engage.messages[0]["content"]  # the draft saw the English passage
    assert "Hindi" in engage.messages[0]["content"]  # and answers in the lead's language
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "reply"
    job = desk.job(inbound["job_id"])
    assert job["result"]["query_rewritten_to"] == "en"
    rewrite_usage = usage_by_task(desk, inbound["lead_id"])["rewrite"]
    assert (rewrite_usage["calls"], rewrite_usage["failed_calls"]) == (1, 0)
    assert rewrite_usage["input_tokens"] > 0 and rewrite_usage["output_tokens"] > 0


def test_the_rewrite_takes_the_extract_model_unless_configured(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    models = {m["task"]: m for m in desk.client.get("/ai/models", headers=desk.tenant.agent).json()}
    assert models["rewrite"]["provider"] == "offline"
    choose_model(desk.client, desk.tenant, "extract", "openai", "gpt-4o-mini")
    models = {m["task"]: m for m in desk.client.get("/ai/models", headers=desk.tenant.agent).json()}
    assert (models["rewrite"]["provider"], models["rewrite"]["model"]) == ("openai", "gpt-4o-mini")
    fake_openai.reply_json(understanding(intent="question", language="es"))
    fake_openai.reply("Do you take an old car in exchange?")
    inbound = desk.converse("¿Aceptan mi carro viejo como parte de pago?")
    extract, rewrite = fake_openai.chat_calls
    assert extract.schema_name == "understanding"
    assert (rewrite.model, rewrite.response_format) == ("gpt-4o-mini", "text")
    assert "search query in English" in rewrite.messages[0]["content"]
    by_task = usage_by_task(desk, inbound["lead_id"])
    assert by_task["rewrite"]["calls"] == 1 and by_task["extract"]["calls"] == 1
    # Configured on its own, the rewrite leaves the extract task's model.
    choose_model(desk.client, desk.tenant, "rewrite", "anthropic", "claude-haiku-5")
    models = {m["task"]: m for m in desk.client.get("/ai/models", headers=desk.tenant.agent).json()}
    assert models["rewrite"]["provider"] == "anthropic"
    assert models["extract"]["provider"] == "openai"


def test_no_rewrite_call_when_the_lead_writes_in_the_knowledge_bases_language(
    desk: Desk, fake_openai: FakeOpenAI
) -> None:
    choose_model(desk.client, desk.tenant, "rewrite", "openai", "gpt-4o-mini")
    inbound = desk.converse("Do you take my old car in exchange?")
    assert fake_openai.chat_calls == []
    [reply] = desk.replies(inbound["lead_id"])
    assert EXCHANGE in reply["text"]
    assert "rewrite" not in usage_by_task(desk, inbound["lead_id"])
    assert "query_rewritten_to" not in desk.job(inbound["job_id"])["result"]


def test_an_unusable_rewrite_falls_back_to_the_lexicon(desk: Desk, fake_openai: FakeOpenAI) -> None:
    choose_model(desk.client, desk.tenant, "rewrite", "openai", "gpt-4o-mini")
    fake_openai.malformed_next(kind="invalid_json")
    inbound = desk.converse("प्रीमियम प्लान की कीमत क्या है?")
    [reply] = desk.replies(inbound["lead_id"])
    assert "4,999 INR" in reply["text"]
    assert usage_by_task(desk, inbound["lead_id"])["rewrite"]["failed_calls"] == 1
