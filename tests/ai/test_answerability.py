"""What the offline AI answers from a small plans knowledge base (issue 14, "Understanding that
does not misfire"): a comparison quotes both plans, a "what's included" question gets the
features, a question the knowledge base only comes near is not answered with the near
passage, and a question in Hindi, Hinglish or Spanish finds the English passage."""

from __future__ import annotations

from typing import Any

import pytest

from shvya.ai.understanding import detect_language
from tests.ai.salesperson import Desk

PLANS_MD = """# Acme CRM

## Basic plan
The Basic plan costs 999 INR per month.
Basic includes 2 seats, email support and the contact manager.

## Premium plan
The Premium plan costs 4,999 INR per month, billed monthly.
You can cancel any time from the billing page.
Features: 10 seats, 24x7 phone support, WhatsApp automation and custom reports.

## Billing
Annual billing gives two months free.
We accept UPI, cards and bank transfer.

## Office hours
Our office is open 9:30 am to 6 pm, Monday to Saturday.

## Security
Data is hosted in Frankfurt, Germany, and encrypted at rest.
"""
BASIC_PRICE = "The Basic plan costs 999 INR per month."
BASIC_FEATURES = "Basic includes 2 seats, email support and the contact manager."
PREMIUM_PRICE = "The Premium plan costs 4,999 INR per month, billed monthly."
PREMIUM_FEATURES = "Features: 10 seats, 24x7 phone support, WhatsApp automation and custom reports."
PHONES = iter(f"+9198000{n:05d}" for n in range(1, 100_000))


@pytest.fixture
def desk(desk: Desk) -> Desk:
    desk.setup(kb=PLANS_MD)
    return desk


def ask(desk: Desk, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new lead asks; the one message they get back, and the inbound result."""
    inbound = desk.converse(text, phone=next(PHONES))
    [reply] = desk.replies(inbound["lead_id"])
    return reply, inbound


# --- comparisons and what a plan includes -----------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "What is the difference between Basic and Premium?",
        "Basic vs Premium, which one is better?",
        "¿Cuál es la diferencia entre Basic y Premium?",
        "basic aur premium mein kya farak hai?",
        "बेसिक और प्रीमियम में क्या अंतर है?",
    ],
)
def test_a_comparison_quotes_both_plans(desk: Desk, question: str) -> None:
    reply, _ = ask(desk, question)
    assert reply["meta"]["purpose"] == "reply", reply["text"]
    for line in (BASIC_PRICE, BASIC_FEATURES, PREMIUM_PRICE, PREMIUM_FEATURES):
        assert line in reply["text"]
    assert len(reply["meta"]["passages"]) == 2  # the Basic and the Premium passage


def test_a_comparison_with_a_plan_the_kb_does_not_know_is_not_half_answered(desk: Desk) -> None:
    reply, inbound = ask(desk, "What is the difference between Premium and Platinum?")
    assert reply["meta"]["purpose"] == "handoff"
    assert PREMIUM_PRICE not in reply["text"]
    [handoff] = desk.events(inbound["lead_id"], "HandoffRequested")
    assert handoff.data["reason"] == "unknown_answer"


@pytest.mark.parametrize(
    "question",
    [
        "What does Premium include?",
        "What do I get with the Premium plan?",
        "¿Qué incluye el plan Premium?",
        "premium plan mein kya kya milega?",
        "प्रीमियम प्लान में क्या शामिल है?",
    ],
)
def test_a_whats_included_question_gets_the_features(desk: Desk, question: str) -> None:
    reply, _ = ask(desk, question)
    assert reply["meta"]["purpose"] == "reply", reply["text"]
    assert PREMIUM_FEATURES in reply["text"]
    assert "cancel any time" not in reply["text"]  # a Premium sentence, but no feature


@pytest.mark.parametrize(
    "question",
    [
        "Where do you store our data?",
        "¿Y dónde guardan los datos?",
        "data kahan store hota hai?",
        "हमारा डेटा किस सर्वर पर है?",
    ],
)
def test_where_the_data_is_kept_is_answered_in_every_language(desk: Desk, question: str) -> None:
    """ "datos", "guardan", "डेटा" and "सर्वर" are the lexicon's `data` concept: the question
    finds the English hosting sentence instead of handing off (eval es-saas-09)."""
    reply, _ = ask(desk, question)
    assert reply["meta"]["purpose"] == "reply", reply["text"]
    assert "Data is hosted in Frankfurt" in reply["text"]


# --- near is not an answer --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "language", "do_not_know"),
    [
        ("Is there a free trial?", "en", "I don't have that information"),
        ("¿Tienen una prueba gratis?", "es", "No tengo esa información"),
        ("free trial milega kya?", "hinglish", "Yeh information abhi mere paas nahi hai"),
        ("क्या फ्री ट्रायल मिलता है?", "hi", "यह जानकारी अभी मेरे पास नहीं है"),
    ],
)
def test_a_passage_near_the_question_is_not_an_answer(
    desk: Desk, question: str, language: str, do_not_know: str
) -> None:
    """The KB says "two months free" with annual billing: free, but no trial. The AI says it
    does not know and a person follows up."""
    reply, inbound = ask(desk, question)
    assert "two months free" not in reply["text"]
    assert reply["meta"]["purpose"] == "handoff"
    assert reply["text"].startswith(do_not_know)
    assert desk.job(inbound["job_id"])["result"]["language"] == language
    [handoff] = desk.events(inbound["lead_id"], "HandoffRequested")
    assert handoff.data["reason"] == "unknown_answer"
    assert desk.lead(inbound["lead_id"])["ai_paused"] is True


@pytest.mark.parametrize(
    "question",
    [
        "Are you open on public holidays?",
        "¿Abren los días festivos?",
        "holiday ke din office khula hai kya?",
        "क्या छुट्टी के दिन ऑफिस खुला रहता है?",
        "Do you give refunds if I cancel?",
        "Do you offer a discount for annual billing?",
    ],
)
def test_office_hours_or_billing_lines_do_not_answer_a_question_on_another_topic(
    desk: Desk, question: str
) -> None:
    reply, inbound = ask(desk, question)
    assert reply["meta"]["purpose"] == "handoff", reply["text"]
    assert "9:30 am" not in reply["text"] and "two months free" not in reply["text"]
    [handoff] = desk.events(inbound["lead_id"], "HandoffRequested")
    assert handoff.data["reason"] == "unknown_answer"


def test_a_topic_the_kb_does_state_is_still_answered(desk: Desk) -> None:
    reply, _ = ask(desk, "Can I pay by UPI?")
    assert "We accept UPI, cards and bank transfer." in reply["text"]
    reply, _ = ask(desk, "When is your office open?")
    assert "9:30 am to 6 pm" in reply["text"]


# --- another language than the knowledge base's -----------------------------------------------


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("प्रीमियम प्लान की कीमत क्या है?", "hi"),
        ("premium plan ka price kya hai", "hinglish"),
        ("¿cuánto cuesta el plan Premium?", "es"),
    ],
)
def test_a_price_question_in_another_language_quotes_the_english_price_verbatim(
    desk: Desk, question: str, language: str
) -> None:
    reply, _ = ask(desk, question)
    assert reply["meta"]["purpose"] == "reply", reply["text"]
    assert PREMIUM_PRICE in reply["text"]  # the figure as the knowledge base writes it
    assert reply["meta"]["language"] == language
    # Framed in the lead's language around the quoted English sentence.
    assert detect_language(reply["text"].replace(PREMIUM_PRICE, "")) == language


def test_a_spanish_plan_name_finds_the_english_plan(desk: Desk) -> None:
    reply, _ = ask(desk, "¿Cuánto cuesta el plan básico?")
    assert reply["meta"]["purpose"] == "reply", reply["text"]
    assert BASIC_PRICE in reply["text"]
    assert reply["text"].startswith("Claro, te cuento:")


def test_a_wish_to_visit_is_answered_not_handed_off(desk: Desk) -> None:
    """A demo or visit request hands off only when it names a topic the knowledge base lacks
    (a trial, a demo): "can I stop by?" gets an answer and the AI stays on."""
    reply, inbound = ask(desk, "Can I stop by tomorrow morning to have a look around?")
    assert reply["meta"]["purpose"] == "reply"
    assert desk.lead(inbound["lead_id"])["ai_paused"] is False


def test_a_demo_request_the_kb_says_nothing_about_goes_to_a_person(desk: Desk) -> None:
    reply, inbound = ask(desk, "Can I get a demo of the Premium plan?")
    assert reply["meta"]["purpose"] == "handoff"
    [handoff] = desk.events(inbound["lead_id"], "HandoffRequested")
    assert handoff.data["reason"] == "unknown_answer"
