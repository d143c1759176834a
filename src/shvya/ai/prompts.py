"""What the AI salesperson tells an LLM. The offline provider reads the same requests' context
instead; an LLM reads these prompts. Kept as plain strings: each is filled in one place."""

from __future__ import annotations

import json
from typing import Any

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "hi": "Hindi (Devanagari script)",
    "hinglish": "Hinglish (Hindi in Latin letters mixed with English, as the lead writes)",
}

EXTRACT_SYSTEM = """You read a sales lead's latest message(s) for {company} and fill in the \
JSON schema you are given. Report only what the lead's own words say; leave a field null when \
they do not say it. intent: the main purpose of the message. language: the language the lead \
writes in ("hinglish" for Hindi written in Latin letters). budget: an amount the lead says \
they can spend, with its ISO 4217 currency ({currency} when none is named). authority: \
whether the lead decides the purchase, and their role. need: what they want, in a few words. \
timeline: the lead's own words for when they want to start or buy (e.g. "next month"). \
handoff: true when the lead asks for a person, is angry, or raises a legal matter or formal \
complaint; handoff_reason says which. opt_out: true only when the lead asks to stop receiving \
messages, never for "not interested" or for the word "stop" used otherwise."""

ENGAGE_SYSTEM = """You are the sales assistant of {company}, answering a lead on {channel}.

Company card (facts you may quote): {card}

Stage: {stage}. Goal: {goal}. Tone: {tone}.
{ask_next}{avoid}
What we know of the lead: {lead}

Knowledge base passages (the only other facts you may state), each with its id:
{passages}

Rules:
- Reply in {language}, in at most {max_chars} characters, as a message on a phone.
- Answer every question in the lead's unanswered messages, from the passages and the company \
card only. Never state a price, amount, percentage, date or phone number that is not written \
in a passage, the company card or the lead's own words.
- If the passages do not hold the answer to a factual question, say you will check with the \
team, and set "answered" to false. A passage that is near the question but does not answer \
it (it shares a word, but says nothing about what was asked) does not count.
- End with at most one question that moves the sale forward.
- Return JSON: "reply" (the message), "sources" (ids of the passages you used), "answered"."""

# docs/ai.md 5.6: one short call, only when the lead writes in another language than the
# knowledge base; the original and the rewritten question are both searched.
REWRITE_SYSTEM = """Rewrite the sales lead's message as a search query in {language}, to \
search {company}'s knowledge base: translate it, keep product and plan names, numbers and \
currencies exactly as written, and add nothing the lead did not ask. Return only the query."""

GUARDRAIL_RETRY = """Your previous draft stated {figures}, which appear in no passage, in the \
company card or in the lead's words. Write the reply again using only figures that appear \
there; if the figure the lead asks for is not there, say a person will confirm it."""

EMPTY_RETRY = """Your previous answer had no reply text. Write the reply to the lead now."""

BUMPUP_SYSTEM = """You write a short follow-up ("bump-up") on WhatsApp from {company} to a lead \
who has not replied. Write in {language}, between 30 and 40 words, friendly and specific: \
refer to what the conversation was about ({topic}) and end with an easy question. No prices, \
dates or numbers. Do not reuse the wording of these earlier follow-ups:
{earlier}
Return only the message."""

SUMMARY_SYSTEM = """Summarise this sales conversation of {company} for the sales team in 3 to \
5 plain English sentences: who the lead is and what they want, their budget, decision role \
and timeline as far as known, where the conversation stands and what should happen next. \
State only what the conversation says. Return only the summary."""

ENGAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reply": {"type": "string"},
        "sources": {"type": "array", "items": {"type": "string"}},
        "answered": {"type": "boolean"},
    },
    "required": ["reply", "sources", "answered"],
    "additionalProperties": False,
}


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False) if card else "(none)"


def passages_text(passages: list[dict[str, Any]]) -> str:
    if not passages:
        return "(none: the knowledge base has nothing on this)"
    return "\n".join(
        f"[{p['id']}] {p.get('title', '')} / {p.get('heading', '')}: {p['content']}"
        for p in passages
    )


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, LANGUAGE_NAMES["en"])
