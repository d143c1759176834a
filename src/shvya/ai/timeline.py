"""When a lead means to buy, from their own words: "next month", "in 2 weeks", "agle mahine",
"el próximo mes". Resolved against the message's own time (its `received_at` in the
company's time zone), never against the server's clock: a message imported from last year
that says "next month" means the month after it was written.

A timeline is a window of dates, [start, end]: "next month" is the whole month, "in 2 weeks"
a single day, "asap" the coming week. English, Spanish and Hindi written in Latin letters.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

NUMBER_WORDS = {
    # English
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "a couple of": 2,
    "few": 3, "a few": 3,
    # Spanish
    "un": 1, "una": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "nueve": 9, "diez": 10, "par de": 2, "un par de": 2,
    # Hindi in Latin letters
    "ek": 1, "do": 2, "teen": 3, "char": 4, "chaar": 4, "paanch": 5, "panch": 5, "chhe": 6,
    "che": 6, "saat": 7, "aath": 8, "nau": 9, "das": 10,
}  # fmt: skip
UNITS = {
    "day": "day", "days": "day", "dia": "day", "dias": "day", "din": "day",
    "week": "week", "weeks": "week", "semana": "week", "semanas": "week",
    "hafte": "week", "hafta": "week", "hafton": "week",
    "month": "month", "months": "month", "mes": "month", "meses": "month",
    "mahina": "month", "mahine": "month", "mahino": "month", "mahinon": "month",
    "year": "year", "years": "year", "ano": "year", "anos": "year", "saal": "year",
}  # fmt: skip
MONTHS = {
    "january": 1, "jan": 1, "enero": 1, "february": 2, "feb": 2, "febrero": 2,
    "march": 3, "mar": 3, "marzo": 3, "april": 4, "apr": 4, "abril": 4, "may": 5, "mayo": 5,
    "june": 6, "jun": 6, "junio": 6, "july": 7, "jul": 7, "julio": 7, "august": 8, "aug": 8,
    "agosto": 8, "september": 9, "sept": 9, "sep": 9, "septiembre": 9, "setiembre": 9,
    "october": 10, "oct": 10, "octubre": 10, "november": 11, "nov": 11, "noviembre": 11,
    "december": 12, "dec": 12, "diciembre": 12,
}  # fmt: skip
# The month names in Devanagari, as fold() leaves them (no nukta): "फरवरी तक", "मार्च में".
MONTHS_HI = {
    "जनवरी": 1, "फरवरी": 2, "मार्च": 3, "अप्रैल": 4, "अप्रेल": 4, "मई": 5, "जून": 6,
    "जुलाई": 7, "अगस्त": 8, "सितंबर": 9, "सितम्बर": 9, "अक्टूबर": 10, "अक्तूबर": 10,
    "नवंबर": 11, "नवम्बर": 11, "दिसंबर": 12, "दिसम्बर": 12,
}  # fmt: skip
MONTHS.update(MONTHS_HI)
WEEKDAYS = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sunday": 6, "lunes": 0, "martes": 1, "miercoles": 2, "jueves": 3, "viernes": 4,
    "sabado": 5, "domingo": 6,
}  # fmt: skip

_NUMBER = r"(?P<n>\d{1,3}|" + "|".join(sorted(map(re.escape, NUMBER_WORDS), key=len)[::-1]) + ")"
_UNIT = r"(?P<unit>" + "|".join(sorted(UNITS, key=len)[::-1]) + ")"
_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len)[::-1]) + ")"
_WEEKDAY = r"(?P<weekday>" + "|".join(sorted(WEEKDAYS, key=len)[::-1]) + ")"

# (pattern, kind), most specific first; each matched against the folded text.
PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), kind)
    for p, kind in [
        (rf"\b(?:within|in the next|inside|dentro de los proximos|en los proximos)\s+"
         rf"{_NUMBER}\s+{_UNIT}\b", "within"),
        (rf"\b(?:in|after|en|dentro de|within the next)\s+(?:about\s+|unos?\s+|unas\s+)?"
         rf"{_NUMBER}\s+{_UNIT}\b", "in"),
        (rf"\b{_NUMBER}\s+{_UNIT}\s+(?:mein|me|main|baad|ke andar|mai)\b", "in"),
        (rf"\b{_NUMBER}\s+{_UNIT}\s+(?:from now|later|de ahora)\b", "in"),
        (r"\b(?:day after tomorrow|pasado manana|parso|parson)\b", "day+2"),
        (r"\b(?:tomorrow|manana|kal)\b", "day+1"),
        (r"\b(?:today|tonight|hoy|aaj)\b", "day+0"),
        (r"\b(?:next|coming|la proxima|la siguiente|agle|agla|agli)\s+"
         r"(?:week|semana|hafte|hafta)\b|\bsemana que viene\b", "next_week"),
        (r"\b(?:this|esta|is|iss)\s+(?:week|semana|hafte|hafta)\b", "this_week"),
        (r"\b(?:next|coming|d?el proximo|d?el siguiente|agle|agla)\s+"
         r"(?:month|mes|mahine|mahina)\b"
         r"|\bmes que viene\b", "next_month"),
        (r"\b(?:this|este|is|iss)\s+(?:month|mes|mahine|mahina)\b|\bend of (?:the )?month\b",
         "this_month"),
        (r"\b(?:next|coming|d?el proximo|d?el siguiente|agle|agla)\s+(?:year|ano|saal)\b"
         r"|\bano que viene\b", "next_year"),
        (r"\b(?:this|este|is|iss)\s+(?:year|ano|saal)\b", "this_year"),
        (r"\b(?:asap|as soon as possible|immediately|right away|urgently|urgent|"
         r"lo antes posible|cuanto antes|de inmediato|ya mismo|abhi|turant|jaldi)\b", "asap"),
        (rf"\b(?:by|before|this|next|on|el|para el|el proximo)\s+{_WEEKDAY}\b", "weekday"),
        (rf"\b(?:in|by|before|during|around|en|para|antes de|hasta)\s+(?:early\s+|late\s+)?"
         rf"{_MONTH}\b", "month"),
        (rf"\b{_MONTH}\s+(?:mein|me|tak|main|se)\b", "month"),
        (rf"\b(?:from|starting|start in|a partir de|desde)\s+{_MONTH}\b", "month"),
        # Hindi in Devanagari, as fold() leaves it (no nukta): "अगले महीने", "अगले हफ्ते".
        (r"(?:अगले|अगला|अगली)\s+(?:महीने|महीना|मास)", "next_month"),
        (r"(?:अगले|अगला|अगली)\s+(?:हफ्ते|हफ्ता|सप्ताह)", "next_week"),
        (r"(?:अगले|अगला)\s+(?:साल|वर्ष)", "next_year"),
        (r"(?:इस)\s+(?:महीने|महीना|मास)", "this_month"),
        (r"(?:इस)\s+(?:हफ्ते|हफ्ता|सप्ताह)", "this_week"),
        (r"(?:जल्दी से जल्दी|जितनी जल्दी हो सके|तुरंत|अभी)", "asap"),
        (r"(?<!\S)परसों(?!\S)", "day+2"),
        (r"(?<!\S)आज(?!\S)", "day+0"),
        (r"(?<!\S)(?P<month>" + "|".join(MONTHS_HI) + r")\s+(?:में|तक|से)(?!\S)", "month"),
    ]
]  # fmt: skip
# A deadline around a timeline: "by next month", "agle mahine tak", "para el próximo mes",
# "अगले महीने तक" are the lead's words for the same window; "before next month", "agle
# mahine se pehle", "antes del próximo mes" end the day before it starts.
DEADLINE_BEFORE = re.compile(r"(?:\b(?:by|until|till|no later than|para|hasta)\s+)$", re.IGNORECASE)
DEADLINE_AFTER = re.compile(r"^(?:\s+(?:tak|tak mein|तक))(?!\w)", re.IGNORECASE)
BEFORE_BEFORE = re.compile(r"(?:\b(?:before|antes(?: de(?:l)?)?)\s+)$", re.IGNORECASE)
BEFORE_AFTER = re.compile(r"^(?:\s+(?:se pehle|se pahle|से पहले))(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Timeline:
    text: str  # the lead's words
    start: date
    end: date


NUKTA = "\u093c"


def fold(text: str) -> str:
    """Lower case without accents, so "próximo" and "proximo" read alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Devanagari's virama joins letters ("हफ्ते") and stays; its nukta ("हफ़्ते") goes, so a
    # pattern written without it reads both spellings.
    return "".join(
        c
        for c in decomposed
        if c != NUKTA and (not unicodedata.combining(c) or "\u0900" <= c <= "\u097f")
    )


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _shift(base: date, amount: int, unit: str) -> date:
    if unit == "day":
        return base + timedelta(days=amount)
    if unit == "week":
        return base + timedelta(weeks=amount)
    if unit == "month":
        return add_months(base, amount)
    return add_months(base, 12 * amount)


def _number(raw: str) -> int | None:
    raw = raw.strip().lower()
    if raw.isdigit():
        return int(raw)
    return NUMBER_WORDS.get(raw)


def resolve_timeline(text: str, *, base: date) -> Timeline | None:
    """The first timeline the text states, resolved against `base` (the message's date)."""
    folded = fold(text)
    # "por la mañana" is "in the morning", not tomorrow.
    folded = re.sub(r"\b(?:por|de|en) la manana\b", lambda m: " " * len(m.group(0)), folded)
    for pattern, kind in PATTERNS:
        match = pattern.search(folded)
        if match is None:
            continue
        window = _window(kind, match, base)
        if window is None:
            continue
        start, end = window
        left, right = match.start(), match.end()
        head = BEFORE_BEFORE.search(folded[:left])
        tail = BEFORE_AFTER.match(folded[right:])
        if (head or tail) and start > base:
            start, end = base, start - timedelta(days=1)
        head = head or DEADLINE_BEFORE.search(folded[:left])
        tail = tail or DEADLINE_AFTER.match(folded[right:])
        if head is not None:
            left = head.start()
        elif tail is not None:
            right += tail.end()
        return Timeline(text=_original(text, folded, left, right), start=start, end=end)
    return None


def _window(kind: str, match: re.Match[str], base: date) -> tuple[date, date] | None:
    if kind in ("in", "within"):
        amount = _number(match.group("n"))
        if amount is None or amount > 120:
            return None
        target = _shift(base, amount, UNITS[match.group("unit")])
        return (base, target) if kind == "within" else (target, target)
    if kind.startswith("day+"):
        day = base + timedelta(days=int(kind[4:]))
        return day, day
    if kind == "this_week":
        return base, base + timedelta(days=6 - base.weekday())
    if kind == "next_week":
        monday = base + timedelta(days=7 - base.weekday())
        return monday, monday + timedelta(days=6)
    if kind == "this_month":
        return base, _month_end(base)
    if kind == "next_month":
        first = add_months(base.replace(day=1), 1)
        return first, _month_end(first)
    if kind == "this_year":
        return base, date(base.year, 12, 31)
    if kind == "next_year":
        return date(base.year + 1, 1, 1), date(base.year + 1, 12, 31)
    if kind == "asap":
        return base, base + timedelta(days=7)
    if kind == "weekday":
        ahead = (WEEKDAYS[match.group("weekday")] - base.weekday()) % 7 or 7
        day = base + timedelta(days=ahead)
        return day, day
    if kind == "month":
        month = MONTHS[match.group("month")]
        year = base.year if month >= base.month else base.year + 1
        first = date(year, month, 1)
        return first, _month_end(first)
    return None


def _original(text: str, folded: str, start: int, end: int) -> str:
    """The lead's own words for the match (folding keeps positions for Latin text)."""
    if len(fold(text)) == len(text):
        return text[start:end]
    return folded[start:end]
