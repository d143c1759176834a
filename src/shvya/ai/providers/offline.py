"""The offline provider: no network, the same answer for the same input.

It is what `make run` talks with, so it must be honest and useful on its own: it answers
with sentences quoted from the company's knowledge base (prices included, verbatim), says
plainly when the knowledge base does not hold the answer, asks the one qualifying question the
stage wants next, and understands a lead's message with rules (intent, language, BANT,
handoff, opt-out) for the extraction task.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from typing import Any

from shvya.ai.providers import AITask, Completion, CompletionRequest

STOPWORDS = frozenset(
    """a an and are as at be but by can could do does for from had has have how i if in is it
    its me my of on or our please so than that the their them then there these they this to
    us was we what when where which who why will with would you your yours hi hello hey tell
    about know want wanted need any some much many is are ka ki ke hai hain kya ko se me mein
    aap aapka aapki bhi toh to""".split()
)
PRICE_WORDS = frozenset(
    """price prices pricing cost costs costing fee fees charge charges rate rates rent
    expensive cheap budget plan plans kitna kitne kitni paisa daam dam quote quotation
    subscription emi""".split()
)
TIME_WORDS = frozenset("when hours open opening close closing timing timings kab time".split())
MONEY = re.compile(
    r"(?:₹|rs\.?|inr|\$|usd|eur|€|£|gbp)\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:k|lakh|lac|crore|cr))?"
    r"|\d[\d,]*(?:\.\d+)?\s?(?:₹|rs\.?|inr|rupees|usd|dollars|eur|euros|k|lakh|lac|crore|cr)\b",
    re.IGNORECASE,
)
HUMAN_WORDS = re.compile(
    r"\b(human|real person|person|agent|representative|someone|somebody|manager|call me|"
    r"phone call|insaan|kisi se baat)\b",
    re.IGNORECASE,
)
ANGRY_WORDS = re.compile(
    r"\b(angry|furious|terrible|worst|useless|pathetic|scam|fraud|cheated|disgusting|"
    r"ridiculous|unacceptable|bakwas|bekar|ghatiya)\b",
    re.IGNORECASE,
)
LEGAL_WORDS = re.compile(
    r"\b(lawyer|legal|court|sue|lawsuit|consumer forum|police|complaint|refund|chargeback)\b",
    re.IGNORECASE,
)
PURCHASE_WORDS = re.compile(
    r"\b(buy|purchase|order|book|sign up|subscribe|interested|lena hai|chahiye|khareed)\b",
    re.IGNORECASE,
)
DEMO_WORDS = re.compile(r"\b(demo|trial|test drive|visit|appointment|meeting)\b", re.IGNORECASE)
GREETING_ONLY = re.compile(
    r"^\W*(hi+|hello+|hey+|namaste|namaskar|hola|good (morning|afternoon|evening)|yo)\W*$",
    re.IGNORECASE,
)
AUTHORITY_SELF = re.compile(
    r"\b(i decide|my decision|i am the owner|i'm the owner|i own|i am the founder|"
    r"i'm the founder|i will decide|main decide)\b",
    re.IGNORECASE,
)
AUTHORITY_OTHER = re.compile(
    r"\b(my (boss|manager|partner|wife|husband|team|father|dad)|need to (check|ask|discuss)|"
    r"ask my|discuss with)\b",
    re.IGNORECASE,
)
TIMELINE = re.compile(
    r"\b(today|tomorrow|tonight|this week|next week|this month|next month|this year|"
    r"next year|in \d+ (days?|weeks?|months?)|within \d+ (days?|weeks?|months?)|asap|"
    r"immediately|soon|by (monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
    r"agle (hafte|mahine|saal)|is (hafte|mahine)|kal|parso|abhi)\b",
    re.IGNORECASE,
)
NEED = re.compile(
    r"\b(need|looking for|want|require|searching for|chahiye|zarurat)\b[^.?!]*", re.IGNORECASE
)
HINGLISH = frozenset(
    "hai hain kya kitna kitne kitni aap mujhe mera meri chahiye karna kab kaise nahi haan "
    "bhai ji theek accha acha batao bataiye lena".split()
)

PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Hi{name}! Thanks for reaching out to {company}.",
        "answer": "{quote}",
        "unknown": (
            "I don't have that information, and I'd rather not guess. "
            "I'll check with the team and get back to you."
        ),
        "handoff": "I'm bringing in a colleague who can help you with this directly.",
        "bumpup": (
            "Hi{name}, just checking in. Did you get a chance to think about {topic}? "
            "Happy to answer any questions."
        ),
    },
    "hi": {
        "greeting": "नमस्ते{name}! {company} से संपर्क करने के लिए धन्यवाद।",
        "answer": "{quote}",
        "unknown": (
            "मेरे पास अभी यह जानकारी नहीं है, और मैं अंदाज़ा नहीं लगाऊँगा। मैं टीम से पूछकर आपको बताता हूँ।"
        ),
        "handoff": "मैं अपने एक साथी को जोड़ रहा हूँ जो सीधे आपकी मदद करेंगे।",
        "bumpup": "नमस्ते{name}, क्या आपने {topic} के बारे में सोचा? कोई भी सवाल हो तो पूछिए।",
    },
    "hinglish": {
        "greeting": "Hi{name}! {company} se contact karne ke liye thank you.",
        "answer": "{quote}",
        "unknown": (
            "Yeh information abhi mere paas nahi hai, aur main guess nahi karunga. "
            "Main team se check karke aapko batata hoon."
        ),
        "handoff": "Main ek colleague ko add kar raha hoon jo aapki seedhe help karenge.",
        "bumpup": (
            "Hi{name}, bas check kar raha tha. {topic} ke baare mein socha? "
            "Koi bhi sawal ho toh batayein."
        ),
    },
}
BANT_QUESTIONS: dict[str, dict[str, str]] = {
    "en": {
        "need": "What are you hoping to solve or buy?",
        "budget": "What budget do you have in mind?",
        "authority": "Will you be making the decision, or should I include someone else?",
        "timeline": "When are you looking to get started?",
    },
    "hi": {
        "need": "आप किस चीज़ के लिए देख रहे हैं?",
        "budget": "आपका बजट कितना है?",
        "authority": "क्या फ़ैसला आप लेंगे, या किसी और को भी शामिल करूँ?",
        "timeline": "आप कब तक शुरू करना चाहते हैं?",
    },
    "hinglish": {
        "need": "Aap kis cheez ke liye dekh rahe hain?",
        "budget": "Aapka budget kitna hai?",
        "authority": "Decision aap lenge, ya kisi aur ko bhi include karun?",
        "timeline": "Aap kab tak start karna chahte hain?",
    },
}


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"[\w₹$€£]+", folded)


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1}


def detect_language(text: str) -> str:
    """en, hi (Devanagari) or hinglish (Hindi in Latin letters)."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum("\u0900" <= c <= "\u097f" for c in letters) / len(letters) > 0.3:
        return "hi"
    tokens = words(text)
    if tokens and sum(t in HINGLISH for t in tokens) / len(tokens) >= 0.2:
        return "hinglish"
    return "en"


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?।])\s+|\n+", text)
    return [p.strip() for p in parts if len(p.strip()) > 2]


def best_sentences(question: str, passages: list[dict[str, Any]]) -> list[str]:
    """The knowledge-base sentences that answer the question, verbatim, best first."""
    wanted = content_words(question)
    if not wanted:
        return []
    price_stems = {_stem(w) for w in PRICE_WORDS}
    asks_price = bool(wanted & price_stems) or bool(MONEY.search(question))
    asks_time = bool(wanted & TIME_WORDS)
    # What the question is about, beyond "how much" and "when": a sentence that shares none
    # of it answers another question (the premium plan's price is not the shipping cost).
    subject = wanted - price_stems - TIME_WORDS
    scored: list[tuple[float, int, str]] = []
    for rank, passage in enumerate(passages):
        heading_words = content_words(str(passage.get("heading", "")))
        title_words = content_words(str(passage.get("title", "")))
        for order, sentence in enumerate(_sentences(str(passage.get("content", "")))):
            found = content_words(sentence) | heading_words | title_words
            overlap = len(wanted & found)
            if not overlap or (subject and not subject & found):
                continue
            score = overlap / len(wanted)
            if asks_price and MONEY.search(sentence):
                score += 0.6
            if asks_time and re.search(r"\d{1,2}(:\d{2})?\s?(am|pm)|\d{1,2}:\d{2}", sentence, re.I):
                score += 0.4
            score -= 0.02 * rank + 0.001 * order  # earlier passages and sentences first
            scored.append((score, -len(scored), sentence))
    scored.sort(reverse=True)
    threshold = 0.5 if len(wanted) > 1 else 0.99
    chosen: list[str] = []
    for score, _, sentence in scored:
        if score < threshold or sentence in chosen:
            continue
        chosen.append(sentence)
        if len(chosen) == 2:
            break
    return chosen


def understand(text: str, *, opt_out_keywords: list[str] | None = None) -> dict[str, Any]:
    """Intent, language, BANT, handoff and opt-out of a lead's message, by rules."""
    from shvya.conversations.service import opt_out_keyword

    stripped = text.strip()
    opted = opt_out_keyword(stripped, company_keywords=opt_out_keywords or [])
    money = MONEY.search(stripped)
    budget = (
        money.group(0)
        if money and re.search(r"budget|afford|spend|upto|up to|under|around|max", stripped, re.I)
        else None
    )
    need_match = NEED.search(stripped)
    timeline = TIMELINE.search(stripped)
    authority = (
        "decision_maker"
        if AUTHORITY_SELF.search(stripped)
        else "influencer"
        if AUTHORITY_OTHER.search(stripped)
        else None
    )
    handoff_reason = None
    if HUMAN_WORDS.search(stripped) and re.search(
        r"talk|speak|call|connect|baat|want|need", stripped, re.I
    ):
        handoff_reason = "asked_for_person"
    elif LEGAL_WORDS.search(stripped):
        handoff_reason = "legal_or_complaint"
    elif ANGRY_WORDS.search(stripped):
        handoff_reason = "angry"
    if opted == "out":
        intent = "opt_out"
    elif handoff_reason == "asked_for_person":
        intent = "human_request"
    elif handoff_reason is not None:
        intent = "complaint"
    elif GREETING_ONLY.match(stripped):
        intent = "greeting"
    elif content_words(stripped) & {_stem(w) for w in PRICE_WORDS} or (money and "?" in stripped):
        intent = "price_inquiry"
    elif DEMO_WORDS.search(stripped):
        intent = "demo_request"
    elif PURCHASE_WORDS.search(stripped):
        intent = "purchase_intent"
    elif "?" in stripped or re.match(
        r"^(what|how|when|where|which|who|why|do|does|is|are|can|kya|kaise|kab)\b", stripped, re.I
    ):
        intent = "question"
    else:
        intent = "other"
    return {
        "intent": intent,
        "language": detect_language(stripped),
        "budget": budget,
        "authority": authority,
        "need": need_match.group(0).strip()[:200] if need_match else None,
        "timeline": timeline.group(0) if timeline else None,
        "handoff": handoff_reason is not None,
        "handoff_reason": handoff_reason,
        "opt_out": opted == "out",
    }


def _next_question(context: dict[str, Any], language: str) -> str | None:
    stage = context.get("stage") or {}
    configured = stage.get("ask_next")
    if isinstance(configured, str) and configured.strip():
        return configured.strip()
    known = context.get("bant") or {}
    for field in ("need", "budget", "authority", "timeline"):
        if not known.get(field):
            return BANT_QUESTIONS[language][field]
    return None


def _fit(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > max_chars // 2 else cut.rstrip() + "…"


class OfflineProvider:
    name = "offline"

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        if request.task is AITask.extract:
            data = understand(
                str(request.context.get("text", "")),
                opt_out_keywords=list(request.context.get("opt_out_keywords") or []),
            )
            text = json.dumps(data, ensure_ascii=False)
        elif request.task is AITask.summary:
            data, text = None, self._summary(request.context)
        elif request.task is AITask.bumpup:
            data, text = None, self._bumpup(request.context)
        else:
            data, text = self._engage(request.context)
        prompt = request.system + " ".join(m.content for m in request.messages)
        return Completion(
            text=text,
            input_tokens=len(words(prompt)),
            output_tokens=len(words(text)),
            model="offline-rules-1",
            latency_ms=int((time.perf_counter() - started) * 1000),
            data=data,
        )

    def _engage(self, context: dict[str, Any]) -> tuple[dict[str, Any], str]:
        question = str(context.get("question", ""))
        language = str(context.get("language") or detect_language(question))
        language = language if language in PHRASES else "en"
        phrases = PHRASES[language]
        lead_name = str((context.get("lead") or {}).get("name") or "").strip()
        name = f" {lead_name.split()[0]}" if lead_name else ""
        company = str((context.get("company") or {}).get("name") or "us")
        passages = list(context.get("passages") or [])
        parts: list[str] = []
        used: list[str] = []
        answered = False
        if GREETING_ONLY.match(question.strip()) or not content_words(question):
            parts.append(phrases["greeting"].format(name=name, company=company))
            about = (context.get("company") or {}).get("card", {}).get("about")
            if isinstance(about, str) and about.strip():
                parts.append(about.strip())
            answered = True
        else:
            sentences = best_sentences(question, passages)
            if sentences:
                parts.append(" ".join(sentences))
                answered = True
                used = [
                    str(p.get("id"))
                    for p in passages
                    if any(s in str(p.get("content", "")) for s in sentences) and p.get("id")
                ]
            else:
                parts.append(phrases["unknown"])
        follow_up = _next_question(context, language)
        if follow_up:
            parts.append(follow_up)
        max_chars = int((context.get("stage") or {}).get("max_chars") or 700)
        return {"answered": answered, "passage_ids": used}, _fit(" ".join(parts), max_chars)

    def _bumpup(self, context: dict[str, Any]) -> str:
        language = str(context.get("language") or "en")
        language = language if language in PHRASES else "en"
        lead_name = str((context.get("lead") or {}).get("name") or "").strip()
        name = f" {lead_name.split()[0]}" if lead_name else ""
        topic = str(context.get("topic") or "our last conversation")
        return PHRASES[language]["bumpup"].format(name=name, topic=topic)

    def _summary(self, context: dict[str, Any]) -> str:
        turns = [t for t in context.get("turns") or [] if isinstance(t, dict)]
        lead_lines = [str(t.get("text", "")) for t in turns if t.get("direction") == "in"]
        if not lead_lines:
            return "No messages from the lead yet."
        first, last = lead_lines[0], lead_lines[-1]
        facts = understand(" ".join(lead_lines))
        known = ", ".join(
            f"{field}: {facts[field]}"
            for field in ("need", "budget", "authority", "timeline")
            if facts.get(field)
        )
        summary = f'The lead first wrote: "{first[:160]}".'
        if last is not first:
            summary += f' Latest: "{last[:160]}".'
        summary += (
            f" {len(lead_lines)} message(s) from the lead, {len(turns) - len(lead_lines)} from us."
        )
        if known:
            summary += f" Known so far: {known}."
        return summary
