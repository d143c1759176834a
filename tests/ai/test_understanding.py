"""Understanding a lead's words by rules (the offline provider's extraction), resolving their
relative times, and finding the figures a reply states: the pieces the guardrails stand on."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from shvya.ai.figures import ungrounded
from shvya.ai.timeline import resolve_timeline
from shvya.ai.understanding import merge_bant, understand_by_rules


def understand(text: str, **options: object) -> dict[str, object]:
    return understand_by_rules(text, default_currency="INR", **options).model_dump()  # type: ignore[arg-type]


def test_intent_bant_handoff_and_opt_out_from_the_leads_words() -> None:
    facts = understand("My budget is around 5000 INR, need it next month, my boss decides")
    assert facts["budget"] == {"amount": 5000.0, "currency": "INR", "text": "5000 INR"}
    assert facts["timeline"] == "next month"
    assert facts["need"] is None  # "need it next month" says when, not what
    assert facts["authority"] == {"decision_maker": False, "role": "boss", "text": "my boss"}
    person = understand("Can I talk to a real person please?")
    assert (person["intent"], person["handoff"], person["handoff_reason"]) == (
        "human_request",
        True,
        "asked_for_person",
    )
    assert understand("This is a scam, I will go to consumer forum")["handoff_reason"] == (
        "legal_or_complaint"
    )
    assert understand("This is ridiculous, worst service ever")["handoff_reason"] == "angry"
    assert understand("Want to book a test drive")["intent"] == "demo_request"
    hinglish = understand("mujhe 5 lakh tak ka budget hai, agle mahine lena hai")
    assert hinglish["language"] == "hinglish"
    assert hinglish["budget"]["amount"] == 500000  # type: ignore[index]
    assert hinglish["timeline"] == "agle mahine"
    spanish = understand("presupuesto de 10 mil pesos, lo necesito el próximo mes")
    assert (spanish["language"], spanish["budget"]["currency"]) == ("es", "MXN")  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "opted"),
    [
        ("STOP", True),
        ("please stop messaging me", True),
        ("band karo", True),  # a company keyword
        ("no me escribas más", True),
        ("stop by the office tomorrow?", False),
        ("don't stop the demo, it was great", False),
        ("not interested, thanks", False),  # declines the sale, still reachable
    ],
)
def test_opt_out_is_told_apart_from_look_alikes(text: str, opted: bool) -> None:
    assert understand(text, opt_out_keywords=["band karo"])["opt_out"] is opted


@pytest.mark.parametrize(
    ("words", "start", "end"),
    [
        ("next month", date(2026, 2, 1), date(2026, 2, 28)),
        ("agle mahine", date(2026, 2, 1), date(2026, 2, 28)),
        ("el próximo mes", date(2026, 2, 1), date(2026, 2, 28)),
        ("in 2 weeks", date(2026, 2, 13), date(2026, 2, 13)),
        ("next week", date(2026, 2, 2), date(2026, 2, 8)),
        ("by March", date(2026, 3, 1), date(2026, 3, 31)),
        ("kal", date(2026, 1, 31), date(2026, 1, 31)),
        ("3 mahine mein", date(2026, 4, 30), date(2026, 4, 30)),
    ],
)
def test_relative_times_resolve_against_the_day_the_lead_wrote(
    words: str, start: date, end: date
) -> None:
    window = resolve_timeline(f"we want it {words}", base=date(2026, 1, 30))
    assert window is not None
    assert (window.start, window.end) == (start, end)


def test_figures_must_come_from_the_sources() -> None:
    sources = ["The premium plan costs 4,999 INR per month. Call 020 4567 8900."]
    assert ungrounded("The premium plan is 4,999 INR a month.", sources) == []
    assert ungrounded("It is ₹4,999 per month", sources) == []  # the same amount, written otherwise
    invented = ungrounded("It is 3,999 INR, 20% off, call +91 98765 43210", sources)
    assert set(invented) == {"3,999 INR", "20%", "+91 98765 43210"}


@pytest.mark.parametrize(
    "invented",
    [
        "It costs 7 999 INR",  # thousands with a space
        "It costs 7\u202f999 INR",  # a narrow no-break space
        "We close at 7 pm",  # a time, however small its hour
        "Delivery in 7 days",  # a counted duration
        "Get 10% off",  # "10 seats" does not ground a percentage
        "30-day money back",  # "9:30" does not ground 30 days
        "Only 49,99 €",  # a decimal comma, not 4,999
    ],
)
def test_figures_are_compared_by_kind_and_written_any_way(invented: str) -> None:
    sources = [
        "The premium plan costs 4,999 INR per month and includes 10 seats. "
        "Open 9:30 am to 6 pm. Every plan starts with a 14-day free trial."
    ]
    assert ungrounded(invented, sources), invented
    grounded = "Premium is ₹4,999 a month for 10 seats, open 9.30am to 6 pm, a 14 day trial."
    assert ungrounded(grounded, sources) == []


def test_dates_must_come_from_the_sources_in_any_way_of_writing_them() -> None:
    sources = ["The next cohort starts on January 11, 2027."]
    for grounded in ("It starts on 11 January.", "Empieza el 11 de enero.", "From 2027-01-11."):
        assert ungrounded(grounded, sources) == [], grounded
    assert ungrounded("Your demo is booked for 5 December.", sources) == ["5 December."]
    assert ungrounded("See you on 3/12", sources) == ["3/12"]


def test_known_bant_is_never_overwritten_by_unknown() -> None:
    at = datetime(2026, 1, 30, 9, tzinfo=UTC)
    import uuid

    first, second = uuid.uuid4(), uuid.uuid4()
    bant, changed = merge_bant(
        {},
        understand_by_rules("budget 5 lakh, we need a CRM for 10 reps", default_currency="INR"),
        message_id=first,
        received_at=at,
        local_date=at.date(),
        default_currency="INR",
    )
    assert set(changed) == {"budget", "need"}
    again, changed = merge_bant(
        bant,
        understand_by_rules("ok thanks", default_currency="INR"),
        message_id=second,
        received_at=at,
        local_date=at.date(),
        default_currency="INR",
    )
    assert changed == []
    assert again == bant
    assert again["budget"]["message_id"] == str(first)


# --- issue 14: understanding that does not misfire ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "What is your refund policy?",
        "Can I get a refund if I cancel within 7 days?",
        "¿Cuál es su política de reembolso?",
        "¿Puedo devolver el producto si no me gusta?",
        "refund policy kya hai?",
        "रिफंड पॉलिसी क्या है?",
        # A grievance the lead only imagines, after an "if", is still a question.
        "Ok. Can I cancel anytime, and what's your refund policy if it doesn't work for us?",
        "si no funciona, ¿me devuelven el dinero?",
        "agar kaam nahi kar raha to refund milega?",
        "अगर काम नहीं कर रहा तो क्या रिफंड मिलेगा?",
    ],
)
def test_a_question_about_a_policy_is_a_question_not_a_complaint(text: str) -> None:
    facts = understand(text)
    assert facts["intent"] == "question", text
    assert (facts["handoff"], facts["handoff_reason"]) == (False, None), text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I want my money back, this is broken", "legal_or_complaint"),
        ("I want a refund, the scanner stopped working", "legal_or_complaint"),
        ("worst service", "angry"),
        ("Quiero mi dinero, el producto llegó roto", "legal_or_complaint"),
        ("Quiero un reembolso", "legal_or_complaint"),
        ("Me habéis cobrado dos veces, pongo una reclamación", "legal_or_complaint"),
        ("mujhe paise wapas chahiye, product kharab hai", "legal_or_complaint"),
        ("The app is not working. If you can't fix it I want a refund", "legal_or_complaint"),
        ("मुझे पैसे वापस चाहिए, यह खराब हो गया", "legal_or_complaint"),
        ("Should I take this to consumer court?", "legal_or_complaint"),
    ],
)
def test_a_grievance_is_still_a_complaint_that_hands_off(text: str, reason: str) -> None:
    facts = understand(text)
    assert facts["intent"] == "complaint", text
    assert (facts["handoff"], facts["handoff_reason"]) == (True, reason), text


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("I'm the CTO", "cto"),
        ("I am the founder", "founder"),
        ("I am the co-founder", "co-founder"),
        ("I'm the owner", "owner"),
        ("I'm Head of Finance", "head of finance"),
        ("main hi decide karunga", None),
        ("main hi decision lunga", None),
        ("main company ka CEO hoon", "ceo"),
        ("soy el CEO", "ceo"),
        ("yo decido", None),
        ("मैं ही फैसला करूँगा", None),
        ("मैं कंपनी का मालिक हूँ", "मालिक"),
        ("Hi, main ek export company ka finance head hoon", "finance head"),
        ("I am the sales head here", "sales head"),
        ("मैं एक एक्सपोर्ट कंपनी का फाइनेंस हेड हूँ", "फाइनेंस हेड"),
    ],
)
def test_a_lead_who_decides_or_holds_a_deciding_role_is_the_decision_maker(
    text: str, role: str | None
) -> None:
    authority = understand(text)["authority"]
    assert authority is not None, text
    assert authority["decision_maker"] is True, text  # type: ignore[index]
    assert authority["role"] == role, text  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        "my boss decides",
        "I'm the CTO but my board approves",
        "mere papa decide karenge",
        "tengo que consultarlo con mi socio",
    ],
)
def test_a_lead_who_names_someone_else_who_decides_is_an_influencer(text: str) -> None:
    authority = understand(text)["authority"]
    assert authority is not None, text
    assert authority["decision_maker"] is False, text  # type: ignore[index]


DECEMBER = (date(2026, 12, 1), date(2026, 12, 31))
REST_OF_NOVEMBER = (date(2026, 11, 26), date(2026, 11, 30))


@pytest.mark.parametrize(
    ("text", "words", "window"),
    [
        ("humein agle mahine tak chahiye", "agle mahine tak", DECEMBER),
        ("हमें अगले महीने तक चाहिए", "अगले महीने तक", DECEMBER),
        ("we need it by next month", "by next month", DECEMBER),
        ("lo necesito para el próximo mes", "para el próximo mes", DECEMBER),
        ("agle mahine se pehle chahiye", "agle mahine se pehle", REST_OF_NOVEMBER),
        ("lo necesitamos antes del próximo mes", "antes del próximo mes", REST_OF_NOVEMBER),
        ("अगले हफ़्ते चाहिए", "अगले हफ्ते", (date(2026, 11, 30), date(2026, 12, 6))),
        ("फरवरी तक चाहिए", "फरवरी तक", (date(2027, 2, 1), date(2027, 2, 28))),
        ("मार्च में चाहिए", "मार्च में", (date(2027, 3, 1), date(2027, 3, 31))),
    ],
)
def test_a_deadline_is_a_timeline_and_not_a_need(
    text: str, words: str, window: tuple[date, date]
) -> None:
    facts = understand(text)
    assert facts["timeline"] == words
    assert facts["need"] is None, text  # "by next month" says when, not what
    found = resolve_timeline(text, base=date(2026, 11, 26))
    assert found is not None
    assert (found.start, found.end) == window
    # What the lead wants, said with the deadline, is still the need.
    assert understand("mujhe agle mahine tak ek CRM chahiye")["need"] is not None
