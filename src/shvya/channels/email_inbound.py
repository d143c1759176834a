"""A lead's email reply coming in (docs/email-inbound.md).

Three shapes are read into one `InboundEmail`: SendGrid Inbound Parse's parsed form fields,
its "raw" variant (the whole MIME message in the field `email`), and a JSON form for other
providers and tools. The company is the one whose email ChannelAccount's address (external_id)
the mail was sent to; the lead is found by the thread's Message-IDs (In-Reply-To, References,
RFC 5322 3.6.4) among the company's messages, else by the sender's address, else a new lead is
made. The reply goes through conversations.inbound.receive_inbound_message like every channel,
with the quoted history and signature stripped from its text and the raw bodies kept (bounded)
in the message's meta.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

from mailparser_reply import EmailReplyParser  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.conversations.inbound import InboundMessage, receive_inbound_message
from shvya.conversations.models import Message
from shvya.conversations.schemas import ReceiveResultOut
from shvya.crm import service as crm
from shvya.crm.models import Channel, LeadContact
from shvya.errors import InvalidInput
from shvya.events.service import append_lead_event
from shvya.tenancy.models import ChannelAccount, Company

# The raw bodies kept in the message's meta, each cut to this many characters.
MAX_RAW_CHARS = 100_000
# Message-IDs looked at in References (the newest are last; a long thread keeps its newest).
MAX_REFERENCES = 50
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
# Reply headers mail-parser-reply misses ("El ... escribió:" in Gmail's Spanish, Hindi Gmail's
# "... ने लिखा:") and the line Gmail and Outlook put before forwarded or quoted history.
_QUOTE_HEADER = re.compile(
    r"^\s*(?:On\s.+\swrote:|El\s.+\sescribi[oó]:|Le\s.+\sa\s[ée]crit\s?:|Am\s.+\sschrieb:"
    r"|.+\sने\sलिखा:|-{2,}\s*(?:Original Message|Mensaje original|Forwarded message)\s*-{2,}"
    r"|From:\s.+|De:\s.+)\s*$",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^(?:-- ?|--|__+|Sent from my .+|Enviado desde mi .+)\s*$", re.IGNORECASE)
_PARSER = EmailReplyParser(languages=["en", "es", "de", "fr"])


@dataclass(frozen=True)
class InboundEmail:
    """One inbound email, whichever shape it came in."""

    sender: str  # the From address, lower-case
    sender_name: str | None
    recipients: list[str]  # To, Cc and the envelope's recipients, lower-case
    subject: str
    text: str
    html: str | None
    message_id: str | None  # without angle brackets
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    date: datetime | None = None
    # Why the mail says it was sent by a program, not a person (auto_submitted_by): None for a
    # person's mail. docs/email-inbound.md, "Automatic replies".
    auto_submitted: str | None = None


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in an In-Reply-To or References header, without angle brackets; a bare
    id without brackets (some tools send one) is taken whole."""
    if not value:
        return []
    found = _MESSAGE_ID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]
    return found


def _addresses(*values: str | None) -> list[str]:
    return [
        address.strip().lower()
        for _, address in getaddresses([v for v in values if v])
        if "@" in address
    ]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


# Precedence values auto-responders and bulk mailers set (RFC 3834 section 2 names it; the
# values are convention, not standard).
_AUTOMATIC_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})


def auto_submitted_by(headers: EmailMessage) -> str | None:
    """The header that says a program sent this mail (RFC 3834: `Auto-Submitted` other than
    `no`; Microsoft's `X-Auto-Response-Suppress` is not one), or None for a person's mail.
    Such mail is recorded but never answered: an answer to an auto-responder can loop."""
    value = str(headers.get("Auto-Submitted", "")).strip().lower()
    if value and value.split(";")[0].strip() != "no":
        return f"auto-submitted: {value[:100]}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if headers.get(name) is not None:
            return name.lower()
    precedence = str(headers.get("Precedence", "")).strip().lower()
    if precedence in _AUTOMATIC_PRECEDENCE:
        return f"precedence: {precedence}"
    return None


def _from_headers(
    headers: EmailMessage, *, text: str, html: str | None, extra_recipients: list[str]
) -> InboundEmail:
    name, address = parseaddr(str(headers.get("From", "")))
    if "@" not in address:
        raise InvalidInput("from: the email has no sender address", extra={"field": "from"})
    message_id = message_ids(str(headers.get("Message-ID", "")))
    return InboundEmail(
        sender=address.strip().lower(),
        sender_name=name.strip() or None,
        recipients=_addresses(str(headers.get("To", "")), str(headers.get("Cc", "")))
        + extra_recipients,
        subject=str(headers.get("Subject", "")),
        text=text,
        html=html,
        message_id=message_id[0] if message_id else None,
        in_reply_to=message_ids(str(headers.get("In-Reply-To", ""))),
        references=message_ids(str(headers.get("References", "")))[-MAX_REFERENCES:],
        date=_date(str(headers.get("Date", "")) or None),
        auto_submitted=auto_submitted_by(headers),
    )


def parse_raw_mime(raw: bytes, *, extra_recipients: Sequence[str] = ()) -> InboundEmail:
    """The whole MIME message (Inbound Parse's raw variant): its text/plain body (or the
    HTML's when there is none) and its threading headers."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    html = html_part.get_content() if html_part is not None else None
    text = text_part.get_content() if text_part is not None else _html_text(html or "")
    return _from_headers(parsed, text=text, html=html, extra_recipients=list(extra_recipients))


def parse_header_block(block: str) -> EmailMessage:
    """Inbound Parse's `headers` field: the raw header block, parsed as a message's headers."""
    parsed = email.message_from_string(
        block.strip("\r\n") + "\r\n\r\n", policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


def envelope_recipients(envelope: str | None) -> list[str]:
    """Inbound Parse's `envelope` field: JSON {"to": [...], "from": "..."}."""
    if not envelope:
        return []
    try:
        value = json.loads(envelope)
    except ValueError:
        raise InvalidInput(
            'envelope: is not JSON; Inbound Parse sends {"to": [...], "from": ...}',
            extra={"field": "envelope"},
        ) from None
    to = value.get("to") if isinstance(value, dict) else None
    if isinstance(to, str):
        to = [to]
    return [a.strip().lower() for a in to or [] if isinstance(a, str) and "@" in a]


def parse_sendgrid_form(form: dict[str, str]) -> InboundEmail:
    """Inbound Parse's parsed fields: from, to, cc, subject, text, html, headers, envelope."""
    extra = envelope_recipients(form.get("envelope"))
    if form.get("email"):
        return parse_raw_mime(
            form["email"].encode("utf-8", "surrogateescape"), extra_recipients=extra
        )
    headers = parse_header_block(form.get("headers", ""))
    for name, key in (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Subject", "subject")):
        if form.get(key) and name not in headers:
            headers[name] = form[key]
    if "From" not in headers and form.get("from"):
        headers["From"] = form["from"]
    html = form.get("html") or None
    text = form.get("text") or _html_text(html or "")
    return _from_headers(headers, text=text, html=html, extra_recipients=extra)


def parse_json_form(body: dict[str, Any]) -> InboundEmail:
    """The JSON form: from, to, subject, text, html, message_id, in_reply_to, references,
    auto_submitted (the Auto-Submitted header's value, when the mail had one)."""

    def string(key: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidInput(f"{key}: must be a string", extra={"field": key})
        return value

    sender = string("from")
    if not sender:
        raise InvalidInput("from: the sender's address is required", extra={"field": "from"})
    to = body.get("to")
    to_list = [to] if isinstance(to, str) else to if isinstance(to, list) else []
    name, address = parseaddr(sender)
    if "@" not in address:
        raise InvalidInput("from: is not an email address", extra={"field": "from"})
    references = body.get("references") or []
    if isinstance(references, str):
        references = message_ids(references)
    html = string("html")
    text = string("text") or _html_text(html or "")
    message_id = message_ids(string("message_id"))
    auto_header = EmailMessage()
    if string("auto_submitted"):
        auto_header["Auto-Submitted"] = string("auto_submitted") or ""
    return InboundEmail(
        sender=address.lower(),
        sender_name=name or None,
        recipients=_addresses(*(t for t in to_list if isinstance(t, str))),
        subject=string("subject") or "",
        text=text,
        html=html,
        message_id=message_id[0] if message_id else None,
        in_reply_to=message_ids(string("in_reply_to")),
        references=[r.strip("<> ") for r in references if isinstance(r, str) and r.strip("<> ")][
            -MAX_REFERENCES:
        ],
        auto_submitted=auto_submitted_by(auto_header),
    )


def _html_text(html: str) -> str:
    without = re.sub(r"(?is)<(script|style|blockquote)[^>]*>.*?</\1>", " ", html)
    without = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", without)
    return re.sub(r"<[^>]+>", "", without).strip()


def strip_reply(text: str) -> str:
    """The lead's own words: quoted history ("On ... wrote:", "El ... escribió:", ">" lines,
    Outlook's "-----Original Message-----") and the signature cut off (mail-parser-reply,
    then our own markers for what it misses)."""
    normalised = text.replace("\r\n", "\n")
    try:
        reply = _PARSER.parse_reply(normalised) or normalised
    except Exception:  # a parser failure must not lose the message
        reply = normalised
    kept: list[str] = []
    for line in reply.split("\n"):
        if _QUOTE_HEADER.match(line) or _SIGNATURE.match(line):
            break
        kept.append(line)
    while kept and (not kept[-1].strip() or kept[-1].lstrip().startswith(">")):
        kept.pop()
    stripped = "\n".join(kept).strip()
    return stripped or normalised.strip()


def recipient_account(session: Session, recipients: list[str]) -> ChannelAccount | None:
    """The email account the mail was sent to: the first recipient that is an active email
    ChannelAccount's address. None: no company owns any of them."""
    for address in dict.fromkeys(recipients):
        account = session.scalars(
            select(ChannelAccount).where(
                ChannelAccount.channel == Channel.email.value,
                ChannelAccount.external_id == address,
                ChannelAccount.is_active.is_(True),
            )
        ).first()
        if account is not None:
            return account
    return None


def thread_lead(session: Session, *, company_id: uuid.UUID, mail: InboundEmail) -> uuid.UUID | None:
    """The lead whose message (ours or theirs) this mail answers, within the company."""
    ids = list(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)]))
    if not ids:
        return None
    rows = session.execute(
        select(Message.email_message_id, Message.lead_id).where(
            Message.company_id == company_id, Message.email_message_id.in_(ids)
        )
    ).all()
    by_id = {row[0]: row[1] for row in rows}
    for message_id in ids:  # In-Reply-To first, then the newest reference
        if message_id in by_id:
            return by_id[message_id]
    return None


@dataclass(frozen=True)
class EmailReceived:
    result: ReceiveResultOut | None  # None: no company owns the recipient; nothing recorded
    threaded: bool = False


def receive_email(
    session: Session, *, mail: InboundEmail, settings_region: str, now: datetime
) -> EmailReceived:
    """Record the reply for its company and lead, through the same receive path as every
    channel; needs_person (reason email_reply) unless the company lets the AI answer email."""
    account = recipient_account(session, mail.recipients)
    if account is None:
        return EmailReceived(result=None)
    company = session.get_one(Company, account.company_id)
    threaded_lead = thread_lead(session, company_id=company.id, mail=mail)
    if threaded_lead is not None:
        _attach_sender(
            session, company_id=company.id, lead_id=threaded_lead, address=mail.sender, now=now
        )
    text = strip_reply(mail.text) or mail.subject or "(empty email)"
    meta: dict[str, Any] = {
        "type": "email",
        "subject": mail.subject[:998],
        "email_from": mail.sender,
        "email_in_reply_to": mail.in_reply_to[:1],
        "email_references": mail.references,
        "raw_text": mail.text[:MAX_RAW_CHARS],
    }
    if mail.html is not None:
        meta["raw_html"] = mail.html[:MAX_RAW_CHARS]
    if mail.auto_submitted is not None:
        # Recorded, never answered by the AI, never a person's to-do (docs/email-inbound.md).
        meta["auto_submitted"] = mail.auto_submitted
    if len(mail.text) > MAX_RAW_CHARS or len(mail.html or "") > MAX_RAW_CHARS:
        meta["raw_truncated"] = True
    # A mail without a Message-ID is keyed on what it says, so a redelivery is still one.
    external_id = mail.message_id or _content_key(mail)
    result = receive_inbound_message(
        session,
        company_id=company.id,
        message=InboundMessage(
            channel=Channel.email,
            sender=mail.sender,
            text=text,
            name=mail.sender_name,
            external_id=external_id,
            received_at=mail.date,
            meta=meta,
        ),
        region=company.phone_region or settings_region,
        actor="email",
        now=now,
        opt_out_keywords=list(company.settings.get("opt_out_keywords", [])),
        clamp_future=True,
    )
    message = session.get_one(Message, result.message_id)
    message.email_message_id = mail.message_id
    from shvya.tenancy import service as tenancy

    if (
        "opt_keyword" not in message.meta
        and mail.auto_submitted is None
        and not tenancy.ai_email_replies(company)
    ):
        lead = crm.get_lead(session, company_id=company.id, lead_id=result.lead_id)
        crm.set_ai_paused(
            session, lead=lead, paused=True, reason=crm.EMAIL_REPLY_REASON, actor="email", now=now
        )
    if threaded_lead is not None:
        append_lead_event(
            session,
            company_id=company.id,
            lead_id=result.lead_id,
            type="EmailThreaded",
            data={"message_id": str(result.message_id), "by": "in_reply_to"},
            actor="email",
            now=now,
        )
    session.flush()
    return EmailReceived(result=result, threaded=threaded_lead is not None)


def _content_key(mail: InboundEmail) -> str:
    import hashlib

    digest = hashlib.sha256(
        "\n".join([mail.sender, mail.subject, mail.text, str(mail.date)]).encode()
    ).hexdigest()
    return f"email-sha256:{digest}"


def _attach_sender(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, address: str, now: datetime
) -> None:
    """A reply in a lead's thread from an address the company does not know yet (a colleague,
    a second mailbox) becomes that lead's email contact, so the receive path finds the lead.
    An address that is already another lead's contact stays that lead's."""
    existing = crm.find_contact(
        session, company_id=company_id, channel=Channel.email, value=address
    )
    if existing is not None:
        return
    session.add(
        LeadContact(
            company_id=company_id,
            lead_id=lead_id,
            channel=Channel.email.value,
            value=address,
            created_at=now,
        )
    )
    session.flush()
