"""Numbers in what leads and the AI write: budgets with their currency, and the guardrail that
keeps invented figures out of AI replies (docs/ai.md 6).

A figure is any number a reader could act on: a price or amount ("₹2,499", "1.5 lakh",
"5.000 €", "five thousand rupees"), a percentage, a time of day, a date, a counted quantity
("500 customers", "7 days"), a phone number. An AI reply may state one only if a source
states a figure of the same kind and value: the company's sources (knowledge-base passages,
the company card) for anything, the lead's own words only for what the reply repeats as the
lead's (their dates, times, counts, their budget), never for a price or an offer of ours.
Figures are compared by value, so "₹1,50,000", "150000", "1.5 lakh" and "ek lakh pachaas
hazaar" are the same. Integers up to ten standing alone ("3 plans", "step 2") are counting
words, not figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from shvya.ai.timeline import MONTHS

MULTIPLIERS = {
    "k": 1_000, "thousand": 1_000, "mil": 1_000, "hazaar": 1_000, "hazar": 1_000,
    "हजार": 1_000,
    "lakh": 100_000, "lakhs": 100_000, "lac": 100_000, "lacs": 100_000, "लाख": 100_000,
    "crore": 10_000_000, "crores": 10_000_000, "cr": 10_000_000, "करोड": 10_000_000,
    "m": 1_000_000, "mn": 1_000_000, "million": 1_000_000, "millon": 1_000_000,
    "millón": 1_000_000, "millones": 1_000_000,
}  # fmt: skip
# Lakh and crore are Indian units: an amount in them is in rupees whatever the company's
# currency, unless the lead names another ("$2 lakh").
INDIAN_MULTIPLIERS = frozenset(
    {"lakh", "lakhs", "lac", "lacs", "लाख", "crore", "crores", "cr", "करोड"}
)
CURRENCY_WORDS = {
    "₹": "INR", "rs": "INR", "rs.": "INR", "inr": "INR", "rupees": "INR", "rupee": "INR",
    "rupaye": "INR", "rupay": "INR", "rupiya": "INR", "rupiye": "INR", "rupias": "INR",
    "रुपये": "INR", "रुपए": "INR", "रुपया": "INR", "रुपयों": "INR", "रु": "INR", "रु.": "INR",
    "$": "$", "usd": "USD", "dollars": "USD", "dollar": "USD", "dolares": "USD",
    "dólares": "USD", "us$": "USD", "डॉलर": "USD",
    "€": "EUR", "eur": "EUR", "euros": "EUR", "euro": "EUR", "यूरो": "EUR",
    "£": "GBP", "gbp": "GBP", "pounds": "GBP", "pound": "GBP", "libras": "GBP",
    "mxn": "MXN", "pesos": "PESO", "peso": "PESO", "ars": "ARS", "cop": "COP", "clp": "CLP",
    "aed": "AED", "dirhams": "AED", "sgd": "SGD", "aud": "AUD", "cad": "CAD",
}  # fmt: skip
# Currencies written with "$" besides the US dollar: "$" means the company's own.
DOLLAR_LIKE = frozenset({"USD", "MXN", "ARS", "COP", "CLP", "CAD", "AUD", "SGD", "NZD", "HKD"})
# "pesos" means the company's own peso, else the Mexican one.
PESOS = frozenset({"MXN", "ARS", "COP", "CLP", "UYU", "DOP", "PHP", "CUP"})

# Devanagari: its digits read as ASCII ones, and the nukta and chandrabindu dropped, so
# "हज़ार"/"हजार" and "पाँच"/"पांच" are one word each (same-length or position-mapped rewrites).
DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")
_DEVA = "\u0900-\u0963\u0970-\u097f"  # Devanagari letters and signs, no digits or danda
_LETTER = rf"A-Za-zÀ-ÿ{_DEVA}"

_SYMBOLS = r"₹|\$|€|£|us\$"
_CODES = r"rs\.?|inr|usd|eur|gbp|mxn|ars|cop|clp|aed|sgd|aud|cad"
_WORDS = (
    r"rupees?|rupaye|rupay|rupiya|rupiye|rupias?|dollars?|d[oó]lares|euros?|pounds?|libras|pesos?"
    r"|dirhams"
)
_HI_WORDS = r"रुपये|रुपए|रुपया|रुपयों|रु\.?|डॉलर|यूरो"
_MULT = r"k|thousand|mil|hazaa?r|lakhs?|lacs?|crores?|cr|mn|m|million|mill[oó]n|millones"
_HI_MULT = r"हजार|लाख|करोड"
# A number as people write it: 1,50,000 / 150,000 / 5.000 / 1.5 / 2499.00
_NUMBER = r"\d{1,3}(?:[,.]\d{2,3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d+)?"
_END = rf"(?![{_LETTER}\d])"
AMOUNT = re.compile(
    rf"(?P<pre>{_SYMBOLS}|\b(?:{_CODES})\b)?\s?(?P<num>{_NUMBER})"
    rf"(?:\s?(?P<mult>(?:{_MULT})\b|(?:{_HI_MULT}){_END}))?"
    rf"(?:\s?(?P<post>{_SYMBOLS}|\b(?:{_CODES}|{_WORDS})\b|(?:{_HI_WORDS}){_END}))?",
    re.IGNORECASE,
)
PERCENT = re.compile(
    rf"(?P<num>{_NUMBER})\s?(?:%|per ?cent\b|por ciento\b|pratishat\b|fisadi\b|प्रतिशत|फीसदी)",
    re.I,
)
PHONE = re.compile(r"(?<![\w.,])\+?\d[\d\s().-]{6,}\d(?![\w])")
# A currency named anywhere in a message: "50k, we pay in euros".
CURRENCY_MENTION = re.compile(
    rf"(?P<c>{_SYMBOLS})|\b(?P<w>{_CODES}|{_WORDS})\b|(?P<h>{_HI_WORDS}){_END}", re.I
)
# Words that say a number is what the lead can spend. The strong ones make even a bare number
# a budget ("budget is 50000"); the others need an amount with a currency or a multiplier
# ("we have 200 mil pesos", not "we have 120 staff").
STRONG_BUDGET_CUES = r"budget|afford|spend|presupuesto|gastar|invertir|kharch|बजट|खर्च"
BUDGET_CUES = re.compile(
    rf"{STRONG_BUDGET_CUES}|up ?to|under|around|max(?:imum)?|within|not more than|"
    r"we have|i have|we've got|hasta|m[aá]ximo|alrededor|unos|menos de|tengo|tenemos|"
    r"contamos con|tak|andar|ke aas ?paas|se zyada nahi|paas",
    re.IGNORECASE,
)

BARE_BUDGET = re.compile(rf"(?:{STRONG_BUDGET_CUES})\D{{0,20}}?(?P<num>{_NUMBER})", re.IGNORECASE)


@dataclass(frozen=True)
class Amount:
    value: Decimal
    currency: str | None  # ISO 4217, or None when the lead named none
    text: str


def parse_number(raw: str) -> Decimal | None:
    """'1,50,000' 150000, '150,000.50' 150000.50, '5.000' 5000, '1.5' 1.5, '2,5' 2.5."""
    raw = raw.strip()
    # Thousands groups end with three digits (1,50,000 / 150,000); "49,99" is a decimal.
    if re.fullmatch(r"\d{1,3}(?:,\d{2})*,\d{3}(?:,\d{3})*(?:\.\d{1,2})?", raw):
        cleaned = raw.replace(",", "")
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?", raw):
        cleaned = raw.replace(".", "").replace(",", ".")  # 5.000,50 (Spanish, German)
    elif re.fullmatch(r"\d+,\d{1,2}", raw):
        cleaned = raw.replace(",", ".")
    else:
        cleaned = raw.replace(",", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _currency(token: str | None, default: str | None) -> str | None:
    if not token:
        return None
    code = CURRENCY_WORDS.get(token.lower().rstrip("."), token.upper())
    if code == "$":
        return default if default in DOLLAR_LIKE else "USD"
    if code == "PESO":
        return default if default in PESOS else "MXN"
    return code


def _fold(text: str) -> str:
    """Devanagari digits as ASCII, without nukta and chandrabindu (see DEVANAGARI_DIGITS)."""
    return text.translate(DEVANAGARI_DIGITS).replace("\u093c", "").replace("\u0901", "\u0902")


def amounts(text: str, *, default_currency: str | None = None) -> list[Amount]:
    """Every amount with a currency or a multiplier ("50k"), in order. Lakh and crore are
    rupees unless the amount names another currency."""
    found: list[Amount] = []
    for match in AMOUNT.finditer(_fold(text)):
        pre, post, mult = match.group("pre"), match.group("post"), match.group("mult")
        if not (pre or post or mult):
            continue
        value = parse_number(match.group("num"))
        if value is None:
            continue
        if mult:
            value *= MULTIPLIERS.get(mult.lower(), 1)
        currency = _currency(pre, default_currency) or _currency(post, default_currency)
        if currency is None and mult and mult.lower() in INDIAN_MULTIPLIERS:
            currency = "INR"
        found.append(Amount(value=value, currency=currency, text=match.group(0).strip()))
    return found


def _mentioned_currency(text: str, default: str | None) -> str | None:
    """The one currency a message names outside its amounts ("50k, in euros"), else None."""
    named = {_currency(m.group(0), default) for m in CURRENCY_MENTION.finditer(_fold(text))} - {
        None
    }
    return named.pop() if len(named) == 1 else None


def budget_in(text: str, *, default_currency: str) -> Amount | None:
    """The budget a lead states: an amount in a sentence about what they can spend. Its
    currency is the one the amount is written with, else lakh/crore's rupees, else a currency
    the message names elsewhere, else the company's."""
    mentioned = _mentioned_currency(text, default_currency)
    fallback = mentioned or default_currency
    for sentence in re.split(r"(?<=[.!?\n।])\s+", text):
        if not BUDGET_CUES.search(sentence):
            continue
        found = amounts(sentence, default_currency=default_currency)
        if not found:
            # "budget is 50000": a bare number after a budget word is an amount too
            bare = BARE_BUDGET.search(sentence)
            value = parse_number(bare.group("num")) if bare is not None else None
            if bare is not None and value is not None and value >= 100:
                return Amount(value=value, currency=fallback, text=bare.group(0).strip())
            continue
        best = max(found, key=lambda amount: amount.value)
        return Amount(best.value, best.currency or fallback, best.text)
    return None


# --- number words -----------------------------------------------------------------------------
#
# A compact reader of spelled-out numbers in English, Spanish, Hindi and Hinglish: enough for
# the way prices, discounts and counts are written in a sales chat ("five thousand rupees",
# "twenty percent", "cinco mil", "पाँच हज़ार", "paanch hazaar", "dedh lakh", "साढ़े तीन हज़ार").
# text2num reads English, Spanish and five other European languages but neither Hindi nor
# Hinglish, word2number and indian-word2number English only, and none is in requirements.lock:
# a dependency for half the languages would not pay. Hindi has its own
# word for every number up to 99; this reads 1-20, the tens, 25, 99, and the fractions dedh
# (1.5), dhai (2.5) and saadhe (+0.5); other compounds ("सैंतीस") are not read.

UNITS: dict[str, Decimal] = {
    word: Decimal(value)
    for words, value in [
        ("zero cero शून्य", 0), ("one uno una un ek एक", 1), ("two dos do दो", 2),
        ("three tres teen tin तीन", 3), ("four cuatro char chaar चार", 4),
        ("five cinco paanch panch पांच", 5), ("six seis chhe chhah che छह छः छे", 6),
        ("seven siete saat सात", 7), ("eight ocho aath आठ", 8), ("nine nueve nau नौ", 9),
        ("ten diez das दस", 10), ("eleven once gyarah gyara ग्यारह", 11),
        ("twelve doce barah bara बारह", 12), ("thirteen trece terah तेरह", 13),
        ("fourteen catorce chaudah चौदह", 14), ("fifteen quince pandrah पंद्रह पन्द्रह", 15),
        ("sixteen dieciséis dieciseis solah सोलह", 16), ("seventeen diecisiete satrah सत्रह", 17),
        ("eighteen dieciocho atharah athara अठारह", 18),
        ("nineteen diecinueve unnis unees उन्नीस", 19), ("twenty veinte bees बीस", 20),
        ("veintiuno veintiún", 21), ("veintidós veintidos", 22), ("veintitrés", 23),
        ("veinticuatro", 24), ("veinticinco pachchis pachees pacchis पच्चीस", 25),
        ("thirty treinta tees तीस", 30), ("forty cuarenta chalees chalis चालीस", 40),
        ("fifty cincuenta pachaas pachas पचास", 50), ("sixty sesenta साठ", 60),
        ("seventy setenta sattar सत्तर", 70), ("eighty ochenta assi अस्सी", 80),
        ("ninety noventa nabbe नब्बे", 90), ("ninyanve निन्यानवे निन्यानबे", 99),
        ("cien ciento", 100), ("doscientos doscientas", 200), ("trescientos trescientas", 300),
        ("cuatrocientos cuatrocientas", 400), ("quinientos quinientas", 500),
        ("seiscientos seiscientas", 600), ("setecientos setecientas", 700),
        ("ochocientos ochocientas", 800), ("novecientos novecientas", 900),
        ("dedh dedhh डेढ", 1.5), ("dhai dhaai ढाई", 2.5),
    ]
    for word in words.split()
}  # fmt: skip
HUNDREDS = frozenset({"hundred", "sau", "सौ"})
SCALES: dict[str, int] = {
    "thousand": 1_000, "mil": 1_000, "hazaar": 1_000, "hazar": 1_000, "हजार": 1_000,
    "lakh": 100_000, "lakhs": 100_000, "lac": 100_000, "लाख": 100_000,
    "million": 1_000_000, "millón": 1_000_000, "millon": 1_000_000, "millones": 1_000_000,
    "crore": 10_000_000, "crores": 10_000_000, "करोड": 10_000_000,
}  # fmt: skip
HALF_MORE = frozenset({"saadhe", "sadhe", "saade", "sade", "साढे"})  # "saadhe teen" 3.5
# Words that are also everyday words ("do you", "mil jayega", "un plan"): alone, read only
# before money, a percentage or a time (see _spell_out).
AMBIGUOUS = frozenset({"do", "mil", "das", "un", "una", "char", "tin", "che"})
CONNECTORS = frozenset({"and", "y", "-"})
ARTICLES = frozenset({"un", "una"})
_NUMBER_WORDS = sorted({*UNITS, *HUNDREDS, *SCALES, *HALF_MORE}, key=len, reverse=True)
_NW = "|".join(map(re.escape, _NUMBER_WORDS))
NUMBER_PHRASE = re.compile(
    # not after a digit ("5 lakh" is AMOUNT's) nor "por" ("por ciento" is a percent sign)
    rf"(?<![{_LETTER}\d])(?<!por\s)(?<!\d\s)(?:{_NW})"
    rf"(?:(?:\s*-\s*|\s+(?:and\s+|y\s+)?)(?:{_NW}))*(?![{_LETTER}])",
    re.IGNORECASE,
)
_FIGURE_AHEAD = re.compile(
    rf"\s*(?:{_SYMBOLS}|(?:{_CODES}|{_WORDS})\b|{_HI_WORDS}|per ?cent\b|por ciento|%|प्रतिशत"
    r"|[ap]\.?\s?m\b|baje\b|बजे|de la (?:mañana|manana|tarde|noche)\b)",
    re.I,
)


def words_value(phrase: str) -> Decimal | None:
    """The value of a run of number words: "two hundred and fifty thousand" 250000, "cinco
    mil" 5000, "ek lakh pachaas hazaar" 150000, "साढ़े तीन हज़ार" 3500; None if it is no number."""
    tokens = [t for t in re.split(r"[\s-]+", phrase.lower()) if t and t not in CONNECTORS]
    if len(tokens) > 1 and tokens[0] in ARTICLES and tokens[1] not in {*SCALES, *HUNDREDS}:
        tokens = tokens[1:]  # "un diez por ciento" is ten percent, "un millón" a million
    total, current, half, seen = Decimal(0), Decimal(0), False, False
    for token in tokens:
        if token in HALF_MORE:
            half = True
        elif token in UNITS:
            current += UNITS[token] + (Decimal("0.5") if half else 0)
            half, seen = False, True
        elif token in HUNDREDS:
            current = (current or Decimal(1)) * 100
            seen = True
        elif token in SCALES:
            total += (current or Decimal(1)) * SCALES[token]
            current, seen = Decimal(0), True
    return total + current if seen else None


def _spell_out(text: str) -> tuple[str, list[int]]:
    """`text` with its spelled-out numbers written in digits ("five thousand rupees" ->
    "5000 rupees"), and for each position of the new text its position in `text`."""
    out: list[str] = []
    origin: list[int] = []
    last = 0
    for match in NUMBER_PHRASE.finditer(text):
        phrase = match.group(0)
        words = [t for t in re.split(r"[\s-]+", phrase.lower()) if t not in CONNECTORS]
        value = words_value(phrase)
        if value is None:
            continue
        # A word up to ten ("two week pilot", "do you") stays a word, as a digit up to ten
        # does, unless money, a percentage or a time follows ("six pm", "five rupees").
        small = value <= 10 or (len(words) == 1 and words[0] in AMBIGUOUS)
        if small and not _FIGURE_AHEAD.match(text, match.end()):
            continue
        digits = _normal(value)
        out.append(text[last : match.start()])
        origin.extend(range(last, match.start()))
        out.append(digits)
        origin.extend([match.start()] * len(digits))
        last = match.end()
    out.append(text[last:])
    origin.extend(range(last, len(text) + 1))
    return "".join(out), origin


# --- the guardrail ----------------------------------------------------------------------------


def _normal(value: Decimal) -> str:
    return (
        format(value.normalize(), "f") if value == value.to_integral() else str(value.normalize())
    )


HINDI_MONTHS = {
    "जनवरी": 1, "फरवरी": 2, "मार्च": 3, "अप्रैल": 4, "मई": 5, "जून": 6, "जुलाई": 7,
    "अगस्त": 8, "सितंबर": 9, "सितम्बर": 9, "अक्टूबर": 10, "अक्तूबर": 10, "नवंबर": 11,
    "नवम्बर": 11, "दिसंबर": 12, "दिसम्बर": 12,
}  # fmt: skip
ALL_MONTHS = {**MONTHS, **HINDI_MONTHS}
_MONTH_NAMES = "|".join(sorted(ALL_MONTHS, key=len, reverse=True))
DATE = re.compile(
    rf"\b(?P<y1>\d{{4}})-(?P<m1>\d{{1,2}})-(?P<d1>\d{{1,2}})\b"
    rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of|\s+de)?\s+(?P<m2>{_MONTH_NAMES})"
    rf"(?![{_LETTER}])\.?"
    rf"|(?<![{_LETTER}])(?P<m3>{_MONTH_NAMES})\.?\s+(?P<d3>\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"|\b(?P<n>\d{{1,2}}[/.]\d{{1,2}}(?:[/.]\d{{2,4}})?)\b(?![.,]\d)"
    r"(?!\s?(?:[ap]\.?\s?m\b|baje\b|बजे|hrs?\b|h\b|de la\s))",  # "9.30 am" is a time
    re.IGNORECASE,
)


def _date_key(match: re.Match[str]) -> str | None:
    """A date as "month-day" (named or ISO months, or digits only one way can read: 15/01),
    else its digits as written (11/12: whether it is November or December is not ours to
    guess)."""
    if match.group("y1"):
        return f"{int(match.group('m1'))}-{int(match.group('d1'))}"
    for day, month in (("d2", "m2"), ("d3", "m3")):
        if match.group(day):
            number = ALL_MONTHS.get(match.group(month).lower().rstrip("."))
            return f"{number}-{int(match.group(day))}" if number else None
    raw = match.group("n")
    if raw and "." in raw and len(raw.split(".")[-1]) != 2 and raw.count(".") == 1:
        return None  # "4.5" is a number, not a date
    if not raw:
        return None
    first, second = (int(part) for part in re.split(r"[/.]", raw)[:2])
    if first > 12 >= second:
        return f"{second}-{first}"  # 15/01 can only be 15 January
    if second > 12 >= first:
        return f"{first}-{second}"  # 01/15 can only be 15 January too
    return raw.replace(".", "/")


# "7 999", "7\u202f999", "7'999": thousands written with a space or an apostrophe. Read as
# "7,999" (the same length, so positions in the text stay where they were).
GROUP_SEPARATOR = re.compile(
    r"(?<=(?<![\d,.])\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))|"
    r"(?<=(?<![\d,.])\d\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))|"
    r"(?<=(?<![\d,.])\d\d\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))"
)
# Times of day: "6 pm", "6 p. m.", "18:00", "18 h", "9.30am", "शाम 6 बजे", "shaam 6 baje",
# "6 de la tarde". The part of the day, when said, makes the hour a 24-hour one.
PM_WORDS = r"p\.?\s?m\.?|tarde|noche|evening|night|afternoon|shaam|sham|raat|dopahar|शाम|रात|दोपहर"
TIME = re.compile(
    r"(?:(?P<before>shaam|sham|raat|dopahar|subah|शाम|रात|दोपहर|सुबह)\s+(?:ko\s+|को\s+)?)?"
    r"\b(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?\s?"
    r"(?:(?P<half>a\.?\s?m\.?|p\.?\s?m\.?)(?![a-z])|(?P<clock>hrs?\b|h\b|baje\b|बजे)"
    r"|(?:\s?de la\s+(?P<es>mañana|manana|tarde|noche)\b)"
    r"|(?:\s?(?:o'clock\s+)?in the\s+(?P<en>morning|afternoon|evening|night)\b))"
    r"|\b(?P<h2>\d{1,2}):(?P<m2>\d{2})\b",
    re.IGNORECASE,
)


def _time_key(match: re.Match[str]) -> str | None:
    """ "HH:MM" on a 24-hour clock, with "~" in front when the text does not say which half of
    the day (a "6:00" may be 6 am or 6 pm; a "6 pm" is only 18:00)."""
    hour = int(match.group("h") or match.group("h2"))
    minute = int(match.group("m") or match.group("m2") or 0)
    if hour > 24 or minute > 59:
        return None
    said = " ".join(
        filter(None, (match.group(g) for g in ("half", "es", "en", "before")))  # one at most
    )
    if said and hour <= 12:
        hour = hour % 12 + (12 if re.match(rf"(?:{PM_WORDS})", said, re.I) else 0)
        return f"{hour:02d}:{minute:02d}"
    if hour > 12 or hour == 0:
        return f"{hour % 24:02d}:{minute:02d}"
    return f"~{hour:02d}:{minute:02d}"


def _times_match(draft: str, source: str) -> bool:
    if draft.startswith("~") or source.startswith("~"):
        d, s = draft.lstrip("~"), source.lstrip("~")
        return (int(d[:2]) % 12, d[3:]) == (int(s[:2]) % 12, s[3:])
    return draft == source


# What a count counts, one word for each way of saying it (docs/ai.md 6): "500 customers"
# grounds "500 clients" and "500 ग्राहक", never "500 users" or "₹500".
NOUNS = {
    "customer": "customer clients client clientes cliente ग्राहक grahak graahak",
    "user": "user usuarios usuario यूजर",
    "seat": "seat asientos asiento licencias licencia licenses license licences licence सीट",
    "employee": "employee empleados empleado staff कर्मचारी",
    "person": "person people personas persona log लोग",
    "minute": "minute min mins minuto minutos मिनट",
    "hour": "hour hora horas ghante ghanta घंटे घंटा",
    "day": "day días dias día dia din दिन",
    "week": "week semana semanas hafte hafta हफ्ते हफ्ता सप्ताह",
    "month": "month mes meses mahine mahina महीने महीना",
    "year": "year año años saal साल वर्ष",
    "session": "session sesión sesiones sesion class classes clase clases",
    "project": "project proyecto proyectos",
    "message": "message mensaje mensajes",
}
NOUN_OF = {word: noun for noun, words in NOUNS.items() for word in words.split()}
# Nouns a count of which is a figure even up to ten ("7 days", "3 seats").
MEASURES = frozenset({"minute", "hour", "day", "week", "month", "year", "seat", "user", "session"})
NOT_NOUNS = frozenset(
    "a an the and or of to for in on at by per with is are was be it its de del la el los las y "
    "o para por en con al se ka ki ke ko hai hain aur mein me tak par pe से का की के को है हैं और "
    "में या तक पर".split()
)
PERIODS = {
    "month": r"per month|a month|/\s?mo(?:nth)?\b|monthly|every month|each month|p\.\s?m\b\.?|"
    r"al mes|por mes|/\s?mes|mensual\w*|cada mes|per mahina|har mahine|mahine ka|mahina|"
    r"प्रति माह|प्रति महीना|हर महीने|महीने|महीना|मासिक",
    "year": r"per year|a year|/\s?y(?:ea)?r\b|yearly|annually|annual|per annum|every year|"
    r"p\.\s?a\b\.?|/\s?annum|"
    r"al año|por año|/\s?año|anual\w*|cada año|saalana|salana|har saal|per saal|saal|"
    r"प्रति वर्ष|प्रति साल|सालाना|हर साल|साल|वार्षिक",
    "week": r"per week|a week|/\s?w(?:ee)?k\b|weekly|a la semana|por semana|semanal\w*|"
    r"har hafte|प्रति सप्ताह|हर हफ्ते",
    "day": r"per day|a day|/\s?day\b|daily|al día|por día|diario|rozana|har din|प्रति दिन|रोजाना",
}
PERIOD = re.compile(
    # not inside a compound: "half-yearly" is no year
    "(?<!-)(?:" + "|".join(f"(?P<{name}>{pattern})" for name, pattern in PERIODS.items()) + ")",
    re.IGNORECASE,
)
CURRENCY_AFTER_A_WORD = re.compile(
    rf"[ \t]+[{_LETTER}]+[ \t]+(?P<c>(?:{_CODES}|{_WORDS})\b|(?:{_HI_WORDS}){_END})", re.I
)
# A bare number in a sentence about what something costs is an amount (currency unsaid).
PRICE_CUES = re.compile(
    r"\b(?:price[sd]?|pricing|cost|costs|fee|fees|charge[sd]?|pay|rate|precio|precios|"
    r"cuesta|cuestan|cobramos|pagar|pagas|tarifa|kitna|kitne|kitni|daam|dam|keemat|kimat|"
    r"fees)\b|कीमत|दाम|शुल्क|फीस|कितने|कितना",
    re.IGNORECASE,
)
# A yes/no question, whose figure the lead proposes rather than states: "does Premium include
# 20 seats?", "¿incluye 20 licencias?", "20 seats milti hain kya?", "is it 999, right?".
YES_NO = re.compile(
    r"^\W*(?:is|are|do|does|did|can|could|will|would|should|isn't|doesn't|kya|¿)\b|¿|क्या"
    r"|\b(?:right|correct|kya|na|naa|no|verdad|cierto|sahi)\W*$",
    re.IGNORECASE,
)
# The lead's own budget in a reply ("your budget of ₹50,000", "tu presupuesto de", "आपका
# बजट"): money the lead's words may ground (docs/ai.md 6).
THEIR_BUDGET = re.compile(
    r"(?:\b(?:your|you|you're|tu|tus|su|sus|aapka|aapke|aapki|apka|apke|apki|aap|ap)\b|आप)"
    r"[^.!?\n।]{0,40}?(?:budget|presupuesto|बजट)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Figure:
    """One figure of a text. kind: money, percent, time, date, count, number (a bare number
    that does not say of what), phone. value: the normalised value ("4999", "18:00", "12-5",
    digits)."""

    kind: str
    value: str
    written: str
    currency: str | None = None
    period: str | None = None
    noun: str | None = None
    is_theirs: bool = False  # in the reply: stated as the lead's budget
    is_budget: bool = False  # in the lead's words: said of their budget
    is_asked: bool = False  # in the lead's words: in a question ("is it 999?", "999?")
    is_proposed: bool = False  # in the lead's words: a yes/no question ("does it cover 20 seats?")


# A table cell ends a sentence too: a quoted row is as separate from the next as its line was.
SENTENCE_END = re.compile(r"[!?\n।|]|\.(?!\d)")


def _sentence_at(text: str, position: int) -> str:
    """The sentence around `position` (a full stop in "4.5" ends none)."""
    start = max((m.end() for m in SENTENCE_END.finditer(text, 0, position)), default=0)
    end = SENTENCE_END.search(text, position)
    return text[start : end.start() if end else len(text)]


def _period(text: str, start: int, end: int) -> str | None:
    """The billing period said right after an amount ("per month", "al año", "प्रति माह"), or
    just before it ("monthly fee of"), with no other number in between."""
    # a sentence's full stop ends the search, a dot inside "p.a." does not
    after = re.split(r"[\d!?\n।…;(|]|\.(?!\w)", text[end : end + 30], maxsplit=1)[0]
    if ":" in after:
        after = ""  # a label ("Half-yearly: ₹11,999") belongs to the amount after it
    found = PERIOD.search(after)
    if found is None:
        before = re.split(r"[\d.!?\n।…;]", text[max(0, start - 25) : start])[-1]
        found = next(iter(reversed(list(PERIOD.finditer(before)))), None)
    return found.lastgroup if found is not None else None


NOUN_AFTER = re.compile(rf"[ \t]*-?[ \t]*([{_LETTER}]+)(?:[ \t]+([{_LETTER}]+))?")


def _canonical(word: str) -> str | None:
    """The noun NOUNS knows a word as, plurals too ("customers", "clientes", "ग्राहकों")."""
    low = word.lower()
    return next(
        (NOUN_OF[w] for w in (low, low[:-1], low[:-2]) if w in NOUN_OF and len(w) > 1), None
    )


def _noun_after(text: str, end: int) -> tuple[str, int] | None:
    """The word a number counts ("500 customers" customer, "14-day" day, "500 happy
    clients" customer), in the same clause within two words, and where it ends; or None."""
    match = NOUN_AFTER.match(text, end)
    if match is None:
        return None
    words = [(i, w) for i, w in enumerate(match.groups(), 1) if w and w.lower() not in NOT_NOUNS]
    if not words:
        return None
    known = next(((i, n) for i, n in ((i, _canonical(w)) for i, w in words) if n), None)
    if known is not None:
        return known[1], match.end(known[0])
    index, word = words[0]
    if index != 1:
        return None  # an unknown word counts only right after the number ("5000 mein ho")
    low = word.lower()
    return (low[:-1] if low.endswith("s") and len(low) > 3 else low), match.end(index)


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


class _Reader:
    """Finds the figures of one text, each kind once (what an earlier kind took is not read
    again), and maps each back to how the text wrote it."""

    def __init__(self, text: str) -> None:
        self.original = text
        # _fold, keeping for each character its position in `text`
        origin: list[int] = []
        plain: list[str] = []
        for index, char in enumerate(text.translate(DEVANAGARI_DIGITS)):
            if char == "\u093c":
                continue
            plain.append("\u0902" if char == "\u0901" else char)
            origin.append(index)
        origin.append(len(text))
        spelled, spelled_origin = _spell_out("".join(plain))
        self.text = GROUP_SEPARATOR.sub(",", spelled)
        self.origin = [origin[i] for i in spelled_origin]
        self.spans: list[tuple[int, int]] = []
        self.found: list[Figure] = []

    def written(self, start: int, end: int) -> str:
        return self.original[self.origin[start] : self.origin[end]].strip()

    def take(
        self, pattern: re.Pattern[str], make: Callable[[re.Match[str]], Figure | None]
    ) -> None:
        for match in pattern.finditer(self.text):
            if _inside(match.start(), self.spans):
                continue
            figure = make(match)
            if figure is not None:
                self.found.append(figure)
                self.spans.append(match.span())


def figures(text: str) -> list[Figure]:
    """Every figure of `text`, in the order of the kinds (docs/ai.md 6)."""
    reader = _Reader(text)
    t = reader.text

    def date(m: re.Match[str]) -> Figure | None:
        key = _date_key(m)
        return Figure("date", key, reader.written(*m.span())) if key else None

    def time(m: re.Match[str]) -> Figure | None:
        key = _time_key(m)
        return Figure("time", key, reader.written(*m.span())) if key else None

    def phone(m: re.Match[str]) -> Figure | None:
        digits = re.sub(r"\D", "", m.group(0))
        # A long digit run that is really an amount ("1,50,000") is not a phone number.
        if len(digits) >= 7 and not re.fullmatch(_NUMBER, m.group(0).strip()):
            return Figure("phone", digits, reader.written(*m.span()))
        return None

    def percent(m: re.Match[str]) -> Figure | None:
        value = parse_number(m.group("num"))
        return Figure("percent", _normal(value), reader.written(*m.span())) if value else None

    def amount(m: re.Match[str]) -> Figure | None:
        value = parse_number(m.group("num"))
        if value is None:
            return None
        pre, post, mult = m.group("pre"), m.group("post"), m.group("mult")
        if mult:
            value *= MULTIPLIERS.get(mult.lower(), 1)
        written = reader.written(*m.span())
        currency = _code(pre) or _code(post)
        if currency is None:  # "4,999 Indian rupees", "4,999 US dollars"
            later = CURRENCY_AFTER_A_WORD.match(t, m.end())
            currency = _code(later.group("c")) if later else None
        if currency is None and mult and mult.lower() in INDIAN_MULTIPLIERS:
            currency = "INR"
        sentence = _sentence_at(t, m.start("num"))
        stop = SENTENCE_END.search(t, m.end())
        asked = "¿" in sentence or (stop is not None and stop.group() == "?")
        proposed = asked and bool(YES_NO.search(sentence))
        money = Figure(
            "money",
            _normal(value),
            written,
            currency=currency,
            period=_period(t, m.start(), m.end()),
            is_theirs=bool(THEIR_BUDGET.search(sentence)),
            is_budget=bool(BUDGET_CUES.search(sentence)),
            is_asked=asked,
            is_proposed=proposed,
        )
        if currency is not None:
            return money
        counts = _noun_after(t, m.end())
        # "4,999 a month" is a price per month, "12 mahine" twelve months ("4,999 mahina" is
        # a price again: nobody counts 4,999 months)
        first = NOUN_AFTER.match(t, m.end())
        counted = first is not None and _canonical(first.group(1)) is not None and value <= 100
        if counts is not None and (counted or not PERIOD.match(t[m.end() :].lstrip(" -"))):
            noun, noun_end = counts
            if value <= 10 and value == value.to_integral() and noun not in MEASURES:
                return None  # "3 plans": a counting word
            written = reader.written(m.start(), noun_end)
            return replace(
                money, kind="count", written=written, currency=None, period=None, noun=noun
            )
        year = value == value.to_integral() and 1900 <= value <= 2100 and not mult
        if money.period is not None or (PRICE_CUES.search(sentence) and not year):
            if value <= 10 and value == value.to_integral() and not mult:
                return None
            return money
        if mult or value > 10 or value != value.to_integral():
            return replace(money, kind="number")
        return None

    reader.take(DATE, date)
    reader.take(TIME, time)
    reader.take(PHONE, phone)
    reader.take(PERCENT, percent)
    for match in AMOUNT.finditer(t):
        if _inside(match.start("num"), reader.spans):
            continue
        figure = amount(match)
        if figure is not None:
            reader.found.append(figure)
    return reader.found


def _code(token: str | None) -> str | None:
    """A currency as written: its ISO code, or "$"/"PESO" whose country is the company's."""
    return CURRENCY_WORDS.get(token.lower().rstrip("."), token.upper()) if token else None


def _currencies_match(draft: str | None, source: str | None, company: str | None) -> bool:
    """A reply that names no currency, or a source that names none, cannot state the wrong
    one; "$" is the company's dollar-like currency, else the US dollar."""
    if draft is None or source is None:
        return True
    return _currency(draft, company) == _currency(source, company)


def _grounds(source: Figure, figure: Figure, *, lead: bool, currency: str | None) -> bool:
    """Whether `source` (a company source's figure, or the lead's when `lead`) grounds
    `figure` of a reply: the same kind and value (docs/ai.md 6)."""
    if figure.kind == "phone":
        return source.kind == "phone" and (
            figure.value in source.value or source.value.endswith(figure.value[-10:])
        )
    if figure.kind == "time":
        return source.kind == "time" and _times_match(figure.value, source.value)
    if source.value != figure.value or source.kind == "phone":
        return False
    if figure.kind == "money":
        if lead and not (figure.is_theirs and source.is_budget):
            return False  # the lead's words ground their budget, never a price of ours
        if source.kind == "number" and lead:
            return figure.period is None
        return (
            source.kind == "money"
            and _currencies_match(figure.currency, source.currency, currency)
            and figure.period in (None, source.period)
        )
    if figure.kind == "percent":
        return source.kind == "percent" and not lead
    if figure.kind == "count":
        if lead and source.is_proposed:  # "does Premium cover 20 seats?" is not a yes
            return False
        return source.kind == "number" or (source.kind == "count" and source.noun == figure.noun)
    if figure.kind == "number":
        if lead:  # a number the lead asked about ("is it 999?") is a price they propose
            return source.kind == "count" or (source.kind == "number" and not source.is_asked)
        return source.kind in ("number", "count", "money")
    return source.kind == figure.kind  # date


def ungrounded(
    reply: str,
    company_sources: Iterable[str],
    lead_words: Iterable[str] = (),
    *,
    currency: str | None = None,
) -> list[str]:
    """The figures of `reply` no source grounds, as the reply wrote them. `company_sources`
    (passages, the company card) may ground any figure; `lead_words` only dates, times,
    counts, phone numbers, bare numbers and money the reply gives as the lead's budget
    (docs/ai.md 6). `currency` is the company's, for reading "$" and "pesos"."""
    company = [f for text in company_sources for f in figures(text)]
    leads = [f for text in lead_words for f in figures(text)]
    missing = [
        figure.written
        for figure in figures(reply)
        if not any(_grounds(s, figure, lead=False, currency=currency) for s in company)
        and not any(_grounds(s, figure, lead=True, currency=currency) for s in leads)
    ]
    return list(dict.fromkeys(missing))


def card_values(card: Any) -> Iterable[str]:
    """Every value of the company card, as the text a figure may be grounded in."""
    if isinstance(card, dict):
        for value in card.values():
            yield from card_values(value)
    elif isinstance(card, list):
        for value in card:
            yield from card_values(value)
    elif card is not None:
        yield str(card)
