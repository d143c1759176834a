"""The sales lexicon's readings that retrieval and the offline provider rely on
(docs/ai.md 8, "The sales lexicon")."""

from __future__ import annotations

import pytest

from shvya.ai.lexicon import compared_items, concepts_in, expand, follow_up_question, tokens


def test_a_devanagari_word_is_one_token_and_spellings_with_nukta_meet() -> None:
    assert tokens("प्रीमियम प्लान की क़ीमत क्या है?") == [
        "प्रीमियम",
        "प्लान",
        "की",
        "क़ीमत",
        "क्या",
        "है",
    ]
    assert concepts_in("प्रीमियम प्लान की क़ीमत") == concepts_in("premium plan price")
    assert concepts_in("¿Cuánto cuesta el envío?") == ["price", "delivery"]


def test_a_question_is_expanded_into_the_knowledge_bases_language() -> None:
    assert "costs" in expand("प्रीमियम प्लान की कीमत", "en").split()
    assert "precio" in expand("premium plan ka daam", "es").split()
    assert expand("hello there", "en") == ""


@pytest.mark.parametrize(
    ("question", "items"),
    [
        ("What is the difference between Basic and Premium?", ["basic", "premium"]),
        ("Basic vs Premium, which one is better?", ["basic", "premium"]),
        ("¿Cuál es la diferencia entre el plan básico y el Premium?", ["basic", "premium"]),
        ("basic aur premium mein kya farak hai?", ["basic", "premium"]),
        ("बेसिक और प्रीमियम में क्या अंतर है?", ["basic", "premium"]),
        ("Is Alpha better than Beta or Gamma?", ["alpha", "beta", "gamma"]),
        # The kind of product said once for both is no item of its own.
        ("Basic aur Premium course mein kya difference hai?", ["basic", "premium"]),
        ("What is the difference between the Basic and Premium courses?", ["basic", "premium"]),
        ("बेसिक और प्रीमियम कोर्स में क्या अंतर है?", ["basic", "premium"]),
        ("premium ya basic, kaunsa better hai?", ["premium", "basic"]),
        ("What does the Premium plan cost?", []),
        ("Do you have a different payment method?", []),
    ],
)
def test_the_items_of_a_comparison(question: str, items: list[str]) -> None:
    assert compared_items(question) == items


@pytest.mark.parametrize(
    ("text", "previous", "read_as"),
    [
        ("और प्रीमियम?", "बेसिक प्लान कितने का है?", "प्रीमियम प्लान कितने का है?"),
        ("And Premium?", "How much is Basic?", "premium how much is?"),
        ("¿Y el Premium?", "¿Cuánto cuesta el plan Basic?", "premium cuánto cuesta el plan?"),
        ("aur premium?", "basic kitne ka hai?", "premium kitne ka hai?"),
        ("And the Jetta?", "How much is the Versa?", "jetta how much is the?"),
        # Not elliptical: it asks something of its own.
        ("And what is your refund policy?", "How much is Basic?", None),
        # Nothing before it to continue.
        ("And Premium?", "Hello", None),
        ("Premium?", "How much is Basic?", None),
    ],
)
def test_a_follow_up_is_read_as_the_question_it_continues(
    text: str, previous: str, read_as: str | None
) -> None:
    assert follow_up_question(text, previous) == read_as
