"""Out-of-office replies pause a sequence until the return date they state, in English,
Spanish, Hindi and Hinglish; ordinary replies that mention being away are replies
(docs/sequences-ooo-and-limits.md, "Out-of-office replies"). Pure: no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shvya.sequences.ooo import detect_out_of_office

# Thursday 26 November 2026, 15:30 in India.
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
KOLKATA = "Asia/Kolkata"


def start_of(day: date, zone: str = KOLKATA) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "subject", "language", "back"),
    [
        # English
        ("I am out of the office until March 12 with limited access to email.",
         "Automatic reply: Proposal", "en", date(2027, 3, 12)),
        ("Thank you for your email. I'll be back on Monday and will reply then.", None, "en",
         date(2026, 11, 30)),
        ("I'm on annual leave, returning Monday 7 December.", None, "en", date(2026, 12, 7)),
        ("I am out of the office from 3 December to 12 December.", None, "en",
         date(2026, 12, 13)),
        ("I will be out of the office from 1 December through 4 December.", None, "en",
         date(2026, 12, 5)),
        ("Out of office: back 2027-01-04", None, "en", date(2027, 1, 4)),
        ("I'm travelling, back in two weeks.", None, "en", date(2026, 12, 10)),
        ("I'm on vacation and will return on 12th of January 2027.", None, "en",
         date(2027, 1, 12)),
        ("Our office is closed until 2 January 2027 for the holidays.", None, "en",
         date(2027, 1, 2)),
        ("Im ooo till tomorrow", None, "en", date(2026, 11, 27)),
        ("Hi, I'm away on business, back next week.", None, "en", date(2026, 11, 30)),
        ("Hello,\nI am currently out of the office with no access to email. I will return on "
         "Tuesday, December 1st.\nFor urgent matters please contact john@x.example.", None, "en",
         date(2026, 12, 1)),
        ("Hi, thanks for your email. I'm OOO through 30 Nov and will respond when I'm back.",
         None, "en", date(2026, 12, 1)),
        ("I'm currently on parental leave until February 2027.", None, "en", date(2027, 2, 1)),
        ("I am out of office today and tomorrow.", None, "en", date(2026, 11, 27)),
        ("I'm away until Mon 30/11.", None, "en", date(2026, 11, 30)),
        ("I'm on leave, back on the 3rd.", None, "en", date(2026, 12, 3)),
        ("I will be away from 27 Nov - 4 Dec.", None, "en", date(2026, 12, 5)),
        ("I am on maternity leave until May 2027.", None, "en", date(2027, 5, 1)),
        ("Thank you for your message. I am currently on leave and will return on 14.12.2026.",
         None, "en", date(2026, 12, 14)),
        ("OOO - back Monday", None, "en", date(2026, 11, 30)),
        ("I'm out of the office until 12-Dec.", None, "en", date(2026, 12, 12)),
        ("Need help? Write to support@acme.example. Back on 2 December.", "Auto: Re: hello",
         "en", date(2026, 12, 2)),
        # Spanish
        ("Estaré fuera hasta el 15 de marzo.", "RE: propuesta", "es", date(2027, 3, 15)),
        ("Estoy de vacaciones. Regreso el lunes 4 de enero", None, "es", date(2027, 1, 4)),
        ("Me encuentro fuera de la oficina del 1 al 6 de diciembre.", None, "es",
         date(2026, 12, 7)),
        ("Gracias por su correo. Volveré el martes.", "Respuesta automática: Re: oferta",
         "es", date(2026, 12, 1)),
        ("Estoy de viaje, vuelvo en dos semanas.", None, "es", date(2026, 12, 10)),
        ("Estoy de baja hasta mañana por la mañana.", None, "es", date(2026, 11, 27)),
        ("Gracias por su mensaje. Me encuentro de vacaciones hasta el 7 de diciembre con "
         "acceso limitado al correo.", None, "es", date(2026, 12, 7)),
        ("Nuestras oficinas permanecerán cerradas hasta enero.", None, "es", date(2027, 1, 1)),
        ("Estaré de vacaciones hasta el 7.", None, "es", date(2026, 12, 7)),
        ("Estaré ausente hasta el 10/12. Gracias.", None, "es", date(2026, 12, 10)),
        # Hindi (Devanagari)
        ("मैं 10 जून तक छुट्टी पर हूँ।", None, "hi", date(2027, 6, 10)),
        ("मैं १० जून तक छुट्टी पर हूं", None, "hi", date(2027, 6, 10)),
        ("सोमवार को वापस आऊँगा, अभी मैं बाहर हूँ", None, "hi", date(2026, 11, 30)),
        ("मैं दो हफ्ते बाद वापस आऊँगा, अभी ऑफिस से बाहर हूँ", None, "hi", date(2026, 12, 10)),
        ("मैं कल तक अवकाश पर हूँ।", "स्वचालित उत्तर", "hi", date(2026, 11, 27)),
        ("नमस्ते, मैं 3 दिसंबर तक ऑफिस से बाहर हूँ।", None, "hi", date(2026, 12, 3)),
        ("मैं फरवरी तक छुट्टी पर रहूँगा", None, "hi", date(2027, 2, 1)),
        ("मैं 15 तारीख तक छुट्टी पर हूँ", None, "hi", date(2026, 12, 15)),
        # Hinglish
        ("main 10 june tak chhutti par hoon", None, "hinglish", date(2027, 6, 10)),
        ("Main office se bahar hoon, somvar ko wapas aaunga", None, "hinglish",
         date(2026, 11, 30)),
        ("main leave pe hoon, do hafte baad baat karenge", None, "hinglish",
         date(2026, 12, 10)),
        ("Abhi main shehar se bahar hoon, 5 december tak", None, "hinglish",
         date(2026, 12, 5)),
        ("main 15 tareekh tak chhutti par hoon", None, "hinglish", date(2026, 12, 15)),
        ("Main abhi vacation pe hoon, 7 december ko wapas aaunga.", None, "hinglish",
         date(2026, 12, 7)),
        ("Namaste, main 3 december tak office se bahar hoon. Urgent ho to Ravi ko call karein.",
         None, "hinglish", date(2026, 12, 3)),
    ],
)  # fmt: skip
def test_a_stated_return_pauses_until_the_start_of_that_day(
    text: str, subject: str | None, language: str, back: date
) -> None:
    found = detect_out_of_office(text, subject=subject, now=NOW, zone=KOLKATA)
    assert found is not None
    assert (found.until, found.stated, found.language) == (start_of(back), True, language)
    assert found.matched


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        ("I am out of the office.", None),
        ("Currently out of office with limited access.", "Re: Intro"),
        ("Thanks for reaching out.", "Automatic reply: Re: Your proposal"),
        ("Thanks for reaching out.", "Auto: Your proposal"),
        ("", "Out of Office"),
        ("This is an automatic reply. I will respond as soon as possible.", None),
        ("Estoy fuera de la oficina.", None),
        ("Su mensaje ha sido recibido.", "Fuera de la oficina"),
        ("मैं छुट्टी पर हूँ।", None),
        ("main chhutti pe hoon", None),
        ("Main abhi leave par hoon, message baad mein dekhunga", None),
    ],
)
def test_no_stated_return_pauses_for_fourteen_days(text: str, subject: str | None) -> None:
    found = detect_out_of_office(text, subject=subject, now=NOW, zone=KOLKATA)
    assert found is not None
    assert (found.until, found.stated) == (NOW + timedelta(days=14), False)


@pytest.mark.parametrize(
    "text",
    [
        # a date already past, or absurdly far
        "I'm out of the office until 2025-01-01.",
        "I am on leave until 12/03/2026.".replace("12/03/2026", "01/02/2026"),
        "I'm on sabbatical until 2029-06-01.",
        "Estoy de vacaciones hasta el 3 de enero de 2030.",
    ],
)
def test_a_past_or_absurd_return_date_is_the_default(text: str) -> None:
    found = detect_out_of_office(text, subject=None, now=NOW, zone=KOLKATA)
    assert found is not None
    assert (found.until, found.stated) == (NOW + timedelta(days=14), False)


@pytest.mark.parametrize(
    "text",
    [
        # English: away in the past, other "outs", questions, engagement, plain plans
        "I was on vacation, now interested. Can you send the details?",
        "Sorry for the late reply, I was out of the office last week. Let's talk Monday.",
        "When are you out of stock?",
        "I'm out of budget until next year.",
        "Are you out of office on Friday?",
        "I'm on vacation until Monday but I'm interested, send me the pricing.",
        "I'll be back on Monday with a decision.",
        "I just got back from holiday. What does the Premium plan include?",
        "We are out of the market for this right now.",
        "I'm out. Not interested.",
        "Out of curiosity, does it work with Gmail?",
        "Is your office closed on Sunday?",
        "Our office is closed on Sundays. Please call Monday.",
        "I'm away from my desk right now, will call you back in 10 minutes.",
        "I will be on leave next month, so let's close this before that.",
        "We're out of office space, we need a bigger plan.",
        "I'm off to a meeting, back in 10 min.",
        "Can we talk tomorrow? I'm on vacation until then.",
        "I am back from vacation. Let's continue.",
        "I'm not out of office, just busy.",
        "Thank you for your email, I'll be back to you on Monday with the signed contract.",
        "Thanks for your message. I'm away until Friday; please send the quote.",
        "I'm on leave, but the 20% discount is fine, go ahead.",
        "I'm out of office supplies, do you sell those?",
        "We'll be on holiday in December so please deliver before 15 December.",
        "Our team is out of office next week for an offsite; can we do the demo after?",
        "Thank you! I'm back in the office on Monday, let's talk then.",
        "I'm travelling to Delhi tomorrow, can you meet there?",
        "Estaremos de vacaciones en agosto, ¿pueden instalarlo antes?",
        "मैं कल छुट्टी पर रहूँगा, परसों कॉल करना",
        "Kal main chhutti par tha, aaj baat karte hain",
        "Haan main interested hoon, par abhi leave pe hoon, 5 tareekh ke baad call karo",
        # Spanish
        "Estuve de vacaciones, ahora me interesa.",
        "Estoy fuera de presupuesto hasta el próximo año.",
        "¿Están fuera de la oficina el viernes?",
        "Volveré a escribirle el lunes con una decisión.",
        "Ya regresé de vacaciones, ¿cuánto cuesta el plan?",
        "Estoy fuera, no me interesa.",
        "No estoy de vacaciones, ¿qué precio tiene?",
        "Estaré de vacaciones en enero, cerremos esto antes.",
        "Estoy de vacaciones en Goa con mi familia, pero sí me interesa el plan.",
        # Hindi
        "मैं छुट्टी पर था, अब कीमत बताइए",
        "क्या आप कल छुट्टी पर हैं?",
        "स्टॉक से बाहर है क्या?",
        "मैं 10 जून तक छुट्टी पर हूँ, लेकिन डेमो के लिए बात करते हैं",
        "मैं बाहर हूँ, कल फ़ोन करना",
        "मैं अगले महीने छुट्टी पर रहूँगा, उससे पहले ऑर्डर देना है",
        # Hinglish
        "main chhutti par tha, ab batao price",
        "kya aap kal chhutti pe ho?",
        "budget se bahar hai yaar",
        "main kal wapas aaunga to baat karte hain",
        "main 10 june tak chhutti par hoon par demo chahiye, kitne ka hai?",
        "main bahar hoon abhi, kal call karna",
        "mera dost chhutti par hai",
        "leave par jaane se pehle order dena hai",
        "agle mahine chhutti pe rahunga, usse pehle setup kar do",
    ],
)
def test_ordinary_replies_that_mention_being_away_are_replies(text: str) -> None:
    assert detect_out_of_office(text, subject=None, now=NOW, zone=KOLKATA) is None


def test_ordinary_subjects_do_not_make_an_auto_reply() -> None:
    # Our own subject, quoted after "Re:", is not the lead's auto-responder speaking.
    for subject in (
        "Re: Your proposal",
        "Re: vacation plans for the team",
        "Re: out of stock?",
        "Re: Paquete de vacaciones",
        "RE: Out of office furniture sale",
        "Re: छुट्टी पर जाने से पहले ऑफर",
        "Fwd: chhutti par special offer",
    ):
        assert detect_out_of_office("Sounds good.", subject=subject, now=NOW, zone=KOLKATA) is None


@pytest.mark.parametrize(
    ("text", "subject", "language"),
    [
        ("Thanks for reaching out.", "Automatic reply: Re: Proposal", "en"),
        ("Su mensaje ha sido recibido.", "Respuesta automática: Re: Propuesta", "es"),
        ("आपका संदेश मिल गया है।", "Automatic reply: Re: Proposal", "hi"),
        ("Aapka message mil gaya hai, main jaldi reply karunga.", "Auto: Re: Proposal",
         "hinglish"),
        ("I'm on leave, el 20% discount is fine", "Out of Office", "en"),
    ],
)  # fmt: skip
def test_the_language_is_the_leads(text: str, subject: str, language: str) -> None:
    found = detect_out_of_office(text, subject=subject, now=NOW, zone=KOLKATA)
    assert found is not None and found.language == language


def test_what_the_reply_quotes_is_not_read() -> None:
    text = (
        "Yes, let's talk on Monday.\n\n"
        "On Thu, 26 Nov 2026, Sales <sales@acme.example> wrote:\n"
        "> I am out of the office until 10 December.\n"
    )
    assert detect_out_of_office(text, subject="Re: Proposal", now=NOW, zone=KOLKATA) is None
    outlook = (
        "Yes please.\n\nFrom: Sales <sales@acme.example>\nSent: Thursday, 26 November 2026\n"
        "Subject: Proposal\n\nI am out of the office until 10 December."
    )
    assert detect_out_of_office(outlook, subject=None, now=NOW, zone=KOLKATA) is None
    quoted_ooo_date = (
        "I am on leave, back on 3 December.\n-----Original Message-----\nWe meet on 20 December."
    )
    found = detect_out_of_office(quoted_ooo_date, subject=None, now=NOW, zone=KOLKATA)
    assert found is not None and found.until == start_of(date(2026, 12, 3))


def test_the_return_is_preferred_over_the_start_and_the_last_day() -> None:
    text = (
        "I am out of the office from Monday 30 November until Friday 4 December and will "
        "return on Monday 7 December. For urgent matters contact ana@acme.example."
    )
    found = detect_out_of_office(text, subject="Automatic reply", now=NOW, zone=KOLKATA)
    assert found is not None and found.until == start_of(date(2026, 12, 7))


def test_weekdays_are_the_next_one_after_today() -> None:
    # Today is Thursday: "back on Thursday" is a week away, "back Friday" tomorrow.
    found = detect_out_of_office("I'm away, back on Thursday.", subject=None, now=NOW, zone=KOLKATA)
    assert found is not None and found.until == start_of(date(2026, 12, 3))
    found = detect_out_of_office("I'm away, back Friday.", subject=None, now=NOW, zone=KOLKATA)
    assert found is not None and found.until == start_of(date(2026, 11, 27))


def test_digits_are_day_first_unless_english_in_the_americas() -> None:
    text = "I'm out of the office until 12/03."
    india = detect_out_of_office(text, subject=None, now=NOW, zone=KOLKATA)
    madrid = detect_out_of_office(text, subject=None, now=NOW, zone="Europe/Madrid")
    new_york = detect_out_of_office(text, subject=None, now=NOW, zone="America/New_York")
    assert india is not None and india.until == start_of(date(2027, 3, 12))
    assert madrid is not None and madrid.until == start_of(date(2027, 3, 12), "Europe/Madrid")
    assert new_york is not None
    assert new_york.until == start_of(date(2026, 12, 3), "America/New_York")
    # Day first would be past (12 March 2026); the other reading is ahead: it wins.
    found = detect_out_of_office(
        "I'm out of the office until 12/03/2026.", subject=None, now=NOW, zone=KOLKATA
    )
    assert found is not None and found.until == start_of(date(2026, 12, 3))
    # One reading only: 25/12 can only be Christmas.
    found = detect_out_of_office(
        "I am on leave until 25/12.", subject=None, now=NOW, zone="America/Chicago"
    )
    assert found is not None and found.until == start_of(date(2026, 12, 25), "America/Chicago")


def test_the_day_starts_in_the_leads_zone() -> None:
    # 23:30 on Wednesday in Los Angeles is already Thursday in UTC: "tomorrow" is Thursday.
    now = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    found = detect_out_of_office(
        "I'm out of the office until tomorrow.", subject=None, now=now, zone="America/Los_Angeles"
    )
    assert found is not None
    assert found.until == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # Thursday 00:00 PST
    unknown = detect_out_of_office(
        "I'm out of the office until tomorrow.", subject=None, now=now, zone="Mars/Olympus"
    )
    assert unknown is not None and unknown.until == datetime(2026, 11, 27, tzinfo=UTC)
