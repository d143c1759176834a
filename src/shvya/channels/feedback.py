"""Bounces, complaints and deliveries reported by Amazon SES (through SNS) and SendGrid, and
the reputation of each sending domain they add up to (docs/email-feedback.md).

A permanent bounce, a complaint, a SendGrid drop or unsubscribe suppresses the address for the
company; every event is kept once in `email_feedback` (unique per provider event id, so a
redelivered webhook changes nothing) and counts towards its sending domain's rates over a
rolling window. Crossing the alert line tells the company; crossing the pause line makes the
router refuse sequence email from that domain (channels/policies.py) until an admin resumes it.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shvya.channels.models import EmailFeedback, EmailReputation, FeedbackKind, ReputationState
from shvya.config import Settings
from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.crm import service as crm
from shvya.crm.models import Channel, SuppressionReason
from shvya.db.base import table_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import Conflict, Forbidden, InvalidInput, NotFound
from shvya.events.service import append_lead_event
from shvya.tenancy.models import ChannelAccount

# --- thresholds (docs/email-feedback.md 4) ----------------------------------------------------

# Gmail's sender guidelines: keep the spam rate below 0.1% and never reach 0.3%.
COMPLAINT_ALERT = 0.001
COMPLAINT_PAUSE = 0.003
# Amazon SES puts an account under review at a 5% bounce rate and may pause it at 10%.
BOUNCE_ALERT = 0.05
BOUNCE_PAUSE = 0.10


class BadFeedback(InvalidInput):
    code = "bad_webhook_body"
    status = 400


class BadSignature(Forbidden):
    code = "bad_signature"


class UnknownTopic(NotFound):
    code = "unknown_topic"


class UnknownEmailAccount(NotFound):
    code = "email_account_not_found"


class NotPaused(Conflict):
    code = "email_not_paused"


# --- SNS signatures (docs/email-feedback.md 1) ------------------------------------------------

# The keys signed for each message type, in the order they are signed.
_SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

_CERTS: dict[str, rsa.RSAPublicKey] = {}
_CERTS_LOCK = threading.Lock()
_CERTS_MAX = 64


def sns_string_to_sign(envelope: dict[str, Any]) -> bytes:
    """Each signed key present, then its value, each on its own line (Subject only when the
    notification has one)."""
    keys = _SIGNED_KEYS[envelope["Type"]]
    lines: list[str] = []
    for key in keys:
        if key == "Subject" and envelope.get("Subject") is None:
            continue
        lines += [key, str(envelope[key])]
    return ("\n".join(lines) + "\n").encode()


def parse_sns_envelope(body: bytes) -> dict[str, Any]:
    import json

    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        # Nothing signed to check: refused as an unsigned delivery.
        raise BadSignature("the body is not a signed SNS message (JSON)") from None
    if not isinstance(envelope, dict):
        raise BadSignature("the body is not a signed SNS message (a JSON object)")
    kind = envelope.get("Type")
    if kind not in _SIGNED_KEYS:
        raise BadFeedback(
            "Type must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation"
        )
    missing = [
        k
        for k in (*_SIGNED_KEYS[kind], "Signature", "SignatureVersion", "SigningCertURL")
        if k != "Subject" and not isinstance(envelope.get(k), str)
    ]
    if missing:
        raise BadFeedback(f"the SNS message lacks {', '.join(missing)}")
    return envelope


def _check_sns_url(url: str, settings: Settings, what: str) -> None:
    if not re.match(settings.sns_cert_url_pattern, url):
        raise BadSignature(f"{what} is not an Amazon SNS address: the delivery is refused")


def _certificate_key(url: str, settings: Settings) -> rsa.RSAPublicKey:
    with _CERTS_LOCK:
        key = _CERTS.get(url)
    if key is not None:
        return key
    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        certificate = x509.load_pem_x509_certificate(response.content)
    except (httpx.HTTPError, ValueError):
        raise BadSignature("the signing certificate could not be fetched or read") from None
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise BadSignature("the signing certificate is not an RSA certificate")
    with _CERTS_LOCK:
        if len(_CERTS) >= _CERTS_MAX:
            _CERTS.pop(next(iter(_CERTS)))
        _CERTS[url] = public
    return public


def verify_sns(envelope: dict[str, Any], settings: Settings) -> None:
    """Raises BadSignature unless Amazon SNS signed this message (SignatureVersion 1: SHA1
    with RSA, 2: SHA256 with RSA) with the certificate at an SNS SigningCertURL."""
    algorithm = _HASHES.get(envelope["SignatureVersion"])
    if algorithm is None:
        raise BadSignature("SignatureVersion must be 1 or 2")
    _check_sns_url(envelope["SigningCertURL"], settings, "SigningCertURL")
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("the Signature is not base64") from None
    key = _certificate_key(envelope["SigningCertURL"], settings)
    try:
        key.verify(signature, sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise BadSignature("the SNS signature does not match the message") from None


def confirm_subscription(envelope: dict[str, Any], settings: Settings) -> None:
    """Visit SubscribeURL (an SNS address too), as SNS asks of a new HTTPS subscriber."""
    url = envelope.get("SubscribeURL")
    if not isinstance(url, str):
        raise BadFeedback("the SubscriptionConfirmation lacks SubscribeURL")
    _check_sns_url(url, settings, "SubscribeURL")
    try:
        httpx.get(url, timeout=10.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise Conflict(f"SNS did not accept the subscription confirmation: {exc}") from None


# --- SendGrid signatures (docs/email-feedback.md 3) -------------------------------------------


def verify_sendgrid(
    *,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key_b64: str | None,
    settings: Settings,
    now: datetime,
) -> None:
    if not public_key_b64:
        raise BadSignature(
            "this email account has no sendgrid_webhook_public_key: add SendGrid's "
            "verification key to its config"
        )
    if not signature or not timestamp:
        raise BadSignature(
            "X-Twilio-Email-Event-Webhook-Signature and -Timestamp are both required"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise BadSignature("X-Twilio-Email-Event-Webhook-Timestamp is not a Unix time") from None
    if abs(now.timestamp() - sent_at) > settings.sendgrid_webhook_max_age_seconds:
        raise BadSignature("the signed timestamp is too old (or in the future): not accepted")
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64))
        raw_signature = base64.b64decode(signature)
    except (binascii.Error, ValueError):
        raise BadSignature("the signature or the configured public key is not valid") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadSignature("the configured sendgrid_webhook_public_key is not an ECDSA key")
    try:
        key.verify(raw_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadSignature("the SendGrid signature does not match the body") from None


# --- routing ----------------------------------------------------------------------------------


def _domain_of(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2].lower()


def accounts_for_topic(session: Session, topic_arn: str) -> list[ChannelAccount]:
    """The email accounts whose config lists this SNS topic ("sns_topic_arns")."""
    accounts = session.scalars(
        select(ChannelAccount).where(ChannelAccount.channel == Channel.email.value)
    ).all()
    return [a for a in accounts if topic_arn in (a.config.get("sns_topic_arns") or [])]


def email_account(session: Session, account_id: uuid.UUID) -> ChannelAccount:
    account = session.get(ChannelAccount, account_id)
    if account is None or account.channel != Channel.email.value:
        raise UnknownEmailAccount("no email account has this account_id")
    return account


# --- recording --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    provider: str
    event_id: str
    kind: FeedbackKind
    address: str
    sending_domain: str
    message_external_id: str | None
    occurred_at: datetime
    detail: dict[str, Any]


_SUPPRESS: dict[FeedbackKind, tuple[SuppressionReason, str, str]] = {
    FeedbackKind.bounce: (SuppressionReason.bounce, "bounce", "EmailBounced"),
    FeedbackKind.complaint: (SuppressionReason.complaint, "complaint", "EmailComplained"),
    FeedbackKind.dropped: (SuppressionReason.undeliverable, "provider", "EmailDropped"),
    FeedbackKind.unsubscribe: (SuppressionReason.opt_out, "provider", "EmailUnsubscribed"),
}


def record(
    session: Session, *, company_id: uuid.UUID, item: Feedback, settings: Settings, now: datetime
) -> bool:
    """Keep one event once: suppress, tell the lead's timeline, update the message and the
    domain's reputation. False when this event was recorded before (a redelivery)."""
    address = item.address.strip().lower()
    created = insert_or_ignore(
        session,
        table_of(EmailFeedback),
        {
            "company_id": company_id,
            "provider": item.provider,
            "event_id": item.event_id[:255],
            "kind": item.kind.value,
            "address": address[:320],
            "sending_domain": item.sending_domain[:255],
            "message_external_id": item.message_external_id,
            "detail": item.detail,
            "occurred_at": item.occurred_at,
            "created_at": now,
        },
        conflict_on=("provider", "event_id"),
    )
    if created is None:
        return False
    contact = crm.find_contact(
        session, company_id=company_id, channel=Channel.email.value, value=address
    )
    lead_id = contact.lead_id if contact is not None else None
    message = _message(session, company_id, item.message_external_id)
    if item.kind in _SUPPRESS:
        reason, source, event_type = _SUPPRESS[item.kind]
        crm.add_suppression(
            session,
            company_id=company_id,
            channel=Channel.email.value,
            address=address,
            reason=reason,
            source=source,
            actor=item.provider,
            now=now,
            lead_id=lead_id,
        )
        if lead_id is not None:
            append_lead_event(
                session,
                company_id=company_id,
                lead_id=lead_id,
                type=event_type,
                data={
                    "address": address,
                    "provider": item.provider,
                    "sending_domain": item.sending_domain,
                    **({"message_id": str(message.id)} if message is not None else {}),
                    **item.detail,
                },
                actor=item.provider,
                now=now,
            )
    if message is not None:
        _update_message(message, item, now)
    if item.kind in (FeedbackKind.bounce, FeedbackKind.complaint):
        evaluate(
            session, company_id=company_id, domain=item.sending_domain, settings=settings, now=now
        )
    return True


def _message(session: Session, company_id: uuid.UUID, external_id: str | None) -> Message | None:
    if not external_id:
        return None
    return session.scalars(
        select(Message).where(
            Message.company_id == company_id,
            Message.channel == Channel.email.value,
            Message.external_id == external_id,
            Message.direction == Direction.outbound.value,
        )
    ).first()


def _update_message(message: Message, item: Feedback, now: datetime) -> None:
    if item.kind in (FeedbackKind.bounce, FeedbackKind.dropped):
        message.status = MessageStatus.failed.value
        message.error = f"{item.kind.value}: {item.detail.get('reason') or item.address}"[:2000]
        message.updated_at = now
    elif item.kind is FeedbackKind.delivery and message.status in (
        MessageStatus.sending.value,
        MessageStatus.sent.value,
        MessageStatus.unknown.value,
    ):
        message.status = MessageStatus.delivered.value
        message.delivered_at = item.occurred_at
        message.updated_at = now


# --- reputation (docs/email-feedback.md 4) ----------------------------------------------------


@dataclass(frozen=True)
class DomainHealth:
    sending_domain: str
    sends: int
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    state: str
    reason: str | None
    since: datetime | None
    window_start: datetime


def _reputation(session: Session, company_id: uuid.UUID, domain: str) -> EmailReputation | None:
    return session.scalars(
        select(EmailReputation).where(
            EmailReputation.company_id == company_id, EmailReputation.sending_domain == domain
        )
    ).first()


def health(
    session: Session, *, company_id: uuid.UUID, domain: str, settings: Settings, now: datetime
) -> DomainHealth:
    row = _reputation(session, company_id, domain)
    start = now - timedelta(days=settings.email_reputation_window_days)
    if row is not None and row.counted_from is not None and row.counted_from > start:
        start = row.counted_from
    sends = session.scalar(
        select(func.count(Message.id))
        .join(ChannelAccount, ChannelAccount.id == Message.channel_account_id)
        .where(
            Message.company_id == company_id,
            Message.channel == Channel.email.value,
            Message.direction == Direction.outbound.value,
            Message.sent_at >= start,
            func.lower(ChannelAccount.external_id).like(f"%@{domain}"),
        )
    )
    counts = dict(
        session.execute(
            select(EmailFeedback.kind, func.count(EmailFeedback.id))
            .where(
                EmailFeedback.company_id == company_id,
                EmailFeedback.sending_domain == domain,
                EmailFeedback.occurred_at >= start,
                EmailFeedback.kind.in_([FeedbackKind.bounce.value, FeedbackKind.complaint.value]),
            )
            .group_by(EmailFeedback.kind)
        ).all()
    )
    sent = int(sends or 0)
    bounces = int(counts.get(FeedbackKind.bounce.value, 0))
    complaints = int(counts.get(FeedbackKind.complaint.value, 0))
    return DomainHealth(
        sending_domain=domain,
        sends=sent,
        bounces=bounces,
        complaints=complaints,
        bounce_rate=bounces / sent if sent else 0.0,
        complaint_rate=complaints / sent if sent else 0.0,
        state=row.state if row is not None else ReputationState.ok.value,
        reason=row.reason if row is not None else None,
        since=row.since if row is not None else None,
        window_start=start,
    )


def _figures(h: DomainHealth) -> dict[str, Any]:
    return {
        "sending_domain": h.sending_domain,
        "sends": h.sends,
        "bounces": h.bounces,
        "complaints": h.complaints,
        "bounce_rate": round(h.bounce_rate, 6),
        "complaint_rate": round(h.complaint_rate, 6),
        "window_start": h.window_start.astimezone(UTC).isoformat(),
    }


def _describe(h: DomainHealth, complaint_line: float, bounce_line: float) -> str:
    parts = []
    if h.complaint_rate >= complaint_line:
        parts.append(
            f"complaint rate {h.complaint_rate:.2%} ({h.complaints} of {h.sends} sends) "
            f"reached {complaint_line:.1%}"
        )
    if h.bounce_rate >= bounce_line:
        parts.append(
            f"bounce rate {h.bounce_rate:.2%} ({h.bounces} of {h.sends} sends) "
            f"reached {bounce_line:.0%}"
        )
    return f"{h.sending_domain}: " + "; ".join(parts)


def evaluate(
    session: Session,
    *,
    company_id: uuid.UUID,
    domain: str,
    settings: Settings,
    now: datetime,
) -> str:
    """Move the domain to alerted or paused when its rates cross a line (never back: only an
    admin's resume lifts a pause). Rates count once the window holds the minimum sends."""
    h = health(session, company_id=company_id, domain=domain, settings=settings, now=now)
    if h.sends < settings.email_reputation_min_sends:
        return h.state
    if h.complaint_rate >= COMPLAINT_PAUSE or h.bounce_rate >= BOUNCE_PAUSE:
        target, reason = (
            ReputationState.paused,
            _describe(h, COMPLAINT_PAUSE, BOUNCE_PAUSE),
        )
        event = "EmailSendingPaused"
    elif h.complaint_rate >= COMPLAINT_ALERT or h.bounce_rate >= BOUNCE_ALERT:
        target, reason = ReputationState.alerted, _describe(h, COMPLAINT_ALERT, BOUNCE_ALERT)
        event = "EmailReputationAlert"
    else:
        return h.state
    order = [ReputationState.ok.value, ReputationState.alerted.value, ReputationState.paused.value]
    if order.index(h.state) >= order.index(target.value):
        return h.state
    row = _reputation(session, company_id, domain)
    if row is None:
        insert_or_ignore(
            session,
            table_of(EmailReputation),
            {"company_id": company_id, "sending_domain": domain, "state": "ok", "since": now},
            conflict_on=("company_id", "sending_domain"),
        )
        row = _reputation(session, company_id, domain)
        assert row is not None
    row.state, row.reason, row.since = target.value, reason, now
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=None,
        type=event,
        data={**_figures(h), "state": target.value, "reason": reason},
        now=now,
    )
    session.flush()
    return target.value


def paused_reason(session: Session, *, company_id: uuid.UUID, from_address: str) -> str | None:
    """Why sequence email from this address's domain is paused, or None (the router's fact)."""
    row = _reputation(session, company_id, _domain_of(from_address))
    if row is None or row.state != ReputationState.paused.value:
        return None
    return row.reason or "email from this domain is paused"


def company_domains(session: Session, *, company_id: uuid.UUID) -> list[str]:
    addresses = session.scalars(
        select(ChannelAccount.external_id).where(
            ChannelAccount.company_id == company_id, ChannelAccount.channel == Channel.email.value
        )
    ).all()
    recorded = session.scalars(
        select(EmailReputation.sending_domain).where(EmailReputation.company_id == company_id)
    ).all()
    return sorted({_domain_of(a) for a in addresses} | set(recorded))


def resume(
    session: Session, *, company_id: uuid.UUID, domain: str, actor: str, now: datetime
) -> None:
    row = _reputation(session, company_id, domain.lower())
    if row is None or row.state != ReputationState.paused.value:
        raise NotPaused(f"email from {domain} is not paused")
    previous = row.reason
    row.state, row.reason, row.since, row.counted_from = "ok", None, now, now
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=None,
        type="EmailSendingResumed",
        data={"sending_domain": row.sending_domain, "paused_for": previous},
        actor=actor,
        now=now,
    )


# --- provider events --------------------------------------------------------------------------


def _time(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def ses_feedback(message_id: str, event: dict[str, Any], now: datetime) -> list[Feedback]:
    """SES's event (identity notifications' "notificationType" or configuration sets'
    "eventType"): one Feedback per recipient it names; other event types give none."""
    kind_name = event.get("notificationType") or event.get("eventType")
    mail = event.get("mail") if isinstance(event.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    domain = _domain_of(str(mail.get("source") or ""))
    external_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    found: list[tuple[FeedbackKind, str, dict[str, Any], Any]] = []
    if kind_name == "Bounce" and isinstance(event.get("bounce"), dict):
        bounce = event["bounce"]
        permanent = bounce.get("bounceType") == "Permanent"
        for r in bounce.get("bouncedRecipients") or []:
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str):
                detail = {
                    "bounce_type": bounce.get("bounceType"),
                    "bounce_subtype": bounce.get("bounceSubType"),
                    "reason": r.get("diagnosticCode"),
                }
                kind = FeedbackKind.bounce if permanent else FeedbackKind.soft_bounce
                found.append((kind, r["emailAddress"], detail, bounce.get("timestamp")))
    elif kind_name == "Complaint" and isinstance(event.get("complaint"), dict):
        complaint = event["complaint"]
        for r in complaint.get("complainedRecipients") or []:
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str):
                detail = {"feedback_type": complaint.get("complaintFeedbackType")}
                found.append(
                    (FeedbackKind.complaint, r["emailAddress"], detail, complaint.get("timestamp"))
                )
    elif kind_name == "Delivery" and isinstance(event.get("delivery"), dict):
        delivery = event["delivery"]
        for address in delivery.get("recipients") or []:
            if isinstance(address, str):
                found.append((FeedbackKind.delivery, address, {}, delivery.get("timestamp")))
    return [
        Feedback(
            provider="ses",
            event_id=f"{message_id}:{parseaddr(address)[1].lower()}",
            kind=kind,
            address=parseaddr(address)[1] or address,
            sending_domain=domain,
            message_external_id=external_id,
            occurred_at=_time(at, now),
            detail={k: v for k, v in detail.items() if v is not None},
        )
        for kind, address, detail, at in found
    ]


def sendgrid_feedback(events: Any, *, sending_domain: str, now: datetime) -> list[Feedback]:
    """SendGrid's event array: bounce (type "blocked" is recorded only), dropped, spamreport,
    unsubscribe, group_unsubscribe and delivered; other events give none."""
    if not isinstance(events, list):
        raise BadFeedback("a SendGrid event delivery is a JSON array of events")
    found = []
    for event in events:
        if not isinstance(event, dict):
            raise BadFeedback("each SendGrid event is a JSON object")
        name = event.get("event")
        if name == "bounce":
            kind = (
                FeedbackKind.soft_bounce if event.get("type") == "blocked" else FeedbackKind.bounce
            )
        elif name == "dropped":
            kind = FeedbackKind.dropped
        elif name == "spamreport":
            kind = FeedbackKind.complaint
        elif name in ("unsubscribe", "group_unsubscribe"):
            kind = FeedbackKind.unsubscribe
        elif name == "delivered":
            kind = FeedbackKind.delivery
        else:
            continue
        event_id, address = event.get("sg_event_id"), event.get("email")
        if not isinstance(event_id, str) or not isinstance(address, str):
            raise BadFeedback(f"a {name} event lacks sg_event_id or email")
        sg_message_id = event.get("sg_message_id")
        external_id = sg_message_id.split(".", 1)[0] if isinstance(sg_message_id, str) else None
        detail = {
            k: event[k]
            for k in ("event", "type", "reason", "status")
            if isinstance(event.get(k), str)
        }
        found.append(
            Feedback(
                provider="sendgrid",
                event_id=event_id,
                kind=kind,
                address=address,
                sending_domain=sending_domain,
                message_external_id=external_id,
                occurred_at=_time(event.get("timestamp"), now),
                detail=detail,
            )
        )
    return found
