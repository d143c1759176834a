"""The figure guardrail (docs/ai.md 6), case by case as issue 14 names them: each is checked
against a knowledge base saying "Premium: 4,999 INR per month ... 500 customers ... open
until 6 pm". Numbers spelled out, the right number in the wrong currency or period, a number
borrowed from another quantity, am/pm swapped and a price the lead proposed are all blocked;
the faithful reply beside each passes."""

from __future__ import annotations

import pytest

from shvya.ai.figures import budget_in, ungrounded, words_value
from shvya.ai.followups import bumpup_problem

KB = [
    "Premium: 4,999 INR per month for up to 500 customers. Support is open from 9:30 am "
    "until 6 pm. Call us on +91 80 4567 8900."
]


def blocked(draft: str, lead: list[str] | None = None, currency: str | None = "INR") -> list[str]:
    return ungrounded(draft, KB, lead or [], currency=currency)


@pytest.mark.parametrize(
    ("draft", "figure"),
    [
        ("Premium costs five thousand rupees a month.", "five thousand rupees"),
        ("Get twenty percent off this week!", "twenty percent"),
        ("प्रीमियम सिर्फ़ पाँच हज़ार में।", "पाँच हज़ार"),
        ("Premium cuesta cinco mil al mes.", "cinco mil"),
        ("Premium bas paanch hazaar mein.", "paanch hazaar"),
    ],
)
def test_a_spelled_out_number_is_a_figure(draft: str, figure: str) -> None:
    assert blocked(draft) == [figure]


def test_a_spelled_out_number_the_source_states_passes() -> None:
    assert blocked("Premium is four thousand nine hundred and ninety-nine rupees a month.") == []
    assert blocked("प्रीमियम चार हज़ार नौ सौ निन्यानवे रुपये प्रति माह है।") == []
    assert blocked("We serve five hundred customers, open until six pm.") == []
    # Up to ten, a spelled-out number is a counting word, as a digit is ("two week pilot").
    assert blocked("Teams often start with a two week pilot.") == []


@pytest.mark.parametrize(
    ("phrase", "value"),
    [
        ("two hundred and fifty thousand", 250_000),
        ("cuatro mil novecientos noventa y nueve", 4_999),
        ("ek lakh pachaas hazaar", 150_000),
        ("साढ़े तीन हज़ार".replace("\u093c", ""), 3_500),
        ("dedh lakh", 150_000),
    ],
)
def test_number_words_are_read_in_four_languages(phrase: str, value: int) -> None:
    assert words_value(phrase) == value


def test_the_right_number_in_the_wrong_currency_or_period_is_blocked() -> None:
    assert blocked("Premium is 4999 USD per month.") == ["4999 USD"]
    assert blocked("Premium is 4,999 INR a year.") == ["4,999 INR"]
    assert blocked("प्रीमियम ₹4,999 प्रति वर्ष है।") == ["₹4,999"]
    # the same price written otherwise, and without the period (it states less), passes
    assert blocked("It's ₹4,999/month.") == []
    assert blocked("Premium cuesta ₹४,९९९ al mes.") == []
    assert blocked("Premium is ₹4,999.") == []


def test_a_number_borrowed_from_another_quantity_is_blocked() -> None:
    assert blocked("The add-on is just ₹500.") == ["₹500"]
    assert blocked("Premium covers 500 users.") == ["500 users"]  # customers, not users
    assert blocked("Premium covers up to 500 clients.") == []  # a synonym


def test_am_and_pm_are_not_the_same_time() -> None:
    assert blocked("We open at 6 am.") == ["6 am."]
    assert blocked("Abrimos a las 6 de la mañana.") == ["6 de la mañana"]
    assert blocked("Support starts at 9:30 pm.") == ["9:30 pm."]
    assert ungrounded("We close at 10 am.", ["We close at 10 pm."]) == ["10 am."]
    assert blocked("Support is open until 6 pm, that is 18:00.") == []
    assert blocked("सपोर्ट शाम 6 बजे तक खुला है।") == []
    # A time that does not say which half of the day may match either.
    assert ungrounded("We open at 6:00.", ["We open at 6 pm."]) == []
    assert ungrounded("We open at 6 pm.", ["We open at 6:00."]) == []


def test_a_price_the_lead_proposed_is_not_confirmed() -> None:
    assert blocked("Yes, Premium is ₹999 a month.", lead=["is it ₹999?"]) == ["₹999"]
    assert blocked("Yes, 999.", lead=["is it 999?"]) == ["999"]
    assert blocked("Claro, 20% de descuento.", lead=["¿me dan 20% de descuento?"]) == ["20%"]
    # the lead's own budget, date, team size and time may be repeated back as theirs
    lead = ["my budget is 50,000 a month, we are 25 people, call me on 5 November at 4 pm"]
    repeated = (
        "With your budget of ₹50,000 a month and your 25 people, I'll call on 5 November at 4 pm."
    )
    assert blocked(repeated, lead=lead) == []
    # ... but their budget is not our price
    assert blocked("Premium costs ₹50,000 a month.", lead=lead) == ["₹50,000"]


def test_a_count_the_lead_proposes_in_a_question_is_not_confirmed() -> None:
    asked = ["Does Premium cover 1,000 customers?"]
    assert blocked("Yes, Premium covers 1,000 customers.", lead=asked) == ["1,000 customers"]
    asked = ["¿Premium incluye 20 licencias?"]
    assert blocked("Sí, incluye 20 licencias.", lead=asked) == ["20 licencias"]
    # a count the lead states about themselves may be repeated back
    stated = ["We need 12 seats, when are you open?"]
    assert blocked("12 seats is fine, and we are open until 6 pm.", lead=stated) == []


def test_a_bumpup_may_not_confirm_the_leads_price() -> None:
    text = (
        "Hi Asha, following up on Premium for your sales team: we can do it at 999 rupees a "
        "month as you suggested. Shall I send the link to get started today, or would a call "
        "suit you better?"
    )
    problem = bumpup_problem(text, [], ["Acme CRM"], ["can you do 999 rupees a month?"])
    assert problem == "states 999 rupees, which no source does"


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [
        ("2 lakh budget", "INR", 200_000),  # lakh and crore are rupees whatever the company's
        ("budget of 1.5 crore", "INR", 15_000_000),
        ("budget $2 lakh", "USD", 200_000),  # a currency written with it wins
        ("our budget is 50k, we pay in euros", "EUR", 50_000),  # named in the message
        ("budget is 50000", "USD", 50_000),  # else the company's
    ],
)
def test_a_budgets_currency(text: str, currency: str, amount: int) -> None:
    budget = budget_in(text, default_currency="USD")
    assert budget is not None
    assert (budget.value, budget.currency) == (amount, currency)
