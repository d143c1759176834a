"""A budget's currency (docs/ai.md 4): lakh and crore are rupees whatever the company's
currency, and a currency the lead names wins over the company's."""

from __future__ import annotations

import pytest

from tests.ai.salesperson import Desk


@pytest.fixture
def desk(desk: Desk) -> Desk:
    desk.setup(currency="USD")  # a company that sells in dollars
    return desk


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("2 lakh budget", 200_000, "INR"),
        ("budget around 50k, we pay in euros", 50_000, "EUR"),
        ("our budget is 5000", 5_000, "USD"),
    ],
)
def test_the_leads_budget_is_stored_in_the_currency_they_meant(
    desk: Desk, text: str, amount: int, currency: str
) -> None:
    inbound = desk.converse(text)
    budget = desk.lead(inbound["lead_id"])["attributes"]["bant"]["budget"]
    assert (budget["amount"], budget["currency"]) == (amount, currency)
