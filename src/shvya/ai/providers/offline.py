"""The offline provider: no network, the same answer for the same input.

It is what `make run` talks with, so it must be honest and useful on its own: it answers
with sentences quoted from the company's knowledge base (prices included, verbatim), says
plainly when the knowledge base does not hold the answer, asks the one qualifying question the
stage wants next, and understands a lead's message with rules (ai.understanding) for the
extraction task. English, Spanish, Hindi and Hinglish (Hindi in Latin letters).
"""

from __future__ import annotations

import re
import time
from typing import Any

from shvya.ai.lexicon import (
    TOPICS,
    compared_items,
    concept_of,
    expand,
    fold,
    follow_up_question,
    is_stopword,
    tokens,
)
from shvya.ai.providers import AITask, Completion, CompletionRequest
from shvya.ai.text import NEAR_REPEAT, fit, similarity, word_count
from shvya.ai.understanding import (
    GREETING_ONLY,
    PRICE_WORDS,
    detect_language,
    understand_by_rules,
    words,
)

TIME_WORDS = frozenset(
    "when hours open opening close closing timing timings kab time horario horarios abren "
    "abierto cierran hora horas".split()
)
MONEY = re.compile(
    r"(?:₹|rs\.?|inr|\$|usd|eur|€|£|gbp|aud|mxn|s/)\s?\d[\d,.]*(?:\s?(?:k|lakh|lac|crore|cr))?"
    r"|\d[\d,.]*\s?(?:[₹€£]|(?:rs\.?|inr|rupees|usd|dollars|eur|euros|aud|mxn|pesos|k|lakh|lac|"
    r"crore|cr)\b)",
    re.IGNORECASE,
)
LANGUAGES = ("en", "hi", "hinglish", "es")

PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Hi{name}! Thanks for reaching out to {company}.",
        "greeting_no_company": "Hi{name}! Thanks for reaching out.",
        "hello": "Hi{name}!",
        "noted": "Thanks{name}, noted: {facts}.",
        "lead_in": "",
        "unknown": (
            "I don't have that information, and I'd rather not guess. "
            "I'll check with the team and get back to you."
        ),
        "ack": "Thanks{name}, noted.",
        "goodbye": (
            "Understood{name}, thanks for letting us know. If anything changes, "
            "just write to us here."
        ),
        "default_topic": "what we discussed",
    },
    "hi": {
        "greeting": "नमस्ते{name}! {company} से संपर्क करने के लिए धन्यवाद।",
        "greeting_no_company": "नमस्ते{name}! संपर्क करने के लिए धन्यवाद।",
        "hello": "नमस्ते{name}!",
        "noted": "धन्यवाद{name}, मैंने नोट कर लिया: {facts}।",
        "lead_in": "आपके सवाल का जवाब:",
        "unknown": (
            "मेरे पास अभी यह जानकारी नहीं है, और मैं अंदाज़ा नहीं लगाऊँगा। मैं टीम से पूछकर आपको बताता हूँ।"
        ),
        "ack": "धन्यवाद{name}, मैंने नोट कर लिया है।",
        "goodbye": "समझ गया{name}, बताने के लिए धन्यवाद। अगर कुछ बदले, तो यहीं लिखिए।",
        "default_topic": "हमारी बातचीत",
    },
    "hinglish": {
        "greeting": "Hi{name}! {company} se contact karne ke liye thank you.",
        "greeting_no_company": "Hi{name}! Contact karne ke liye thank you.",
        "hello": "Hi{name}!",
        "noted": "Thank you{name}, maine note kar liya: {facts}.",
        "lead_in": "Aapke sawal ka jawab:",
        "unknown": (
            "Yeh information abhi mere paas nahi hai, aur main guess nahi karunga. "
            "Main team se check karke aapko batata hoon."
        ),
        "ack": "Thank you{name}, maine note kar liya hai.",
        "goodbye": (
            "Samajh gaya{name}, batane ke liye thank you. Agar kuch badle toh yahin message kijiye."
        ),
        "default_topic": "hamari baat",
    },
    "es": {
        "greeting": "¡Hola{name}! Gracias por escribir a {company}.",
        "greeting_no_company": "¡Hola{name}! Gracias por escribirnos.",
        "hello": "¡Hola{name}!",
        "noted": "Gracias{name}, tomo nota: {facts}.",
        "lead_in": "Claro, te cuento:",
        "unknown": (
            "No tengo esa información y prefiero no adivinar. "
            "Lo consulto con el equipo y te respondo."
        ),
        "ack": "Gracias{name}, lo tengo en cuenta.",
        "goodbye": ("Entendido{name}, gracias por avisarnos. Si algo cambia, escríbenos por aquí."),
        "default_topic": "lo que hablamos",
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
    "es": {
        "need": "¿Qué te gustaría resolver o comprar?",
        "budget": "¿Qué presupuesto tienes en mente?",
        "authority": "¿La decisión la tomas tú, o debería incluir a alguien más?",
        "timeline": "¿Para cuándo te gustaría empezar?",
    },
}
# What the lead just told us, said back in a few words (docs/ai.md 5.7): {text} is their words.
# A budget is said back as theirs ("your budget of"), the only way the figure guardrail lets
# the lead's words ground money (docs/ai.md 6).
NOTED: dict[str, dict[str, str]] = {
    "en": {
        "budget": "your budget of {text}",
        "timeline": "timing {text}",
        "decision_maker": "you make the decision",
        "influencer": "someone else signs off",
        "need": "what you need",
    },
    "es": {
        "budget": "tu presupuesto de {text}",
        "timeline": "plazo {text}",
        "decision_maker": "la decisión es tuya",
        "influencer": "alguien más lo aprueba",
        "need": "lo que necesitas",
    },
    "hinglish": {
        "budget": "aapka budget {text}",
        "timeline": "timeline {text}",
        "decision_maker": "decision aap lenge",
        "influencer": "decision koi aur lega",
        "need": "aapki requirement",
    },
    "hi": {
        "budget": "आपका बजट {text}",
        "timeline": "समय {text}",
        "decision_maker": "फ़ैसला आप लेंगे",
        "influencer": "फ़ैसला कोई और लेगा",
        "need": "आपकी ज़रूरत",
    },
}
# A stage's configured question that asks for a BANT field we know already is not asked.
ASKS_FOR = {
    "budget": re.compile(r"budget|presupuesto|बजट", re.IGNORECASE),
    "timeline": re.compile(r"\bwhen\b|cu[aá]ndo|\bkab\b|कब", re.IGNORECASE),
    "authority": re.compile(r"decision|decide|decisi[oó]n|फ़ैसला|फैसला", re.IGNORECASE),
}
GREETING_START = re.compile(
    r"^\W*(?:hi+|hello+|hey+|namaste|namaskar|hola|buenas|buenos d[ií]as|buenas tardes|"
    r"good (?:morning|afternoon|evening)|नमस्ते|नमस्कार)(?=[\s,.!?¡¿]|$)",
    re.IGNORECASE,
)
# Bump-ups: {name} is the first name (or "there"), {topic} a few words on the conversation.
BUMPUPS: dict[str, list[str]] = {
    "en": [
        "Hi {name}, just checking in about {topic}. Did you get a chance to think it over? If "
        "any questions came up, I'm happy to answer them here, whenever it suits you.",
        "Hello {name}! I wanted to follow up on {topic}. Is there anything I can clarify for "
        "you, or would it help if I shared a few more details so you can decide with confidence?",
        "Hi {name}, a quick note from our side about {topic}. Many customers ask similar "
        "questions before they decide, so feel free to send me yours. I'll reply with clear "
        "answers and no pressure.",
        "Good day {name}. Are you still considering {topic}? If your plans have changed, just "
        "tell me and I won't keep writing; if not, I can walk you through the next steps quickly.",
        "Hey {name}, circling back on {topic}. What would make this an easy yes for you? Share "
        "whatever is holding you back, whether it's timing, budget or something else, and I'll "
        "help.",
        "Hi {name}, I hope your week is going well. I'm still here if you want to continue our "
        "chat about {topic}. Reply whenever you are ready and I will pick up right where we "
        "left off.",
    ],
    "es": [
        "Hola {name}, solo quería saber si pudiste pensar en {topic}. Si te surgió alguna duda, "
        "con gusto te la respondo por aquí, cuando te venga mejor. Quedo atento a tu mensaje.",
        "Hola {name}, te escribo para dar seguimiento a {topic}. ¿Hay algo que pueda aclararte, "
        "o te ayudaría que te comparta más detalles para que decidas con total tranquilidad?",
        "Hola {name}, una nota rápida sobre {topic}. Muchos clientes tienen preguntas parecidas "
        "antes de decidir, así que envíame las tuyas y te responderé con claridad y sin ninguna "
        "presión.",
        "Buen día {name}. ¿Sigues considerando {topic}? Si tus planes cambiaron, dímelo y no te "
        "escribiré más; si no, puedo explicarte los siguientes pasos en un par de minutos.",
        "Hola {name}, retomo lo de {topic}. ¿Qué haría que esta decisión te resulte fácil? "
        "Cuéntame qué te frena, ya sea el momento, el presupuesto u otra cosa, y te ayudo.",
        "Hola {name}, espero que tu semana vaya muy bien. Sigo aquí si quieres continuar "
        "nuestra conversación sobre {topic}. Respóndeme cuando quieras y retomamos justo donde "
        "lo dejamos.",
    ],
    "hinglish": [
        "Hi {name}, bas check kar raha tha ki aapne {topic} ke baare mein socha ya nahi. Koi bhi "
        "sawal ho toh yahin pooch lijiye, main aapko jaldi jawab dunga.",
        "Namaste {name}, {topic} ke liye follow up kar raha hoon. Kya main kuch clear kar sakta "
        "hoon, ya aapko aur details bhej doon taaki aap aaram se decide kar sakein?",
        "Hi {name}, {topic} ke baare mein ek chhota sa note. Bahut se customers decide karne se "
        "pehle aise hi sawal poochte hain, toh aap bhi bejhijhak poochiye. Main seedha aur saaf "
        "jawab dunga.",
        "Hello {name}, kya aap ab bhi {topic} ke baare mein soch rahe hain? Agar plan badal gaya "
        "ho toh bata dijiye; warna main thodi der mein aage ke steps samjha sakta hoon.",
        "Hi {name}, {topic} par wapas aa raha hoon. Aapke liye decision aasaan banane ke liye "
        "kya chahiye? Timing, budget ya kuch aur, jo bhi rok raha ho bataiye, main help karunga.",
        "Hi {name}, umeed hai aapka hafta accha ja raha hai. Agar aap {topic} par baat aage "
        "badhana chahte hain toh main yahin hoon. Jab time mile reply kijiye, hum wahin se "
        "shuru karenge.",
    ],
    "hi": [
        "नमस्ते {name}, मैं बस यह जानना चाहता था कि क्या आपने {topic} के बारे में सोचा। कोई भी सवाल हो "
        "तो यहीं पूछिए, मैं आपको जल्दी जवाब दूँगा।",
        "नमस्ते {name}, {topic} के लिए फॉलो अप कर रहा हूँ। क्या मैं कुछ स्पष्ट कर सकता हूँ, या आपको और "
        "जानकारी भेज दूँ ताकि आप आराम से फ़ैसला कर सकें?",
        "नमस्ते {name}, उम्मीद है आपका हफ़्ता अच्छा जा रहा है। अगर आप {topic} पर बात आगे बढ़ाना चाहते "
        "हैं तो मैं यहीं हूँ। जब समय मिले जवाब दीजिए, हम वहीं से शुरू करेंगे।",
    ],
}
BUMPUP_FILLERS = {
    "en": "Thanks for your time.",
    "es": "Gracias por tu tiempo.",
    "hinglish": "Aapke reply ka intezaar rahega.",
    "hi": "आपके जवाब का इंतज़ार रहेगा।",
}
NO_NAME = {"en": "there", "es": "", "hinglish": "ji", "hi": "जी"}
BUMPUP_WORDS = (30, 40)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """What a text is about: its words less stop words, stemmed, each word the sales lexicon
    knows read as its concept (ai/lexicon.py, docs/ai.md 8), whatever the language: "cost",
    "precio", "daam" and "कीमत" are all "price", in a question and in a knowledge-base
    sentence alike."""
    text = re.sub(r"(\d)([^\W\d_])", r"\1 \2", text)  # "3kW" is "3 kW"
    found: set[str] = set()
    for word in tokens(text):
        concept = concept_of(word)
        if concept is None:
            if is_stopword(word) or (len(word) < 2 and not word.isdigit()):
                continue
            stem = _stem(fold(word))
            concept = concept_of(stem) or stem
        found.add(concept)
    return found


def _sentences(text: str) -> list[str]:
    """Sentences, list items and table rows (a row answers "how much is X" on its own); no
    break after an initial ("N. Virginia")."""
    parts = re.split(r"(?<!\b[A-Z]\.)(?<=[.!?।])\s+|\n+|(?<=\|)\s*(?=\|)", text)
    return [p.strip(" -*#") for p in parts if len(p.strip(" -*#")) > 2]


PRICE_CONCEPTS = content_words(" ".join(PRICE_WORDS))
TIME_CONCEPTS = content_words(" ".join(TIME_WORDS))
# "How much is Premium?": a price question in words that are stop words on their own.
ASKS_PRICE = re.compile(
    r"\bhow much\b|\bcu[aá]nto\b|\bkitne ka\b|\bkitne mein\b|कितने का|कितने में", re.IGNORECASE
)
# "What do I get?", "kya kya milega", "qué trae": a question for what something includes,
# said in words that are stop words on their own.
ASKS_INCLUDED = re.compile(
    r"\b(?:what (?:do|will|would) (?:i|we|you) get|what(?:'s| is) (?:in|included)|"
    r"kya kya|qu[eé] (?:trae|tiene|viene))\b|क्या क्या",
    re.IGNORECASE,
)


def _lists_features(sentence: str, found: set[str]) -> bool:
    """A sentence that says what something includes: it says so, or it is a list."""
    return "include" in found or sentence.count(",") >= 2


def _passage_words(passage: dict[str, Any]) -> set[str]:
    return content_words(str(passage.get("heading", ""))) | content_words(
        str(passage.get("title", ""))
    )


def best_sentences(question: str, passages: list[dict[str, Any]]) -> list[str]:
    """The knowledge-base sentences that answer the question, verbatim, best first.

    A sentence answers only when it is about what the question is about (docs/ai.md 8,
    "Answerability"): it shares the question's subject (what it asks about beyond "how
    much", "when" or "what's included"), and it names every topic of the sales lexicon the
    question names, so "Annual billing gives two months free" (a "free" but no trial) is no
    answer to "Is there a free trial?".
    """
    wanted = content_words(question)
    if not wanted:
        return []
    asks_price = (
        bool(wanted & PRICE_CONCEPTS)
        or bool(MONEY.search(question))
        or bool(ASKS_PRICE.search(question))
    )
    asks_time = bool(wanted & TIME_CONCEPTS)
    asks_included = "include" in wanted or bool(ASKS_INCLUDED.search(question))
    # What the question is about, beyond "how much", "when" and "what's in it": a sentence
    # that shares none of it answers another question (the premium plan's price is not the
    # shipping cost).
    subject = wanted - PRICE_CONCEPTS - TIME_CONCEPTS - {"include"}
    topics = wanted & TOPICS
    # Words of the question the knowledge base never uses ("tienen", "kahan", a typo) count
    # half: they cannot be matched, but a question mostly about them is not answered here.
    vocabulary: set[str] = set()
    for passage in passages:
        vocabulary |= _passage_words(passage) | content_words(str(passage.get("content", "")))
    weight = len(wanted & vocabulary) + 0.5 * len(wanted - vocabulary)
    scored: list[tuple[float, int, str]] = []
    for rank, passage in enumerate(passages):
        around = _passage_words(passage)
        for order, sentence in enumerate(_sentences(str(passage.get("content", "")))):
            own = content_words(sentence)
            found = own | around
            overlap = len(wanted & found)
            if not overlap or (subject and not subject & found) or not topics <= found:
                continue
            score = overlap / weight
            # A sentence about another topic too answers less squarely ("how can I pay?":
            # the payment methods, before the refund rule that mentions a payment).
            score -= 0.1 * len((own & TOPICS) - topics)
            if topics and topics <= own:
                score += 0.1  # it names the topic itself, not only under a heading that does
            if asks_included and _lists_features(sentence, own):
                score += 0.6  # what Premium includes is its features, not only its price
            elif asks_price and MONEY.search(sentence):
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


def item_sentences(item: str, passages: list[dict[str, Any]]) -> list[str]:
    """The sentences about one item of a comparison ("basic"): its price and what it
    includes first, at most two."""
    named = content_words(item)
    scored: list[tuple[float, int, str]] = []
    for rank, passage in enumerate(passages):
        around = _passage_words(passage)
        for order, sentence in enumerate(_sentences(str(passage.get("content", "")))):
            own = content_words(sentence)
            if not named <= own | around:
                continue
            score = (
                1.0 + (0.5 if MONEY.search(sentence) else 0) + 0.5 * _lists_features(sentence, own)
            )
            score -= 0.02 * rank + 0.001 * order
            scored.append((score, -len(scored), sentence))
    scored.sort(reverse=True)
    return list(dict.fromkeys(sentence for _, _, sentence in scored))[:2]


# A question that starts after a comma ("We need a CRM for 8 people, what does Premium
# cost?") is a question of its own; what comes before it is context, not its subject.
ASKING = (
    r"(?:what|how|when|where|which|who|do|does|is|are|can|qu[eé]|c[oó]mo|cu[aá]nto|kya|"
    r"kitna)\b"
)


def answers_to(text: str, passages: list[dict[str, Any]]) -> list[str]:
    """Knowledge-base sentences for each question in a lead's message(s): a burst, or one
    message with a remark and a question, is answered question by question (at most 3). A
    comparison ("Basic or Premium?") is answered item by item, or not at all when the
    knowledge base has nothing on one of them."""
    items = compared_items(text)
    if items:
        per_item = [item_sentences(item, passages) for item in items[:3]]
        if all(per_item):
            return list(dict.fromkeys(s for sentences in per_item for s in sentences))[:4]
        return []
    parts = [p for p in re.split(r"(?<=[.!?।])\s+|\n+|,\s*(?=" + ASKING + ")", text) if p]
    parts = [p for p in parts if content_words(p)]
    asked = [p for p in parts if "?" in p] or parts
    chosen: list[str] = []
    for part in [*asked, text] if len(asked) > 1 else [text, *asked]:
        for sentence in best_sentences(part, passages):
            if sentence not in chosen and len(chosen) < 3:
                chosen.append(sentence)
        if chosen and part is text:
            break
    return chosen


def _language(context: dict[str, Any], text: str = "") -> str:
    language = str(context.get("language") or (detect_language(text) if text else "en"))
    return language if language in LANGUAGES else "en"


def _first_name(context: dict[str, Any]) -> str:
    lead_name = str((context.get("lead") or {}).get("name") or "").strip()
    return lead_name.split()[0] if lead_name else ""


def next_question(context: dict[str, Any], language: str) -> str | None:
    """The stage's question, or the first BANT question still open; never a field we know
    (what this run learnt included), never the question our last message ended with."""
    stage = context.get("stage") or {}
    known = context.get("bant") or {}
    last_reply = str(context.get("last_reply") or "")
    configured = stage.get("ask_next")
    if isinstance(configured, str) and configured.strip():
        question = configured.strip()
        asks_known = any(
            known.get(field) and pattern.search(question) for field, pattern in ASKS_FOR.items()
        )
        if asks_known or question in last_reply:
            return None
        return question
    for field in ("need", "budget", "authority", "timeline"):
        question = BANT_QUESTIONS[language][field]
        if not known.get(field) and question not in last_reply:
            return question
    return None


NEED_LEAD = re.compile(
    r"^(?:need|want|require|looking for|searching for|interested in|would like|hoping to|"
    r"necesito|necesitamos|busco|buscamos|quiero|queremos|me interesa|quisiera)\s+",
    re.IGNORECASE,
)
NEED_TAIL = re.compile(r"\s+(?:chahiye|chahie|lena hai|चाहिए|चाहिये)$", re.IGNORECASE)


def _wanted(need: str) -> str:
    """What the lead wants in their own words, without the verb ("need a CRM for 10 reps" ->
    "a CRM for 10 reps"), or "" when that is more than a short phrase."""
    wanted = NEED_TAIL.sub("", NEED_LEAD.sub("", need.strip(" .,!?"))).strip()
    if wanted.casefold().startswith(("to ", "que ")) or wanted == need.strip(" .,!?"):
        return ""  # "want to go live": a plan, not a thing to name back
    return wanted if 0 < len(wanted.split()) <= 8 else ""


def noted(context: dict[str, Any], language: str) -> str | None:
    """What the lead just told us (the BANT this run learnt), said back: "a budget of 5 lakh,
    timing next month". Their own words, so no figure of ours is stated."""
    learnt = context.get("learnt") or {}
    phrases = NOTED[language]
    facts: list[str] = []
    for field in ("budget", "timeline", "authority", "need"):
        entry = learnt.get(field)
        if not isinstance(entry, dict):
            continue
        if field == "authority":
            facts.append(phrases[str(entry.get("value") or "influencer")])
        elif field == "need":
            wanted = _wanted(str(entry.get("value") or ""))
            facts.append(wanted or phrases["need"])
        elif entry.get("text"):
            facts.append(phrases[field].format(text=str(entry["text"]).strip(" .,!?")))
    return ", ".join(facts) if facts else None


class OfflineProvider:
    name = "offline"

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        data: dict[str, Any] | None
        if request.task is AITask.extract:
            understood = understand_by_rules(
                str(request.context.get("text", "")),
                opt_out_keywords=list(request.context.get("opt_out_keywords") or []),
                default_currency=str(request.context.get("currency") or "USD"),
                default_language=str(request.context.get("default_language") or "en"),
            )
            data = understood.model_dump(mode="json")
            text = understood.model_dump_json()
        elif request.task is AITask.summary:
            data, text = None, self._summary(request.context)
        elif request.task is AITask.bumpup:
            data, text = None, self._bumpup(request.context)
        elif request.task is AITask.rewrite:  # the lexicon's reading, in the asked language
            context = request.context
            language = str(context.get("language") or "en")
            text = expand(str(context.get("question", "")), language)
            data = None
        else:
            data, text = self._engage(request.context)
        prompt = request.system + " ".join(m.content for m in request.messages)
        return Completion(
            text=text,
            input_tokens=len(words(prompt)),
            output_tokens=len(words(text)),
            model="offline-rules-2",
            latency_ms=int((time.perf_counter() - started) * 1000),
            data=data,
        )

    def _engage(self, context: dict[str, Any]) -> tuple[dict[str, Any], str]:
        question = str(context.get("question", ""))
        language = _language(context, question)
        phrases = PHRASES[language]
        first = _first_name(context)
        name = f" {first}" if first else ""
        # A company without a name of its own greets without one (docs/ai.md 5.7).
        company = str((context.get("company") or {}).get("name") or "").strip()
        intent = str(context.get("intent") or "")
        passages = list(context.get("passages") or [])
        parts: list[str] = []
        used: list[str] = []
        answered = True
        follow_up = next_question(context, language)
        learnt = noted(context, language)
        if intent == "not_interested":
            parts.append(phrases["goodbye"].format(name=name))
            follow_up = None
        elif GREETING_ONLY.match(question.strip()) or not content_words(question):
            greeting = phrases["greeting"] if company else phrases["greeting_no_company"]
            parts.append(greeting.format(name=name, company=company))
            about = ((context.get("company") or {}).get("card") or {}).get("about")
            if isinstance(about, str) and about.strip():
                parts.append(about.strip())
        else:
            greeted = GREETING_START.match(question) is not None
            if greeted:
                parts.append(phrases["hello"].format(name=name))
            if learnt:
                # "Hi, I'm the CTO, ...": greeted, then thanked for what they told.
                parts.append(phrases["noted"].format(name="" if greeted else name, facts=learnt))
            sentences = answers_to(question, passages)
            previous = str(context.get("previous_question") or "")
            follow = None if sentences else follow_up_question(question, previous)
            if follow:
                sentences = answers_to(follow, passages)
            is_question = intent in ("question", "price_inquiry", "") or "?" in question
            if sentences:
                if phrases["lead_in"]:
                    parts.append(phrases["lead_in"])
                parts.append(" ".join(sentences))
                used = [
                    str(p.get("id"))
                    for p in passages
                    if any(s in str(p.get("content", "")) for s in sentences) and p.get("id")
                ]
            elif is_question:
                parts.append(phrases["unknown"])
                answered = False
            elif not learnt:
                parts.append(phrases["ack"].format(name=name))
        if follow_up:
            parts.append(follow_up)
        max_chars = int((context.get("stage") or {}).get("max_chars") or 700)
        reply = fit(" ".join(parts), max_chars)
        # The reply schema every provider answers (prompts.ENGAGE_SCHEMA).
        return {"reply": reply, "sources": used, "answered": answered}, reply

    def _bumpup(self, context: dict[str, Any]) -> str:
        language = _language(context)
        first = _first_name(context) or NO_NAME[language]
        topic_words = str(context.get("topic") or PHRASES[language]["default_topic"]).split()
        earlier = [str(text) for text in context.get("earlier") or []]
        variants = BUMPUPS[language]
        start = int(context.get("variant") or 0)
        candidates = [
            self._fill(variants[(start + i) % len(variants)], first, topic_words, language)
            for i in range(len(variants))
        ]
        for text in candidates:
            if all(similarity(text, before) < NEAR_REPEAT for before in earlier):
                return text
        # Every wording was used before: the least similar one.
        return min(candidates, key=lambda c: max(similarity(c, e) for e in earlier))

    @staticmethod
    def _fill(template: str, name: str, topic_words: list[str], language: str) -> str:
        low, high = BUMPUP_WORDS
        for keep in range(min(len(topic_words), 8), 0, -1):
            text = template.format(name=name, topic=" ".join(topic_words[:keep]))
            text = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
            if word_count(text) <= high:
                break
        while word_count(text) < low:
            text = f"{text} {BUMPUP_FILLERS[language]}"
        return text

    def _summary(self, context: dict[str, Any]) -> str:
        """Three to five sentences for the sales team (in English): who wrote about what,
        their BANT, what they asked and what we offered, what is agreed and what is open,
        and where the lead stands (docs/ai.md 7)."""
        turns = [t for t in context.get("turns") or [] if isinstance(t, dict)]
        lead_lines = [str(t.get("text", "")) for t in turns if t.get("direction") == "in"]
        ours = len(turns) - len(lead_lines)
        name = str((context.get("lead") or {}).get("name") or "").strip() or "The lead"
        company = str((context.get("company") or {}).get("name") or "").strip() or "us"
        bant = context.get("bant") or {}
        need = (bant.get("need") or {}).get("value") if isinstance(bant.get("need"), dict) else None
        status = str(context.get("status") or "").strip().rstrip(".")
        if not lead_lines:
            return (
                f"{name} has not written to {company} yet. No budget, need or timeline is "
                f"known. We have sent {ours} message(s) so far."
            )
        topic = _quote(need or lead_lines[0], 14)
        result = [f"{name} wrote to {company} about “{topic}”.", _bant_sentence(bant)]
        asked, offered, agreed, open_questions = _conversation_points(turns)
        exchange: list[str] = []
        if asked:
            exchange.append("they asked " + " and ".join(f"“{_quote(q, 12)}”" for q in asked))
        if offered:
            exchange.append("we quoted " + " and ".join(f"“{_quote(o, 16)}”" for o in offered))
        if exchange:
            sentence = "; ".join(exchange)
            result.append(sentence[0].upper() + sentence[1:] + ".")
        where: list[str] = []
        if agreed:
            where.append(f"they agreed: “{_quote(agreed, 12)}”")
        if open_questions:
            where.append(
                "still open: " + " and ".join(f"“{_quote(q, 12)}”" for q in open_questions)
            )
        if status:
            where.append(status[0].lower() + status[1:])
        if where:
            sentence = "; ".join(where)
            result.append(sentence[0].upper() + sentence[1:] + ".")
        stage = str(context.get("stage_name") or "")
        at = f"The lead is in the {stage} stage, with" if stage else "So far there are"
        result.append(f"{at} {len(lead_lines)} message(s) from them and {ours} from us.")
        return " ".join(result[:5])


QUESTION = re.compile(
    r"\?|^\s*¿|^\s*(?:what|how|when|where|which|who|why|do|does|is|are|can|could|will|kya|"
    r"kaise|kab|kahan|kitna|kitne|qu[eé]|c[oó]mo|cu[aá]ndo|d[oó]nde|cu[aá]l|cu[aá]nto)\b|"
    r"क्या|कैसे|कब|कितन",
    re.IGNORECASE,
)
AGREED = re.compile(
    r"\b(?:let'?s (?:do it|go ahead|proceed|book)|go ahead|sign me up|deal\b|book (?:it|me|the)|"
    r"i'?ll take (?:it|the)|we'?ll take (?:it|the)|confirm(?:ed)?\b|sounds good|"
    r"de acuerdo|trato hecho|adelante|lo tomo|lo quiero|confirmo|reserv(?:a|o|en)|"
    r"theek hai,? (?:book|kar|le)|pakka|done hai|chalo (?:book|karte)|book kar do)|"
    r"ठीक है|पक्का|बुक कर",
    re.IGNORECASE,
)
# What we sent that answers nothing: a bump-up, an opt-out notice.
NOT_AN_ANSWER = frozenset({"bumpup", "opt_out_confirmation"})
# What we sent that answers a question without its answer.
NO_ANSWER_GIVEN = frozenset({"handoff", "safe_answer"})


def _conversation_points(
    turns: list[dict[str, Any]],
) -> tuple[list[str], list[str], str | None, list[str]]:
    """What the lead asked (their last two questions), what we offered (our last two sentences
    with a price), what they agreed to (their last yes) and their questions no answer of ours
    followed, or only a handoff did."""
    asked: list[str] = []
    offered: list[str] = []
    agreed: str | None = None
    open_questions: list[str] = []
    waiting: list[str] = []  # the lead's questions since our last answer
    for turn in turns:
        text = str(turn.get("text") or "").strip()
        if not text:
            continue
        if turn.get("direction") == "in":
            questions = [p for p in re.split(r"(?<=[.!?])\s+|\n+", text) if QUESTION.search(p)]
            asked = [*[q for q in asked if q not in questions], *questions][-2:]
            waiting += questions
            if AGREED.search(text) and not questions:
                agreed = text
            continue
        purpose = turn.get("purpose")
        if purpose in NOT_AN_ANSWER:
            continue
        if purpose in NO_ANSWER_GIVEN:
            open_questions = [*open_questions, *waiting]
        else:
            for sentence in re.split(r"(?<=[.!?])\s+", text):
                if MONEY.search(sentence) and sentence not in offered:
                    offered = [*offered, sentence][-2:]
        waiting = []
    open_questions = list(dict.fromkeys([*open_questions, *waiting]))[-2:]
    return asked, offered, agreed, open_questions


def _quote(text: str, max_words: int) -> str:
    """Their words inside one of our sentences: no sentence ends inside ("1.5" stays), at
    most max_words."""
    cleaned = re.sub(r"[.!?।…]+(?=\s|$)", ",", text)
    cleaned = cleaned.replace("“", "").replace("”", "").replace('"', "").lstrip("¿¡")
    cleaned = re.sub(r"\s+", " ", cleaned).strip(" ,")
    tokens = cleaned.split()
    return " ".join(tokens[:max_words]) + ("…" if len(tokens) > max_words else "")


def _bant_sentence(bant: dict[str, Any]) -> str:
    known: list[str] = []
    budget = bant.get("budget")
    if isinstance(budget, dict) and budget.get("amount") is not None:
        said = _quote(str(budget.get("text") or ""), 6)
        words = f" (“{said}”)" if said else ""
        known.append(f"budget {budget['amount']:,} {budget.get('currency') or ''}".strip() + words)
    timeline = bant.get("timeline")
    if isinstance(timeline, dict):
        window = (
            f" ({timeline['from']} to {timeline['to']})"
            if timeline.get("from") and timeline.get("from") != timeline.get("to")
            else (f" ({timeline['from']})" if timeline.get("from") else "")
        )
        known.append(f"timeline {_quote(str(timeline.get('text', '')), 8)}{window}")
    authority = bant.get("authority")
    if isinstance(authority, dict):
        role = f" ({authority['role']})" if authority.get("role") else ""
        known.append(
            (
                "they decide"
                if authority.get("value") == "decision_maker"
                else "someone else decides"
            )
            + role
        )
    need = bant.get("need")
    if isinstance(need, dict) and need.get("value"):
        known.append(f"need “{_quote(str(need['value']), 12)}”")
    if not known:
        return "Their budget, need, timeline and decision-maker are not known yet."
    missing = [
        field
        for field in ("budget", "need", "timeline", "authority")
        if not isinstance(bant.get(field), dict)
    ]
    tail = f"; still unknown: {', '.join(missing)}" if missing else ""
    return f"Known so far: {', '.join(known)}{tail}."
