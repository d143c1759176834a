"""The offline provider is the AI of `make run`: it must be honest and useful on its own."""

from __future__ import annotations

from typing import Any

from shvya.ai.providers import AITask, CompletionRequest
from shvya.ai.providers.offline import OfflineProvider
from shvya.ai.text import sentences, word_count
from shvya.ai.understanding import detect_language

PASSAGES = [
    {
        "id": "p-premium",
        "title": "Pricing",
        "heading": "Plans > Premium",
        "content": "The premium plan costs 4,999 INR per month. It includes 10 seats.",
    },
    {
        "id": "p-hours",
        "title": "Showroom",
        "heading": "Visit us",
        "content": "Our Pune showroom is open 9:30 am to 6 pm, Monday to Saturday.",
    },
]


def engage(question: str, **context: Any) -> tuple[str, dict[str, Any]]:
    request = CompletionRequest(
        task=AITask.engage,
        system="",
        messages=[],
        context={
            "question": question,
            "passages": PASSAGES,
            "company": {"name": "Acme"},
            **context,
        },
    )
    completion = OfflineProvider().complete(request)
    assert completion.data is not None
    return completion.text, completion.data


def test_it_quotes_the_real_price_from_the_knowledge_base() -> None:
    text, data = engage("How much is the premium plan?")
    assert "The premium plan costs 4,999 INR per month." in text
    assert data == {"reply": text, "answered": True, "sources": ["p-premium"]}


def test_it_says_plainly_when_it_does_not_know_and_never_invents_a_number() -> None:
    text, data = engage("Do you deliver to Dubai and what does shipping cost?")
    assert "I don't have that information" in text
    assert data["answered"] is False
    assert not any(ch.isdigit() for ch in text)


def test_it_asks_the_question_the_stage_wants_next() -> None:
    text, _ = engage(
        "when is the showroom open?",
        stage={"name": "Qualified", "ask_next": "Would you like to book a test drive this week?"},
    )
    assert text.endswith("Would you like to book a test drive this week?")
    assert "9:30 am to 6 pm" in text
    # without a configured question it asks for the first BANT field still unknown
    text, _ = engage("hi", bant={"need": "an SUV"})
    assert text.endswith("What budget do you have in mind?")


def test_it_greets_by_first_name_and_answers_in_the_leads_language() -> None:
    text, _ = engage("hello", lead={"name": "Priya Shah"})
    assert text.startswith("Hi Priya! Thanks for reaching out to Acme.")
    text, _ = engage("premium plan kitne ka hai?")
    assert "4,999 INR" in text
    assert "Aap" in text  # the follow-up question in Hinglish
    assert detect_language("आपका प्रीमियम प्लान कितने का है?") == "hi"


def test_it_is_deterministic_and_respects_the_length_limit() -> None:
    assert engage("How much is the premium plan?") == engage("How much is the premium plan?")
    text, _ = engage("How much is the premium plan?", stage={"max_chars": 60})
    assert len(text) <= 61


def test_extraction_summary_and_bumpup_tasks() -> None:
    provider = OfflineProvider()
    extracted = provider.complete(
        CompletionRequest(
            task=AITask.extract, system="", messages=[], context={"text": "what's the price?"}
        )
    )
    assert extracted.data is not None
    assert extracted.data["intent"] == "price_inquiry"
    summary = provider.complete(
        CompletionRequest(
            task=AITask.summary,
            system="",
            messages=[],
            context={
                "turns": [
                    {"direction": "in", "text": "Need an SUV, budget 15 lakh INR"},
                    {"direction": "out", "text": "Great, we have three."},
                    {"direction": "in", "text": "Can I see it next week?"},
                ]
            },
        )
    )
    assert "Need an SUV" in summary.text
    assert "next week" in summary.text
    assert 3 <= len(sentences(summary.text)) <= 5
    bump = provider.complete(
        CompletionRequest(
            task=AITask.bumpup,
            system="",
            messages=[],
            context={"lead": {"name": "Ravi Kumar"}, "topic": "the premium plan"},
        )
    )
    assert bump.text.startswith("Hi Ravi")
    assert "the premium plan" in bump.text
    assert 30 <= word_count(bump.text) <= 40


def test_a_stage_question_about_a_known_field_or_asked_last_time_is_left_out() -> None:
    budget = {"budget": {"amount": 500000, "currency": "INR", "text": "5 lakh"}}
    stage = {"ask_next": "What budget do you have in mind for the car?"}
    text, _ = engage("How much is the premium plan?", stage=stage, bant=budget)
    assert "4,999 INR" in text
    assert "budget" not in text
    asked = "Would you like to book a test drive this week?"
    text, _ = engage("and the hours?", stage={"ask_next": asked}, last_reply=f"Sure. {asked}")
    assert not text.endswith(asked)
    assert "9:30 am to 6 pm" in text
