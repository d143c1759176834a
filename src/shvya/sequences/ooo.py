"""Out-of-office replies: an automatic "I'm away" is not the lead answering, so it pauses a
sequence instead of stopping it (docs/sequences-ooo-and-limits.md, "Out-of-office replies").

`detect_out_of_office` reads a reply's subject and text in the four languages SHVYA
understands (English, Spanish, Hindi in Devanagari, Hinglish; docs/ai.md) and says whether it
is an out-of-office reply and until when the lead is away: the start, in the lead's time
zone, of the return day it states, or 14 days from now when it states none that can be
believed (none, one already past, or one more than a year ahead).

Pure: no database, no clock of its own. The rules, in the order they are applied:

1. The lead's own words only: quoted lines ("> ...") and everything from a quoted header
   ("On ... wrote:", "El ... escribió:", "-----Original Message-----") on are dropped, so our
   own message quoted back never makes a reply look like anything.
2. It is an out-of-office reply when the subject says so ("Automatic reply:", "Out of
   Office", "Auto:", "Respuesta automática", "Fuera de la oficina", "स्वचालित उत्तर", "छुट्टी पर",
   "chhutti par" ...), or the text says it is automatic, or the lead says they are away now
   ("I am out of the office", "estoy fuera de la oficina", "मैं छुट्टी पर हूँ", "main chhutti
   par hoon"), or says it loosely or as a plan ("I'm travelling", "I will be on leave",
   "estoy fuera", "बाहर हूँ") with a return date said in words ("until 4 December", "back on
   Monday", "hasta el lunes", "10 जून तक", "somvar ko wapas").
   Questions ("Are you out of office on Friday?"), the past ("I was on vacation"), other
   outs ("out of stock", "out of budget") are not.
3. Said only in the text (no automatic subject or marker), a reply that also engages (asks
   anything, asks for a price or a demo, says it is interested) is a reply from a person,
   not an out-of-office: it counts as a reply.
4. The return day: among the dates the text states, a date after a return ("back on",
   "returning", "regreso el", "को वापस") wins, then one after "until" ("until", "till",
   "hasta", "तक", "tak": the lead is back that day), then one ending a range ("through",
   "to", "al": back the day after); a date after "from" or "desde" is when the absence
   began and is never the return. With no such word, the latest date stated.
   Dates: 2027-03-12; 12/03 and 12/03/2027; 12 March, March 12, 12th of March, 12 de marzo,
   10 जून, १० जून; weekdays (the next one after today: "back on Monday" on a Monday is a week
   away); tomorrow, mañana, kal, कल; "in two weeks", "en dos semanas", "do hafte baad",
   "दो हफ्ते में"; next week (its Monday), next month (its first day).
   Digits only (12/03): day first, as India and Spain write it, unless the lead's zone is in
   the Americas and the text is English (month first); when the preferred reading is not
   in the coming year and the other is, the other. A date without a year is the next one
   to come.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shvya.ai.timeline import MONTHS, NUMBER_WORDS, UNITS, add_months, fold

DEFAULT_PAUSE = timedelta(days=14)
# Automatic replies are short: what they say is in their first lines, and a long message is
# a person's (or a mail loop's) and is read no further than this.
READ_AT_MOST = 20_000
# A return date further than this is not believed (a typo, or no return).
MAX_AHEAD = timedelta(days=365)


@dataclass(frozen=True)
class OutOfOffice:
    until: datetime  # aware UTC: the start of the return day in the lead's zone, or now + 14 days
    stated: bool  # the text stated a return date we believed
    language: str  # "en", "es", "hi" (Devanagari) or "hinglish"
    matched: str  # the words that made it an out-of-office reply


# --- normalising ------------------------------------------------------------------------------

_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")
_QUOTE_START = re.compile(
    r"^\s*(?:on\s.{0,200}\swrote:|el\s.{0,200}\sescribi[oó]:|-{2,}\s*original message\s*-{2,}"
    r"|-{2,}\s*mensaje original\s*-{2,}|_{5,}\s*$"
    r"|(?:from|de):\s.*\n\s*(?:sent|date|enviado(?: el)?|fecha|to|para):)",
    re.IGNORECASE | re.MULTILINE,
)


def _own_words(text: str) -> str:
    """The reply without what it quotes."""
    cut = _QUOTE_START.search(text)
    if cut is not None:
        text = text[: cut.start()]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def _normal(text: str) -> str:
    """Lower case, no accents, no nukta, ASCII digits and apostrophes: what the patterns read."""
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").replace("\u2018", "'")
    return fold(text).translate(_DEVANAGARI_DIGITS)


# --- is it an out-of-office reply? -------------------------------------------------------------

_L = r"[^\W\d_]|[\u0900-\u097f]"  # a letter, Devanagari's vowel signs included
_FP_EN = (
    r"(?:i am|i'm|im|i will be|i'll be|ill be|i shall be|i'd be|we are|we're|we will be|"
    r"we'll be)(?:\s+(?:currently|presently|now|also|still))?"
)
_LEAVE_EN = (
    r"on (?:(?:annual|parental|maternity|paternity|sick|medical|personal|study|bereavement|"
    r"casual|privilege|earned|extended)\s+)?leave"
)
# "out of (the) office" as a phrase of its own: not "out of office space".
_OOO = (
    r"(?:out of (?:the )?office|ooo)(?=\s*(?:$|[,.;:!()\-]|until|till|til|through|thru|from|"
    r"today|tomorrow|this|next|and|with|on|for|in|at|returning|back|right now|now|currently|"
    r"since|starting|due|without|hoon|hu|hun|hain))"
)
_FP_ES = (
    r"(?:estoy|estare|estaremos|estamos|me encuentro|nos encontramos|permanecere)"
    r"(?:\s+(?:actualmente|ahora|ya))?"
)
_AUX_HI = r"(?:हूँ|हूं|हू|हैं|रहूँगा|रहूंगा|रहूँगी|रहूंगी|रहेंगे)"
_AUX_HL = r"(?:hoon|hoo|hun|hu|hain|rahunga|rahungi|rahoonga|rahenge)"

# (pattern, language): an automatic reply says so.
_SUBJECT: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE | re.MULTILINE), language)
    for p, language in [
        (r"^\s*auto\s*:|\b(?:out of (?:the )?office|ooo|automatic reply|auto[- ]?reply|"
         r"auto[- ]?response|autoresponder|away from (?:the )?office|absence notice|"
         r"on (?:vacation|holiday)|" + _LEAVE_EN + r")\b", "en"),
        (r"\b(?:respuesta automatica|fuera de (?:la )?oficina|aviso de ausencia|ausente|"
         r"de vacaciones|mensaje automatico)\b", "es"),
        (r"स्वचालित|स्वतः\s*उत्तर|ऑटो\s*(?:रिप्लाई|उत्तर)|(?:कार्यालय|ऑफिस|दफ्तर)\s+से\s+बाहर|"
         r"(?:छुट्टी|छुट्टियों|अवकाश)\s+पर", "hi"),
        (r"\b(?:chhutti|chutti|chhuti|chuti|leave)\s+(?:par|pe|pr)\b|"
         r"\boffice\s+se\s+ba+ha?r\b", "hinglish"),
    ]
]  # fmt: skip
_AUTOMATIC: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), language)
    for p, language in [
        (r"\b(?:this is an? )?automa(?:tic|ted)(?:ally generated)? (?:reply|response|message|"
         r"e-?mail|notification)\b|\bauto[- ]?reply\b|\bautoreply\b|\bauto[- ]?response\b|"
         r"\bautoresponder\b", "en"),
        (r"\b(?:respuesta|mensaje|correo) (?:automatic[oa]|generad[oa] automaticamente)\b",
         "es"),
        (r"(?:स्वचालित|स्वतः)\s*(?:उत्तर|जवाब|संदेश)|ऑटो\s*(?:रिप्लाई|उत्तर|जवाब)", "hi"),
        (r"\bauto(?:matic)? (?:reply|message|msg) hai\b", "hinglish"),
    ]
]  # fmt: skip
# Away, said plainly: enough by itself.
_AWAY: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE | re.MULTILINE), language)
    for p, language in [
        (rf"\b{_FP_EN}\s+(?:{_OOO}|(?:{_LEAVE_EN}|"
         r"on (?:vacation|holiday|holidays|pto|sabbatical)|off work|"
         r"away on (?:vacation|holiday|leave|business))\b)"
         rf"|^\s*(?:(?:currently|presently|now|still)\s+)?{_OOO}", "en"),
        (rf"\b{_FP_ES}\s+(?:fuera de (?:la )?oficina|de vacaciones|de baja|de permiso|"
         r"de licencia|de descanso|ausente de (?:la )?oficina)\b"
         r"|^\s*fuera de (?:la )?oficina\b", "es"),
        (rf"(?:छुट्टी|छुट्टियों|छुट्टियाँ|छुट्टियां|अवकाश|लीव)\s+पर\s+(?:\S+\s+)?{_AUX_HI}"
         rf"|(?:कार्यालय|ऑफिस|दफ्तर)\s+से\s+बाहर\s+(?:\S+\s+)?{_AUX_HI}", "hi"),
        (rf"\b(?:chhutti|chutti|chhuti|chuti|chhuttiyon|leave|vacation|holiday)\s+(?:par|pe|pr)"
         rf"\s+(?:\w+\s+)?{_AUX_HL}\b|\boffice\s+se\s+ba+ha?r\s+(?:\w+\s+)?{_AUX_HL}\b"
         rf"|\bout of (?:the )?office\s+{_AUX_HL}\b", "hinglish"),
    ]
]  # fmt: skip
# Said in the future ("I will be on leave", "estaré de vacaciones", "छुट्टी पर रहूँगा"), away
# is a plan until it comes with a return date.
_FUTURE = re.compile(
    r"\b(?:will|'ll|ll|shall|estare|estaremos|permanecere|rahunga|rahungi|rahoonga|rahenge)\b"
    r"|रहूँगा|रहूंगा|रहूँगी|रहूंगी|रहेंगे",
    re.IGNORECASE,
)
# Away, said loosely: only with a return ("until", "back on"...).
_AWAY_LOOSELY: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), language)
    for p, language in [
        (r"\b(?:our|the) offices? (?:is|are|will be|remains?) closed\b|"
         rf"\b{_FP_EN}\s+(?:away|travell?ing|out of town|out of the country|unavailable|"
         r"not available|not in the office|on a business trip|on business travel|"
         r"at a conference)\b", "en"),
        (rf"\b{_FP_ES}\s+(?:fuera(?=\s+(?:hasta|del?\s+\d|por|esta semana|la proxima|"
         r"de la ciudad|del pais)|\s*[,.;]|\s*$)|ausente|de viaje|viajando|no disponible|"
         r"sin acceso (?:al|a mi) (?:correo|e-?mail)|con acceso limitado)\b"
         r"|\b(?:la|nuestra|nuestras|las) oficinas? (?:esta|estan|estara|estaran|permanecera|"
         r"permaneceran) cerradas?\b", "es"),
        (rf"(?:बाहर|यात्रा पर|उपलब्ध नहीं)\s+(?:\S+\s+)?{_AUX_HI}", "hi"),
        (rf"\b(?:bahar|baahar|shehar se bahar|available nahi|available nahin|"
         rf"travel kar raha|travel kar rahi)\s+{_AUX_HL}\b", "hinglish"),
    ]
]  # fmt: skip
# The lead says they will be back, which alone is a person talking; with the words
# automatic replies use (_ROUTINE) it is one.
_BACK: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), language)
    for p, language in [
        (r"\b(?:i will be back|i'll be back|i will return|i return|i'm back|i am back|"
         r"returning)\b(?!\s+(?:to you|with|from))", "en"),
        (r"\b(?:volvere|regresare|estare de vuelta|estare de regreso|regreso el|vuelvo el|"
         r"me reincorporo|me reincorporare)\b", "es"),
        (r"(?:वापस आऊँगा|वापस आऊंगा|वापस आऊँगी|वापस आऊंगी|लौटूँगा|लौटूंगा|लौटूँगी|लौटूंगी)", "hi"),
        (r"\b(?:wapas|vapas|waapas) (?:aaunga|aaungi|aunga|aungi|aa jaunga|aa jaungi)\b",
         "hinglish"),
    ]
]  # fmt: skip
_ROUTINE = re.compile(
    r"\b(?:thank you for your (?:e-?mail|message|note)|thanks for your (?:e-?mail|message)|"
    r"(?:limited|no|intermittent) access to (?:my )?e-?mail|for (?:urgent|immediate) "
    r"(?:matters|requests|queries|issues|assistance)|(?:if|in case) (?:it is |it's )?urgent|"
    r"(?:reply|respond|get back to you|answer)(?: to (?:you|your (?:e-?mail|message)))? "
    r"(?:upon|on|after) my return|gracias por (?:su|tu) (?:correo|mensaje)|"
    r"acceso limitado al correo|(?:para|en caso de) (?:asuntos )?urgen(?:tes|cia)|"
    r"a mi regreso|urgent ho to)\b|धन्यवाद|जरूरी (?:काम|हो)|ज़रूरी",
    re.IGNORECASE,
)
# Engagement: a person who asks or answers something is replying (rule 3).
_ENGAGED = re.compile(
    r"\b(?:interested|interest in|pricing|price|prices|quote|demo|sounds good|"
    r"let's (?:talk|chat|meet|schedule)|sign (?:me|us) up|me interesa|interesad[oa]s?|"
    r"precios?|cotizacion|hablemos|suena bien|kitne ka|kitna|baat karte|pasand|discount|"
    r"descuento|chhoot|buy|purchase|comprar|khareed\w*)\b"
    r"|दिलचस्पी|रुचि|कीमत|डेमो|बात करते|पसंद|छूट|खरीद|[?¿]",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n।]*[.!?\n।]*")


def _statements(text: str) -> list[tuple[int, str]]:
    """The sentences of a text that are not questions, with where each starts."""
    found = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group()
        if sentence.strip() and "?" not in sentence:
            found.append((match.start(), sentence))
    return found


def _first(
    patterns: list[tuple[re.Pattern[str], str]], sentences: list[tuple[int, str]]
) -> tuple[re.Match[str], int, str] | None:
    for start, sentence in sentences:
        for pattern, language in patterns:
            match = pattern.search(sentence)
            if match is not None:
                return match, start, language
    return None


# --- the return date ---------------------------------------------------------------------------

WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thu": 3, "thurs": 3, "friday": 4, "fri": 4, "saturday": 5, "sunday": 6,
    "lunes": 0, "martes": 1, "miercoles": 2, "jueves": 3, "viernes": 4, "sabado": 5,
    "domingo": 6,
    "somvar": 0, "somwar": 0, "mangalvar": 1, "mangalwar": 1, "budhvar": 2, "budhwar": 2,
    "guruvar": 3, "guruwar": 3, "veervar": 3, "shukravar": 4, "shukrawar": 4, "shanivar": 5,
    "shaniwar": 5, "ravivar": 6, "raviwar": 6, "itvaar": 6, "itwar": 6,
    "सोमवार": 0, "मंगलवार": 1, "बुधवार": 2, "गुरुवार": 3, "बृहस्पतिवार": 3, "शुक्रवार": 4,
    "शनिवार": 5, "रविवार": 6,
}  # fmt: skip
_NUMBERS = {
    **NUMBER_WORDS,
    "एक": 1, "दो": 2, "तीन": 3, "चार": 4, "पांच": 5, "पाँच": 5, "छह": 6, "छः": 6, "सात": 7,
    "आठ": 8, "नौ": 9, "दस": 10,
}  # fmt: skip
_UNITS = {
    **UNITS,
    "दिन": "day", "हफ्ते": "week", "हफ्ता": "week", "हफ्तों": "week", "सप्ताह": "week",
    "महीने": "month", "महीना": "month",
}  # fmt: skip


def _alternation(words: Iterable[str]) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


_MONTH = rf"(?P<month>{_alternation(MONTHS)})"
_MONTH2 = rf"(?P<month2>{_alternation(MONTHS)})"
_NUM = rf"(?P<n>\d{{1,3}}|{_alternation(_NUMBERS)})"
_UNIT = rf"(?P<unit>{_alternation(_UNITS)})"
_NOT_LETTER_AFTER = rf"(?!{_L})"
# A month named alone ("until February", "hasta febrero", "फरवरी तक"): whole names only, and
# not "may", which is more often a verb.
_WHOLE_MONTHS = [name for name in MONTHS if name != "may" and (len(name) > 3 or not name.isascii())]
_NOT_LETTER_BEFORE = rf"(?<!{_L})"

# (pattern, kind): every way a day is written that SHVYA reads.
_DATES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), kind)
    for p, kind in [
        (r"(?<![\d/.-])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?![\d/-])", "iso"),
        (r"(?<![\d/.-])(?P<a>\d{1,2})/(?P<b>\d{1,2})(?:/(?P<y>\d{4}|\d{2}))?(?![\d/]|[.-]\d)",
         "digits"),
        (r"(?<![\d/.-])(?P<a>\d{1,2})([.-])(?P<b>\d{1,2})\2(?P<y>\d{4}|\d{2})(?![\d/]|[.-]\d)",
         "digits"),
        (rf"(?<![\d/.-])(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of|\s+de|\.)?(?:\s+|-){_MONTH}\.?"
         rf"{_NOT_LETTER_AFTER}(?:,?\s+(?:de(?:l)?\s+)?(?P<y>\d{{4}}))?", "day_month"),
        (rf"{_NOT_LETTER_BEFORE}{_MONTH2}\.?\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?(?!\d)"
         rf"(?:,?\s+(?P<y2>\d{{4}}))?", "month_day"),
        (rf"{_NOT_LETTER_BEFORE}(?P<month3>may)\s+(?P<y3>\d{{4}})(?!\d)", "month"),
        (rf"{_NOT_LETTER_BEFORE}(?P<month3>{_alternation(_WHOLE_MONTHS)})"
         rf"(?:\s+(?:de(?:l)?\s+)?(?P<y3>\d{{4}}))?{_NOT_LETTER_AFTER}(?!\s*\d)", "month"),
        (r"\bthe\s+(?P<dd>\d{1,2})(?:st|nd|rd|th)\b(?!\s+(?:of|de)\b)"
         r"|\b(?:el|dia)\s+(?P<dd2>\d{1,2})(?![\d%/:-]|[.,]\d|\s*(?:de|del|%|por|am|pm|h|hrs?)\b)"
         r"|(?<![\d/.-])(?P<dd3>\d{1,2})\s*(?:tareekh|tarikh|tarik|तारीख|तारिख)", "day"),
        (rf"{_NOT_LETTER_BEFORE}(?:day after tomorrow|pasado manana|parso|parson|परसों)"
         rf"{_NOT_LETTER_AFTER}", "day+2"),
        (rf"{_NOT_LETTER_BEFORE}(?:tomorrow|manana|kal|कल){_NOT_LETTER_AFTER}", "day+1"),
        (rf"{_NOT_LETTER_BEFORE}(?:next week|la proxima semana|la semana que viene|"
         rf"la semana proxima|agle (?:hafte|hafta|week)|अगले (?:हफ्ते|सप्ताह)){_NOT_LETTER_AFTER}",
         "next_week"),
        (rf"{_NOT_LETTER_BEFORE}(?:next month|el proximo mes|el mes que viene|"
         rf"agle (?:mahine|month)|अगले महीने){_NOT_LETTER_AFTER}", "next_month"),
        (rf"\b(?:in|en|dentro de|after)\s+(?:about\s+|unos?\s+|unas\s+)?{_NUM}\s+{_UNIT}\b",
         "in"),
        (rf"{_NOT_LETTER_BEFORE}{_NUM}\s+{_UNIT}\s+(?:baad|bad|mein|me|main|बाद|में)"
         rf"{_NOT_LETTER_AFTER}", "in"),
        (rf"{_NOT_LETTER_BEFORE}(?P<weekday>{_alternation(WEEKDAYS)})\.?{_NOT_LETTER_AFTER}",
         "weekday"),
    ]
]  # fmt: skip

# Where a date stands to the absence, from the words just before it (English, Spanish) or
# just after it (Hindi and Hinglish postpositions).
_CUE_BEFORE = re.compile(
    r"\b(?P<back>back|return|returning|returns|resume|resuming|regreso|regresare|regresaremos|"
    r"vuelvo|volvere|vuelta|reincorporo|reincorporare|reincorporamos|a partir del?|"
    r"available again)\b|\b(?P<until>until|till|til|up to|hasta)\b"
    r"|\b(?P<through>through|thru|inclusive|including)\b|(?P<to>\b(?:to|al)\s+|[-\u2013]\s*)$"
    r"|\b(?P<start>from|since|desde|del|starting|beginning|commencing)\b",
    re.IGNORECASE,
)
_CUE_AFTER_UNTIL = re.compile(r"^\s*(?:tak|तक)(?![^\W\d_])")
_CUE_AFTER_BACK = re.compile(
    r"^\s*(?:ko|को|se|से)?\s*(?:wapas|vapas|waapas|वापस|laut|लौट|office|ऑफिस|कार्यालय|"
    r"aaunga|aaungi|आऊँगा|आऊंगा|join)",
)
_CUE_AFTER_START = re.compile(r"^\s*(?:se|से)(?![^\W\d_])")
_MORNING = re.compile(r"\b(?:por|de|en) la manana\b")


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    options: tuple[date, ...]  # the readings, preferred first
    cue: str = "none"  # back, until, through, start or none


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year(value: str | None) -> int | None:
    if not value:
        return None
    year = int(value)
    return year + 2000 if year < 100 else year


def _next_of(month: int, day: int, today: date) -> date | None:
    """The next 'day month' to come after today."""
    for year in (today.year, today.year + 1):
        found = _safe_date(year, month, day)
        if found is not None and found > today:
            return found
    return None


def _options(match: re.Match[str], kind: str, today: date, month_first: bool) -> list[date]:
    found: list[date | None] = []
    if kind == "iso":
        found.append(_safe_date(int(match["y"]), int(match["m"]), int(match["d"])))
    elif kind == "digits":
        a, b, year = int(match["a"]), int(match["b"]), _year(match["y"])
        readings = [(b, a), (a, b)] if month_first else [(a, b), (b, a)]
        for day, month in readings:
            if year is not None:
                found.append(_safe_date(year, month, day))
            else:
                found.append(_next_of(month, day, today))
    elif kind in ("day_month", "month_day"):
        name = match["month"] if kind == "day_month" else match["month2"]
        day = int(match["d"] if kind == "day_month" else match["d2"])
        year = _year(match["y"] if kind == "day_month" else match["y2"])
        month = MONTHS[name.lower()]
        found.append(_safe_date(year, month, day) if year else _next_of(month, day, today))
    elif kind == "day":
        number = int(match["dd"] or match["dd2"] or match["dd3"])
        for ahead in range(3):  # this month, else the next that has the day
            first = add_months(today.replace(day=1), ahead)
            candidate = _safe_date(first.year, first.month, number)
            if candidate is not None and candidate > today:
                found.append(candidate)
                break
    elif kind == "month":
        month, year = MONTHS[match["month3"].lower()], _year(match["y3"])
        found.append(_safe_date(year, month, 1) if year else _next_of(month, 1, today))
    elif kind.startswith("day+"):
        found.append(today + timedelta(days=int(kind[4:])))
    elif kind == "next_week":
        found.append(today + timedelta(days=7 - today.weekday()))
    elif kind == "next_month":
        found.append(add_months(today.replace(day=1), 1))
    elif kind == "in":
        raw = match["n"].lower()
        amount = int(raw) if raw.isdigit() else _NUMBERS.get(raw)
        unit = _UNITS[match["unit"].lower()]
        if amount is not None and 0 < amount <= 400:
            if unit == "day":
                found.append(today + timedelta(days=amount))
            elif unit == "week":
                found.append(today + timedelta(weeks=amount))
            elif unit == "month":
                found.append(add_months(today, amount))
            else:
                found.append(add_months(today, 12 * amount))
    elif kind == "weekday":
        ahead = (WEEKDAYS[match["weekday"].lower()] - today.weekday()) % 7 or 7
        found.append(today + timedelta(days=ahead))
    return [day for day in found if day is not None]


def _mentions(text: str, today: date, month_first: bool) -> list[_Mention]:
    """Every day the text names, left to right, overlaps resolved to the longest."""
    text = _MORNING.sub(lambda m: " " * len(m.group()), text)
    raw: list[_Mention] = []
    for pattern, kind in _DATES:
        for match in pattern.finditer(text):
            options = _options(match, kind, today, month_first)
            if options:
                raw.append(_Mention(match.start(), match.end(), tuple(options)))
    raw.sort(key=lambda m: (m.start, -(m.end - m.start)))
    kept: list[_Mention] = []
    for mention in raw:
        if kept and mention.start < kept[-1].end:
            if mention.end > kept[-1].end:  # "el 15" then "15 de marzo": the longer reading
                kept[-1] = mention
            continue
        # "Monday, March 12", "el lunes 3 de marzo": the weekday names the date after it.
        if kept and _is_weekday_before(kept[-1], mention, text):
            kept.pop()
        kept.append(mention)
    return [_with_cue(text, kept, index) for index in range(len(kept))]


def _is_weekday_before(previous: _Mention, mention: _Mention, text: str) -> bool:
    gap = text[previous.end : mention.start]
    word = text[previous.start : previous.end].rstrip(".").lower()
    return word in WEEKDAYS and len(gap) <= 3 and not gap.strip(" ,")


def _with_cue(text: str, mentions: list[_Mention], index: int) -> _Mention:
    mention = mentions[index]
    sentence_start = max(text.rfind(c, 0, mention.start) for c in ".!?\n।") + 1
    left = max(mention.start - 40, sentence_start, mentions[index - 1].end if index else 0)
    right_limit = mentions[index + 1].start if index + 1 < len(mentions) else len(text)
    after = text[mention.end : min(mention.end + 25, right_limit)]
    if _CUE_AFTER_BACK.match(after):
        return _Mention(mention.start, mention.end, mention.options, "back")
    if _CUE_AFTER_UNTIL.match(after):
        return _Mention(mention.start, mention.end, mention.options, "until")
    if _CUE_AFTER_START.match(after):
        return _Mention(mention.start, mention.end, mention.options, "start")
    before = text[left : mention.start]
    cue = "none"
    for found in _CUE_BEFORE.finditer(before):
        cue = str(found.lastgroup)
    if cue == "to":
        cue = "through"
    return _Mention(mention.start, mention.end, mention.options, cue)


def _return_day(text: str, today: date, month_first: bool) -> tuple[date | None, bool]:
    """The day the lead says they are back, if the text states one we believe, and whether
    words said it is a return ("back on", "until"...) rather than a date standing alone."""
    last = today + MAX_AHEAD

    def believable(mention: _Mention) -> date | None:
        for option in mention.options:
            day = option + timedelta(days=1) if mention.cue == "through" else option
            if today < day <= last:
                return day
        return None

    mentions = _mentions(text, today, month_first)
    for cues in (("back",), ("until", "through")):
        for mention in mentions:
            if mention.cue in cues:
                return believable(mention), True
    neutral = [d for m in mentions if m.cue == "none" and (d := believable(m)) is not None]
    return (max(neutral) if neutral else None), False


# --- the verdict -------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _language_of(text: str) -> str:
    if re.search(r"[\u0900-\u097f]", text):
        return "hi"
    if re.search(r"\b(?:hoon|hai|hain|tak|par|pe|wapas|chhutti|mein|nahi)\b", text):
        return "hinglish"
    if re.search(
        r"\b(?:el|la|los|las|de|del|que|su|tu|hasta|estoy|estare|gracias|por|para|con|"
        r"oficina|mensaje|correo|recibido)\b",
        text,
    ):
        return "es"
    return "en"


def _original(original: str, normal: str, start: int, end: int) -> str:
    nfc = unicodedata.normalize("NFC", original)
    return (nfc if len(nfc) == len(normal) else normal)[start:end].strip()


def detect_out_of_office(
    text: str, *, subject: str | None, now: datetime, zone: str
) -> OutOfOffice | None:
    """An out-of-office reply and until when it pauses the enrolment, or None for a reply
    that counts as one. `now` is aware; `zone` is the lead's IANA time zone (UTC if unknown).
    """
    own = _own_words(text[:READ_AT_MOST])
    body = _normal(own)
    title = _normal((subject or "")[:1000])
    sentences = _statements(body)

    found: tuple[str, str] | None = None  # (matched words, language)
    automatic = False
    # What an auto-responder adds comes before the subject it answers ("Automatic reply: Re:
    # Holiday packages"); that quoted subject is ours, not the lead's.
    added = re.split(r"\b(?:re|fw|fwd|rv|aw|r)\s*:", title, maxsplit=1)[0]
    for pattern, language in _SUBJECT:
        match = pattern.search(added)
        if match is not None:
            found, automatic = (_original(subject or "", title, *match.span()), language), True
            break
    hit = _first(_AUTOMATIC, sentences)
    if hit is not None:
        match, start, language = hit
        automatic = True
        found = found or (
            _original(own, body, start + match.start(), start + match.end()),
            language,
        )
    hit = _first(_AWAY, sentences)
    # Said loosely, or as a plan, absence needs a return date to be an out-of-office.
    needs_return = hit is not None and bool(_FUTURE.search(hit[0].group()))
    if hit is None:
        needs_return = True
        hit = _first(_AWAY_LOOSELY, sentences)
        if hit is None and (automatic or _ROUTINE.search(body)):
            hit = _first(_BACK, sentences)
    if hit is not None:
        match, start, language = hit
        # The lead's own statement says best which language they wrote in.
        found = (_original(own, body, start + match.start(), start + match.end()), language)
    if found is None:
        return None
    if not automatic and (hit is None or _ENGAGED.search(body)):
        return None
    matched, language = found
    if hit is None and body.strip():
        # Only a subject or marker said it: the language of the text says more.
        language = _language_of(body)

    tz = _zone(zone)
    today = now.astimezone(tz).date()
    month_first = language == "en" and zone.startswith(("America/", "US/", "Canada/"))
    day, cued = _return_day(f"{title}\n{body}", today, month_first)
    if needs_return and not automatic and (day is None or not cued):
        return None
    if day is None:
        return OutOfOffice(
            until=now.astimezone(UTC) + DEFAULT_PAUSE,
            stated=False,
            language=language,
            matched=matched,
        )
    start_of_day = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    return OutOfOffice(until=start_of_day, stated=True, language=language, matched=matched)
