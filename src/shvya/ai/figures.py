"""Numbers in what leads and the AI write: budgets with their currency, and the guardrail that
keeps invented figures out of AI replies.

A figure is any number a reader could act on: a price or amount ("₹2,499", "1.5 lakh",
"5.000 €"), a percentage, a date or time, a phone number. An AI reply may state one only if
it appears in a source: a knowledge-base passage it used, the company card, or the lead's own
words. Figures are compared by value, so "₹1,50,000", "150000" and "1.5 lakh" are the same.
Integers up to ten standing alone ("3 plans", "step 2") are counting words, not figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shvya.ai.timeline import MONTHS

MULTIPLIERS = {
    "k": 1_000, "thousand": 1_000, "mil": 1_000, "hazaar": 1_000, "hazar": 1_000,
    "lakh": 100_000, "lakhs": 100_000, "lac": 100_000, "lacs": 100_000,
    "crore": 10_000_000, "crores": 10_000_000, "cr": 10_000_000,
    "m": 1_000_000, "mn": 1_000_000, "million": 1_000_000, "millon": 1_000_000,
    "millón": 1_000_000, "millones": 1_000_000,
}  # fmt: skip
CURRENCY_WORDS = {
    "₹": "INR", "rs": "INR", "rs.": "INR", "inr": "INR", "rupees": "INR", "rupee": "INR",
    "rupaye": "INR", "rupay": "INR", "rupiya": "INR",
    "$": "$", "usd": "USD", "dollars": "USD", "dollar": "USD", "dolares": "USD",
    "dólares": "USD", "us$": "USD",
    "€": "EUR", "eur": "EUR", "euros": "EUR", "euro": "EUR",
    "£": "GBP", "gbp": "GBP", "pounds": "GBP", "pound": "GBP", "libras": "GBP",
    "mxn": "MXN", "pesos": "PESO", "peso": "PESO", "ars": "ARS", "cop": "COP", "clp": "CLP",
    "aed": "AED", "dirhams": "AED", "sgd": "SGD", "aud": "AUD", "cad": "CAD",
}  # fmt: skip
# Currencies written with "$" besides the US dollar: "$" means the company's own.
DOLLAR_LIKE = frozenset({"USD", "MXN", "ARS", "COP", "CLP", "CAD", "AUD", "SGD", "NZD", "HKD"})
# "pesos" means the company's own peso, else the Mexican one.
PESOS = frozenset({"MXN", "ARS", "COP", "CLP", "UYU", "DOP", "PHP", "CUP"})

_SYMBOLS = r"₹|\$|€|£|us\$"
_CODES = r"rs\.?|inr|usd|eur|gbp|mxn|ars|cop|clp|aed|sgd|aud|cad"
_WORDS = r"rupees?|rupaye|rupay|rupiya|dollars?|d[oó]lares|euros?|pounds?|libras|pesos?|dirhams"
_MULT = r"k|thousand|mil|hazaa?r|lakhs?|lacs?|crores?|cr|mn|m|million|mill[oó]n|millones"
# A number as people write it: 1,50,000 / 150,000 / 5.000 / 1.5 / 2499.00
_NUMBER = r"\d{1,3}(?:[,.]\d{2,3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d+)?"
AMOUNT = re.compile(
    rf"(?P<pre>{_SYMBOLS}|\b(?:{_CODES})\b)?\s?(?P<num>{_NUMBER})"
    rf"(?:\s?(?P<mult>(?:{_MULT})\b))?(?:\s?(?P<post>{_SYMBOLS}|\b(?:{_CODES}|{_WORDS})\b))?",
    re.IGNORECASE,
)
PERCENT = re.compile(rf"(?P<num>{_NUMBER})\s?(?:%|percent\b|por ciento\b|pratishat\b)", re.I)
PHONE = re.compile(r"(?<![\w.,])\+?\d[\d\s().-]{6,}\d(?![\w])")
# Words that say a number is what the lead can spend. The strong ones make even a bare number
# a budget ("budget is 50000"); the others need an amount with a currency or a multiplier
# ("we have 200 mil pesos", not "we have 120 staff").
STRONG_BUDGET_CUES = r"budget|afford|spend|presupuesto|gastar|invertir|kharch"
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


def amounts(text: str, *, default_currency: str | None = None) -> list[Amount]:
    """Every amount with a currency or a multiplier ("50k"), in order."""
    found: list[Amount] = []
    for match in AMOUNT.finditer(text):
        pre, post, mult = match.group("pre"), match.group("post"), match.group("mult")
        if not (pre or post or mult):
            continue
        value = parse_number(match.group("num"))
        if value is None:
            continue
        if mult:
            value *= MULTIPLIERS.get(mult.lower(), 1)
        currency = _currency(pre, default_currency) or _currency(post, default_currency)
        found.append(Amount(value=value, currency=currency, text=match.group(0).strip()))
    return found


def budget_in(text: str, *, default_currency: str) -> Amount | None:
    """The budget a lead states: an amount in a sentence about what they can spend."""
    for sentence in re.split(r"(?<=[.!?\n])\s+", text):
        if not BUDGET_CUES.search(sentence):
            continue
        found = amounts(sentence, default_currency=default_currency)
        if not found:
            # "budget is 50000": a bare number after a budget word is an amount too
            bare = BARE_BUDGET.search(sentence)
            value = parse_number(bare.group("num")) if bare is not None else None
            if bare is not None and value is not None and value >= 100:
                return Amount(value=value, currency=default_currency, text=bare.group(0).strip())
            continue
        best = max(found, key=lambda amount: amount.value)
        return Amount(best.value, best.currency or default_currency, best.text)
    return None


# --- the guardrail ----------------------------------------------------------------------------


def _normal(value: Decimal) -> str:
    return (
        format(value.normalize(), "f") if value == value.to_integral() else str(value.normalize())
    )


_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
DATE = re.compile(
    rf"\b(?P<y1>\d{{4}})-(?P<m1>\d{{1,2}})-(?P<d1>\d{{1,2}})\b"
    rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of|\s+de)?\s+(?P<m2>{_MONTH_NAMES})\b\.?"
    rf"|\b(?P<m3>{_MONTH_NAMES})\.?\s+(?P<d3>\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"|\b(?P<n>\d{{1,2}}[/.]\d{{1,2}}(?:[/.]\d{{2,4}})?)\b(?![.,]\d)",
    re.IGNORECASE,
)


def _date_key(match: re.Match[str]) -> str | None:
    """A date as "date:month-day" (named or ISO months), or its digits when only numbers say
    it (11/12 is read as written: whether it is November or December is not ours to guess)."""
    if match.group("y1"):
        return f"date:{int(match.group('m1'))}-{int(match.group('d1'))}"
    for day, month in (("d2", "m2"), ("d3", "m3")):
        if match.group(day):
            number = MONTHS.get(match.group(month).lower().rstrip("."))
            return f"date:{number}-{int(match.group(day))}" if number else None
    raw = match.group("n")
    if raw and "." in raw and len(raw.split(".")[-1]) != 2 and raw.count(".") == 1:
        return None  # "4.5" is a number, not a date
    return f"date:{raw.replace('.', '/')}" if raw else None


# "7 999", "7\u202f999", "7'999": thousands written with a space or an apostrophe. Read as
# "7,999" (the same length, so positions in the text stay where they were).
GROUP_SEPARATOR = re.compile(
    r"(?<=(?<![\d,.])\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))|"
    r"(?<=(?<![\d,.])\d\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))|"
    r"(?<=(?<![\d,.])\d\d\d)[ \u00a0\u202f'\u2019](?=\d{3}(?!\d))"
)
TIME = re.compile(
    r"\b(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?\s?(?P<half>a\.?m\.?|p\.?m\.?|hrs?\b|h\b)"
    r"|\b(?P<h2>\d{1,2}):(?P<m2>\d{2})\b",
    re.IGNORECASE,
)
DURATION_UNITS = {
    "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute",
    "hour": "hour", "hours": "hour", "day": "day", "days": "day", "week": "week",
    "weeks": "week", "month": "month", "months": "month", "year": "year", "years": "year",
    "dia": "day", "dias": "day", "día": "day", "días": "day", "semana": "week",
    "semanas": "week", "mes": "month", "meses": "month", "año": "year", "años": "year",
    "din": "day", "hafte": "week", "hafta": "week", "mahine": "month", "mahina": "month",
    "saal": "year", "session": "session", "sessions": "session", "sesion": "session",
    "sesión": "session", "sesiones": "session", "class": "class", "classes": "class",
    "seat": "seat", "seats": "seat", "user": "user", "users": "user",
}  # fmt: skip
DURATION = re.compile(
    r"\b(?P<n>\d{1,3})\s?-?\s?(?P<unit>"
    + "|".join(sorted(map(re.escape, DURATION_UNITS), key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def _time_key(match: re.Match[str]) -> str | None:
    hour = int(match.group("h") or match.group("h2"))
    minute = int(match.group("m") or match.group("m2") or 0)
    if hour > 24 or minute > 59:
        return None
    return f"time:{hour % 12}:{minute:02d}"  # 7 pm and 19:00 are told apart by neither


def _duration_key(match: re.Match[str]) -> str:
    unit = DURATION_UNITS[match.group("unit").lower()]
    return f"count:{int(match.group('n'))}:{unit}"


def _phone_key(match: re.Match[str]) -> str | None:
    digits = re.sub(r"\D", "", match.group(0))
    # A long digit run that is really an amount ("1,50,000") is not a phone number.
    if len(digits) >= 7 and not re.fullmatch(rf"{_NUMBER}", match.group(0).strip()):
        return digits
    return None


def _percent_key(match: re.Match[str]) -> str | None:
    value = parse_number(match.group("num"))
    return None if value is None else f"percent:{_normal(value)}"


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _take(
    pattern: re.Pattern[str],
    text: str,
    key_of: Callable[[re.Match[str]], str | None],
    *,
    spans: list[tuple[int, int]],
    found: list[tuple[str, str]],
) -> None:
    """Each match of `pattern` that starts outside the spans taken already, and that `key_of`
    keys (None: not such a figure after all), is found as (key, as written) and takes its span."""
    for match in pattern.finditer(text):
        if _inside(match.start(), spans):
            continue
        key = key_of(match)
        if key is not None:
            found.append((key, match.group(0).strip()))
            spans.append(match.span())


def figures(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(values, phones) in `text`, each as (normalised, as written). Dates, times, counted
    things ("7 days", "3 seats") and percentages are keyed by kind, so a percentage is
    grounded only by a percentage and a time only by a time."""
    original = text
    text = GROUP_SEPARATOR.sub(",", text)
    phones: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    values: list[tuple[str, str]] = []
    # In this order: what an earlier kind took is not read again as a later one.
    _take(DATE, text, _date_key, spans=spans, found=values)
    _take(TIME, text, _time_key, spans=spans, found=values)
    _take(DURATION, text, _duration_key, spans=spans, found=values)
    _take(PHONE, original, _phone_key, spans=spans, found=phones)
    _take(PERCENT, text, _percent_key, spans=spans, found=values)
    for match in AMOUNT.finditer(text):
        if _inside(match.start("num"), spans):
            continue
        value = parse_number(match.group("num"))
        if value is None:
            continue
        written = match.group(0).strip()
        mult = match.group("mult")
        counted = bool(match.group("pre") or match.group("post") or mult)
        if mult:
            values.append((_normal(value * MULTIPLIERS.get(mult.lower(), 1)), written))
        elif counted or value > 10 or value != value.to_integral():
            values.append((_normal(value), written))
    return values, phones


def source_figures(sources: Iterable[str]) -> tuple[set[str], set[str]]:
    """Every value and phone digit string the sources state; with a multiplier, also the
    number as written ("1.5 lakh" grounds both 150000 and 1.5)."""
    values: set[str] = set()
    phones: set[str] = set()
    for source in sources:
        found, found_phones = figures(source)
        source = GROUP_SEPARATOR.sub(",", source)
        values.update(value for value, _ in found)
        phones.update(digits for digits, _ in found_phones)
        inside_phones = [m.span() for m in PHONE.finditer(source)]
        for match in AMOUNT.finditer(source):
            if _inside(match.start("num"), inside_phones):
                continue  # "020" of a phone number grounds no 20
            value = parse_number(match.group("num"))
            if value is not None:
                values.add(_normal(value))
        for digits in re.findall(r"\d[\d\s().-]{5,}\d", source):
            phones.add(re.sub(r"\D", "", digits))
    return values, phones


def ungrounded(reply: str, sources: Iterable[str]) -> list[str]:
    """The figures of `reply` no source states, as the reply wrote them."""
    values, phones = source_figures(sources)
    found, found_phones = figures(reply)
    missing = [written for value, written in found if value not in values]
    for digits, written in found_phones:
        if not any(digits in known or known.endswith(digits[-10:]) for known in phones):
            missing.append(written)
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
