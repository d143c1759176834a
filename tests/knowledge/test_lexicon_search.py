"""GET /kb/search with full text alone (no embedding model): the sales lexicon carries a
question in Hindi, Hinglish or Spanish to the English passage, and a comparison's items are
each among the passages found (docs/ai.md 8)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from shvya.app import create_app
from shvya.config import Settings
from tests.ai.test_answerability import PLANS_MD
from tests.support import FakeClock, Tenant

# Every passage names Premium and the sales team, and most say what Basic lacks: the words
# of a comparison question match them all better than the Basic plan's own passage.
PREMIUM_HEAVY_MD = """# Acme CRM

## Premium plan
Premium costs 4,999 INR per month for a sales team of up to 10, unlike Basic.

## Premium onboarding
Premium customers get onboarding for the sales team, and Premium data import; Basic does not.

## Premium reports
Premium reports show the sales team's pipeline; Premium exports to Excel, which Basic lacks.

## Premium support
Premium support answers the sales team by phone, around the clock: not on Basic.

## Premium automation
Premium automation sends WhatsApp follow-ups for the sales team, not available on Basic.

## Basic plan
Basic costs 999 INR per month for 2 seats. Basic has email support.
"""


@pytest.fixture
def client(engine: Engine, database_url: str, clock: FakeClock) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, embeddings="none")  # full text alone
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        yield client


def add(client: TestClient, tenant: Tenant, content: str) -> None:
    response = client.post(
        "/kb/documents", json={"title": "Plans", "content": content}, headers=tenant.admin
    )
    assert response.status_code == 201, response.text


def headings(client: TestClient, tenant: Tenant, q: str, k: int = 5) -> list[str]:
    response = client.get("/kb/search", params={"q": q, "k": k}, headers=tenant.agent)
    assert response.status_code == 200, response.text
    return [hit["heading"].split(" > ")[-1] for hit in response.json()["passages"]]


@pytest.mark.parametrize(
    ("question", "heading"),
    [
        ("प्रीमियम प्लान की कीमत क्या है?", "Premium plan"),
        ("premium plan ka daam kya hai", "Premium plan"),
        ("¿cuánto cuesta el plan Premium?", "Premium plan"),
        ("बेसिक प्लान कितने का है?", "Basic plan"),
        ("¿Aceptan pagos con tarjeta?", "Billing"),
        ("ऑफिस का समय क्या है?", "Office hours"),
    ],
)
def test_a_question_in_another_language_finds_the_english_passage(
    client: TestClient, acme: Tenant, question: str, heading: str
) -> None:
    add(client, acme, PLANS_MD)
    assert headings(client, acme, question)[0] == heading


def test_each_item_of_a_comparison_is_among_the_passages(client: TestClient, acme: Tenant) -> None:
    add(client, acme, PREMIUM_HEAVY_MD)
    question = "For my sales team, what is the difference between Premium and Basic?"
    found = headings(client, acme, question, k=3)
    assert "Basic plan" in found and any(h.startswith("Premium") for h in found)


def test_the_lexicon_never_reaches_another_companys_passages(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    add(client, acme, PLANS_MD)
    assert headings(client, globex, "प्रीमियम प्लान की कीमत क्या है?") == []


def test_currency_signs_and_query_syntax_beside_lexicon_words_are_just_words(
    client: TestClient, acme: Tenant
) -> None:
    add(client, acme, PLANS_MD)
    for q in ("₹500 $20 € प्रीमियम*", 'precio" OR 1=1 --', "कीमत & | ! ( ) :*", "$$$"):
        response = client.get("/kb/search", params={"q": q}, headers=acme.agent)
        assert response.status_code == 200, (q, response.text)
    assert headings(client, acme, "₹ कीमत प्रीमियम?")[0] == "Premium plan"
