"""The sales lexicon: the words leads use for what a sale is about, in English, Spanish, Hindi
(Devanagari) and Hinglish, each mapped to one concept (docs/ai.md 8, "The sales lexicon").

It sits with the AI's other language rules (ai.understanding), below the knowledge base, so
that both of its readers may import it. Retrieval (knowledge.service.search_knowledge) adds,
for every concept a question names, the concept's words in the knowledge base's language,
so "प्रीमियम प्लान की कीमत" or "¿cuánto cuesta el plan Premium?" finds an English "The
Premium plan costs ...".
The offline provider (ai/providers/offline.py) reads a question and a sentence as concepts,
so the two meet whatever language each is in, and it decides answerability with TOPICS: a
question that names a topic is answered only by a sentence about that topic.

It is a lexicon, not a translator: words outside it (most product names, in Devanagari) are
not carried across languages. With an LLM, the question is also rewritten into the knowledge
base's language by a model call (docs/ai.md 5.6).
"""

from __future__ import annotations

import re
import unicodedata

from shvya.ai.understanding import STOPWORDS

Lexicon = dict[str, dict[str, str]]

# concept -> language -> its words (space-separated). The first English or Spanish words are
# what retrieval adds for the concept in a knowledge base in that language.
CONCEPTS: Lexicon = {
    # What kind of answer the question wants.
    "price": {
        "en": "price prices pricing priced cost costs fee fees charge charges rate rates",
        "es": "precio precios costo costos coste cuesta cuestan tarifa tarifas valor vale",
        "hinglish": "price prices kimat keemat kimmat qeemat daam dam kharcha kharch charges",
        "hi": "कीमत क़ीमत दाम खर्च खर्चा शुल्क मूल्य प्राइस रेट चार्ज",
    },
    "include": {
        "en": "includes include included including features feature comes",
        "es": "incluye incluyen incluido incluidos incluida características caracteristicas "
        "funciones trae",
        "hinglish": "include includes features feature milega milta milti milenge",
        "hi": "शामिल सुविधा सुविधाएँ सुविधाएं फीचर फ़ीचर फीचर्स फ़ीचर्स मिलेगा मिलता मिलती मिलेंगे",
    },
    "hours": {
        "en": "hours open opening close closing timing timings",
        "es": "horario horarios abren abierto abierta cierran hora horas",
        "hinglish": "timing timings khula khulta khulte khulega",
        "hi": "समय खुला खुलता खुलते खुलेगा टाइमिंग",
    },
    # What a sale is about. Retrieval adds these; the plan names also carry a Devanagari
    # spelling of the usual English tier names.
    "plan": {
        "en": "plan plans package packages subscription tier course courses",
        "es": "plan planes paquete paquetes suscripción curso cursos",
        "hinglish": "plan plans package course",
        "hi": "प्लान योजना पैकेज कोर्स",
    },
    "premium": {"en": "premium", "es": "premium", "hinglish": "premium", "hi": "प्रीमियम"},
    "basic": {"en": "basic", "es": "básico básica basico", "hinglish": "basic", "hi": "बेसिक"},
    "standard": {
        "en": "standard",
        "es": "estándar estandar",
        "hinglish": "standard",
        "hi": "स्टैंडर्ड स्टैण्डर्ड",
    },
    "pro": {"en": "pro professional", "es": "pro profesional", "hinglish": "pro", "hi": "प्रो"},
    "enterprise": {
        "en": "enterprise",
        "es": "empresarial",
        "hinglish": "enterprise",
        "hi": "एंटरप्राइज़ एंटरप्राइज",
    },
    "starter": {"en": "starter", "es": "inicial", "hinglish": "starter", "hi": "स्टार्टर"},
    "business": {"en": "business", "es": "negocio", "hinglish": "business", "hi": "बिज़नेस बिजनेस"},
    "free": {
        "en": "free",
        "es": "gratis gratuito gratuita",
        "hinglish": "free muft",
        "hi": "फ्री फ़्री मुफ्त मुफ़्त",
    },
    "month": {
        "en": "month monthly",
        "es": "mes mensual",
        "hinglish": "mahina mahine monthly",
        "hi": "महीना महीने मासिक",
    },
    "year": {
        "en": "year yearly annual annually",
        "es": "año anual",
        "hinglish": "saal yearly annual",
        "hi": "साल वार्षिक सालाना",
    },
    "trial": {
        "en": "trial trials",
        "es": "prueba pruebas",
        "hinglish": "trial trail",
        "hi": "ट्रायल परीक्षण",
    },
    "refund": {
        "en": "refund refunds refundable refunded",
        "es": "reembolso reembolsos devolución devolucion",
        "hinglish": "refund refunds",
        "hi": "रिफंड रिफ़ंड धनवापसी",
    },
    "holiday": {
        "en": "holiday holidays",
        "es": "festivo festivos feriado feriados",
        "hinglish": "holiday holidays chutti chhutti",
        "hi": "छुट्टी छुट्टियों अवकाश त्योहार",
    },
    "delivery": {
        "en": "delivery deliver delivers delivered shipping ship ships shipped courier dispatch",
        "es": "envío envio envíos envios enviar envían envian envia mandar manden mandan entrega "
        "entregas",
        "hinglish": "delivery deliver courier",
        "hi": "डिलीवरी डिलिवरी",
    },
    "discount": {
        "en": "discount discounts coupon coupons",
        "es": "descuento descuentos cupón cupon",
        "hinglish": "discount chhoot chhut",
        "hi": "छूट डिस्काउंट",
    },
    "contract": {
        "en": "contract contracts commitment lock",
        "es": "contrato contratos permanencia",
        "hinglish": "contract agreement",
        "hi": "अनुबंध कॉन्ट्रैक्ट",
    },
    "support": {
        "en": "support helpdesk",
        "es": "soporte asistencia",
        "hinglish": "support madad",
        "hi": "सपोर्ट सहायता",
    },
    "demo": {
        "en": "demo demos demonstration",
        "es": "demo demostración demostracion",
        "hinglish": "demo",
        "hi": "डेमो",
    },
    "payment": {
        "en": "payment payments pay upi card cards",
        "es": "pago pagos pagar tarjeta tarjetas",
        "hinglish": "payment pay upi card",
        "hi": "भुगतान पेमेंट",
    },
    "emi": {
        "en": "emi installment installments instalment instalments",
        "es": "cuotas mensualidades",
        "hinglish": "emi kist kisht",
        "hi": "ईएमआई किस्त किश्त",
    },
    "cancel": {
        "en": "cancel cancels cancellation",
        "es": "cancelar cancelación cancelacion",
        "hinglish": "cancel",
        "hi": "रद्द कैंसल",
    },
    "warranty": {
        "en": "warranty guarantee",
        "es": "garantía garantia",
        "hinglish": "warranty guarantee",
        "hi": "वारंटी गारंटी",
    },
    "installation": {
        "en": "installation install setup onboarding",
        "es": "instalación instalacion instalar",
        "hinglish": "installation install setup",
        "hi": "इंस्टॉलेशन इंस्टालेशन",
    },
    "data": {
        "en": "data hosted hosting stored storage server servers",
        "es": "datos guardan guardados almacenan almacenados alojados servidor servidores",
        "hinglish": "data server store",
        "hi": "डेटा डाटा सर्वर",
    },
}

# Concepts that are what a question is about: a sentence answers a question naming one only
# when it names it too ("Annual billing gives two months free" shares "free" with "Is there a
# free trial?", but says nothing about a trial). docs/ai.md 8, "Answerability".
TOPICS = frozenset(
    "trial refund holiday delivery discount contract support demo payment emi cancel "
    "warranty installation data".split()
)
# Concepts that say what kind of answer is wanted, or qualify it, rather than what about:
# never the items of a comparison.
GENERIC = frozenset("price include hours plan month year free".split())

# Hindi's small words, which say nothing about what a question is about (STOPWORDS has the
# English, Spanish and Hinglish ones).
HINDI_STOPWORDS = frozenset(
    unicodedata.normalize("NFKC", word)
    for word in "में मे क्या है हैं था थी का की के को से और या भी तो यह ये वह वो कितना कितनी कितने मुझे मेरे "
    "मेरा मेरी हम हमें आप आपके आपका आपकी कैसे कब कहाँ कहां क्यों कोई कुछ पर लिए नहीं हाँ जी "
    "होगा होगी होता होती सकते सकता सकती चाहिए बताइए बताओ बताएं".split()
)

_WORD = r"\w\u0900-\u0963\u0966-\u097f"  # with Devanagari's vowel signs, less its dandas
_TOKEN = re.compile(rf"[{_WORD}₹$€£]+")
_PLAIN_TOKEN = re.compile(rf"[{_WORD}]+")


def is_stopword(word: str) -> bool:
    return word in STOPWORDS or word in HINDI_STOPWORDS


def tokens(text: str, *, symbols: bool = True) -> list[str]:
    """The words of a text, casefolded; a Devanagari word stays whole (its vowel signs are
    not word characters to `\\w`). With `symbols`, a currency sign stays with its amount."""
    pattern = _TOKEN if symbols else _PLAIN_TOKEN
    return pattern.findall(unicodedata.normalize("NFKC", text).casefold())


def fold(word: str) -> str:
    """Accents, nukta and virama off: "envío" is "envio", "क़ीमत" is "कीमत"."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _index() -> dict[str, str]:
    found: dict[str, str] = {}
    for concept, languages in CONCEPTS.items():
        for words in languages.values():
            for word in words.split():
                found.setdefault(fold(word.casefold()), concept)
    return found


CONCEPT_OF = _index()


def concept_of(word: str) -> str | None:
    """The concept a (casefolded) word names, if the lexicon has it."""
    return CONCEPT_OF.get(fold(word))


def concepts_in(text: str) -> list[str]:
    """The concepts a text names, in order, once each."""
    found: list[str] = []
    for word in tokens(text):
        concept = concept_of(word)
        if concept is not None and concept not in found:
            found.append(concept)
    return found


def in_language(concept: str, language: str) -> list[str]:
    """The words of a concept in a language (English for a language the lexicon lacks)."""
    languages = CONCEPTS[concept]
    return (languages.get(language) or languages["en"]).split()


def expand(text: str, language: str) -> str:
    """The words, in `language`, of every concept the text names: what retrieval adds to a
    question so it meets a knowledge base written in another language (or in other words)."""
    return " ".join(
        word for concept in concepts_in(text) for word in in_language(concept, language)
    )


# The words of a choice between things, which name none of them ("which one is better?").
CHOICE_WORDS = frozenset(
    "one ones option options choose pick should take recommend suggest best good kaunsa "
    "kaunsi konsa konsi kaun cual cuál elegir recomiendas recomienda कौन कौनसा कौनसी".split()
)
COMPARE = re.compile(
    r"\b(?:difference|differences|different|differ|compare|compared|comparison|vs|versus|"
    r"better|diferencia|diferencias|comparar|comparación|comparacion|mejor|farak|fark|farq|"
    r"antar)\b|(?:फ़र्क|फर्क|अंतर|तुलना|बेहतर)",
    re.IGNORECASE,
)
_CONNECTORS = re.compile(
    r"\b(?:and|or|vs|versus|between|than|y|o|entre|que|aur|ya|se|with)\b|[,/&]|"
    r"(?:\s|^)(?:और|या|से)(?:\s|$)",
    re.IGNORECASE,
)


def compared_items(text: str) -> list[str]:
    """The things a comparison question compares ("the difference between Basic and
    Premium": basic, premium), as the words of each, lexicon concepts in English; [] when
    the text compares nothing."""
    if not COMPARE.search(text):
        return []
    items: list[str] = []
    for part in _CONNECTORS.split(text):
        named = []
        for word in tokens(COMPARE.sub(" ", part)):
            concept = concept_of(word)
            says_nothing = is_stopword(word) or word in CHOICE_WORDS or len(word) < 2
            if concept in GENERIC or (concept is None and says_nothing):
                continue
            named.append(concept or word)
        item = " ".join(dict.fromkeys(named))
        if item and item not in items:
            items.append(item)
    return items if len(items) >= 2 else []


# "And Premium?", "¿Y el Premium?", "aur premium?", "और प्रीमियम?": a follow-up that names a
# new item and borrows its question from the lead's message before (docs/ai.md 8).
_FOLLOW_UP = re.compile(
    r"^\s*¿?\s*(?:and|what about|how about|y|aur|or|और)(?:\s+|$)(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)


def _items(text: str) -> list[str]:
    """The words of a text that name what it is about rather than what it asks: the lexicon's
    items (plan tiers: basic, premium...) and, outside the lexicon, a name written with a
    capital inside the sentence ("the Versa")."""
    found = []
    for index, match in enumerate(_PLAIN_TOKEN.finditer(text)):
        original = match.group()
        word = original.casefold()
        concept = concept_of(word)
        if is_stopword(word) or len(word) < 2 or concept in GENERIC or concept in TOPICS:
            continue
        if concept is not None or (index > 0 and original[:1].isupper()):
            found.append(word)
    return found


def follow_up_question(text: str, previous: str) -> str | None:
    """An elliptical follow-up read as the question it continues: "और प्रीमियम?" after
    "बेसिक प्लान कितने का है?" is "प्रीमियम प्लान कितने का है?". None when the text is not
    such a follow-up (it asks something of its own, or names no new item) or the message
    before names no item to replace."""
    match = _FOLLOW_UP.match(text.strip())
    if match is None:
        return None
    rest = match.group("rest").strip(" ?¿!.।")
    # Everything the follow-up says beyond small words must be an item or a lexicon concept
    # ("and delivery?"): "and what is your refund policy?" asks something of its own.
    said = [w for w in tokens(rest, symbols=False) if not is_stopword(w) and len(w) >= 2]
    new = [w for w in said if concept_of(w) is not None or w in _items("x " + rest)]
    if not said or len(said) > 3 or len(new) != len(said):
        return None
    old = set(_items(previous))
    if not old:
        return None
    kept = [w for w in tokens(previous, symbols=False) if w not in old]
    return " ".join([*new, *kept]) + "?"
