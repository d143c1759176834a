"""The channel router: the only way anything leaves SHVYA (docs/architecture.md, "Rules").

A handler asks `preflight()` before it spends anything on a send (a model call), and
`send_message()` asks the same rules again with the content; that answer counts. The send is a
job that calls out, in phases (docs/architecture.md, "Phases of a job that calls out"): the
outbound message is written as `sending` and made durable before the adapter is called, and
the outcome is recorded after. A crash anywhere leaves either no message, or a row the retried
job finds by its send key and marks `unknown` instead of sending again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shvya.channels import email_domains, feedback, sms
from shvya.channels.adapters import ChannelAdapter, ChannelSendError, FailureKind, SendResult
from shvya.channels.email import EMAIL_TRANSPORTS, EmailAdapter, EmailSendResult, content_refusal
from shvya.channels.email_message import EmailTransport
from shvya.channels.policies import (
    Allow,
    ChannelPolicy,
    Defer,
    Refuse,
    Send,
    SendFacts,
    SendKind,
    Verdict,
    decide,
    kind_of,
    template_verdict,
    verdict,
)
from shvya.channels.quiet_hours import lead_zone
from shvya.channels.schemas import (
    EmailAccountIn,
    OutboundContent,
    SendOutcome,
    SendResultOut,
    WhatsAppAccountIn,
)
from shvya.channels.twilio_sms import UNSUBSCRIBED_RECIPIENT as TWILIO_UNSUBSCRIBED
from shvya.channels.whatsapp_cloud import (
    MARKETING_OPT_OUT_CODE,
    WebhookBatch,
    WhatsAppCloudAdapter,
    parse_webhook,
)
from shvya.config import Settings
from shvya.conversations import service as conversations
from shvya.conversations.models import Message, MessageStatus
from shvya.crm import service as crm
from shvya.crm.models import (
    Channel,
    LeadContact,
    Suppression,
    SuppressionReason,
    SuppressionSource,
)
from shvya.crypto import decrypt_secret, encrypt_secret
from shvya.db.base import new_id
from shvya.db.phases import Call, Phases
from shvya.db.session import database_unavailable
from shvya.errors import Conflict, InvalidInput, ShvyaError
from shvya.events.service import append_company_event, append_lead_event
from shvya.faults import crash_point
from shvya.jobs.service import DeferJob, JobType, PermanentJobError, RetryJob, enqueue_job
from shvya.templates import service as templates
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import ChannelAccount, Company

logger = logging.getLogger(__name__)

# WhatsApp's user_preferences value that withdraws marketing consent (docs/whatsapp.md 1.12).
MARKETING_STOP = "stop"
DEFAULT_OPT_OUT_CONFIRMATION = (
    "You're unsubscribed and won't get more messages from us. Reply START to subscribe again."
)

# Writes that belong with a send (what an AI run learnt, a handoff's pause): made once the
# router has given its final verdict, in the transaction of the outbound row or the refusal.
WithSend = Callable[[], None]


class ChannelNotConnected(Conflict):
    code = "channel_not_connected"


# --- adapters ---------------------------------------------------------------------------------


class SandboxAdapter:
    """The browser chat: outbound messages are stored and shown, never sent anywhere."""

    def send(self, *, to: str, content: OutboundContent) -> SendResult:
        return SendResult(external_id=f"sandbox.{uuid.uuid4().hex}")


# One adapter, and so one HTTP client with its kept-alive connections, per channel account
# (and token, and Graph address) per process, shared by every thread that sends for it.
_ADAPTERS: dict[tuple[Any, ...], WhatsAppCloudAdapter] = {}
_ADAPTERS_LOCK = threading.Lock()
_ADAPTERS_MAX = 512


def whatsapp_adapter(account: ChannelAccount, settings: Settings) -> WhatsAppCloudAdapter:
    """The account's adapter, made once per process; a new token makes a new one."""
    if not account.credentials_encrypted:
        raise ChannelNotConnected(f"WhatsApp number {account.external_id} has no access token")
    key = (
        account.id,
        account.external_id,
        account.credentials_encrypted,
        settings.meta_graph_base_url,
        settings.meta_graph_version,
    )
    with _ADAPTERS_LOCK:
        adapter = _ADAPTERS.get(key)
        if adapter is None:
            token = decrypt_secret(
                account.credentials_encrypted, secret_key=settings.secret_key.get_secret_value()
            )
            adapter = WhatsAppCloudAdapter(
                phone_number_id=account.external_id,
                access_token=token,
                base_url=settings.meta_graph_base_url,
                version=settings.meta_graph_version,
            )
            if len(_ADAPTERS) >= _ADAPTERS_MAX:
                # Forgotten, not closed: another thread may be sending with it right now.
                _ADAPTERS.pop(next(iter(_ADAPTERS)))
            _ADAPTERS[key] = adapter
        return adapter


# One transport, and so one kept-open SMTP connection, per email account (and its secret and
# config) per process, shared by every thread that sends for it (docs/email.md 3).
_EMAIL_TRANSPORTS: dict[tuple[Any, ...], EmailTransport] = {}


def email_transport(account: ChannelAccount, settings: Settings) -> EmailTransport:
    """The account's transport, made once per process; new credentials make a new one."""
    config = dict(account.config or {})
    provider = str(config.get("provider") or "smtp")
    factory = EMAIL_TRANSPORTS.get(provider)
    if factory is None:
        raise ChannelNotConnected(f"email provider {provider!r} is not available")
    key = (account.id, account.credentials_encrypted, repr(sorted(config.items())))
    with _ADAPTERS_LOCK:
        transport = _EMAIL_TRANSPORTS.get(key)
        if transport is None:
            secret = (
                decrypt_secret(
                    account.credentials_encrypted,
                    secret_key=settings.secret_key.get_secret_value(),
                )
                if account.credentials_encrypted
                else None
            )
            try:
                transport = factory(config, secret, settings)
            except ChannelSendError as exc:
                # Incomplete settings (a row written by hand, a provider field lost): the
                # router refuses with what to fix instead of failing every send on it.
                raise ChannelNotConnected(
                    f"the email account {account.external_id} cannot send ({exc.message}): "
                    "an admin connects it again with POST /channels/email"
                ) from None
            if len(_EMAIL_TRANSPORTS) >= _ADAPTERS_MAX:
                _EMAIL_TRANSPORTS.pop(next(iter(_EMAIL_TRANSPORTS)))
            _EMAIL_TRANSPORTS[key] = transport
        return transport


def close_email_transports() -> None:
    """Close every cached email transport (its SMTP connection and event loop thread)."""
    with _ADAPTERS_LOCK:
        transports = list(_EMAIL_TRANSPORTS.values())
        _EMAIL_TRANSPORTS.clear()
    for transport in transports:
        transport.close()


# Providers that send the bytes SHVYA composed, so SHVYA's DKIM signature reaches the lead;
# SendGrid builds its own message from the fields and signs it itself (docs/email-domains.md).
_RAW_MIME_PROVIDERS = frozenset({"smtp", "ses"})


def email_adapter(
    account: ChannelAccount, settings: Settings, *, sign: Callable[[bytes], bytes] | None = None
) -> EmailAdapter:
    """The router's email adapter for the company's account (docs/email.md 1), signing with
    the sending domain's DKIM key when `sign` is given."""
    config = account.config or {}
    return EmailAdapter(
        sign=sign if config.get("provider", "smtp") in _RAW_MIME_PROVIDERS else None,
        transport=email_transport(account, settings),
        company_id=account.company_id,
        from_address=account.external_id,
        from_name=str(config["from_name"]) if config.get("from_name") else None,
        settings=settings,
        unsubscribe_mailto=str(config["unsubscribe_mailto"])
        if config.get("unsubscribe_mailto")
        else None,
    )


def _email_refusal(channel: Channel, content: OutboundContent) -> Refuse | None:
    """An email needs a subject and a text part: refused before anything is written."""
    if channel is not Channel.email:
        if content.subject is not None or content.html is not None:
            return Refuse(
                "email_fields_on_other_channel",
                f"subject and html are for email, not {channel.value}",
            )
        return None
    refusal = content_refusal(content)
    return None if refusal is None else Refuse(*refusal)


def _adapter_for(
    session: Session, *, company_id: uuid.UUID, channel: Channel, settings: Settings
) -> tuple[ChannelAdapter, ChannelAccount | None]:
    if channel is Channel.sandbox:
        return SandboxAdapter(), None
    if channel is Channel.wa_cloud:
        account = tenancy.company_channel_account(
            session, company_id=company_id, channel=channel.value
        )
        if account is None:
            raise ChannelNotConnected(
                "no WhatsApp Cloud number is connected to this company: an admin connects "
                "one with POST /channels/whatsapp"
            )
        return whatsapp_adapter(account, settings), account
    if channel in (Channel.email, Channel.sms):
        account = tenancy.company_channel_account(
            session, company_id=company_id, channel=channel.value
        )
        if account is None:
            raise ChannelNotConnected(
                "no email account is connected to this company: an admin connects one with "
                "POST /channels/email (or SMTP_* for the default company)"
                if channel is Channel.email
                else "no SMS number is connected to this company: an admin connects a Twilio "
                "number with POST /channels/sms"
            )
        if channel is Channel.email:
            signer = email_domains.dkim_signer(
                session,
                company_id=company_id,
                from_domain=account.external_id.rpartition("@")[2],
                settings=settings,
            )
            return email_adapter(account, settings, sign=signer), account
        return sms.sms_adapter(account, settings), account
    raise ChannelNotConnected(f"sending on {channel.value} is not available yet")


# --- the router -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What the router found for a lead on a channel: where a send would go, and how."""

    company: Company
    contact: LeadContact
    adapter: ChannelAdapter
    account: ChannelAccount | None
    policy: ChannelPolicy


def _route(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    settings: Settings,
) -> Route | Refuse:
    company = tenancy.get_company(session, company_id=company_id)
    contact = crm.lead_contact(
        session, company_id=company_id, lead_id=lead_id, channel=channel.value
    )
    if contact is None:
        return Refuse("no_contact", f"the lead has no {channel.value} contact")
    try:
        adapter, account = _adapter_for(
            session, company_id=company_id, channel=channel, settings=settings
        )
    except ChannelNotConnected as exc:
        return Refuse(exc.code, exc.message)
    return Route(
        company=company,
        contact=contact,
        adapter=adapter,
        account=account,
        policy=ChannelPolicy.from_settings(company.settings),
    )


def _facts(
    session: Session, route: Route, *, lead_id: uuid.UUID, channel: Channel, now: datetime
) -> SendFacts:
    """What the rules need to know, read fresh each time the router is asked."""
    company_id = route.company.id
    return SendFacts(
        channel=channel,
        now=now,
        is_suppressed=crm.is_suppressed(
            session, company_id=company_id, channel=channel.value, address=route.contact.value
        ),
        last_inbound_at=route.contact.last_inbound_at,
        # Withdrawn only by the contact's own "stop"; never asked means the opt-in they gave
        # by writing first (docs/whatsapp.md 1.12).
        marketing_consent=route.contact.marketing_consent != MARKETING_STOP,
        last_outbound_at=conversations.last_outbound_at(
            session, company_id=company_id, lead_id=lead_id, channel=channel.value
        ),
        # The per-second cap is a WhatsApp number's throughput (docs/whatsapp.md 1.9); an email
        # provider's own rate is the transport's to meet (docs/email.md 3).
        sent_last_second=0
        if route.account is None or channel is Channel.email
        else conversations.outbound_count_since(
            session, channel_account_id=route.account.id, since=now - timedelta(seconds=1)
        ),
        lead_timezone=_lead_zone(session, route, lead_id=lead_id),
        email_paused=feedback.paused_reason(
            session, company_id=company_id, from_address=route.account.external_id
        )
        if channel is Channel.email and route.account is not None
        else None,
    )


def _lead_zone(session: Session, route: Route, *, lead_id: uuid.UUID) -> str:
    """The lead's zone for quiet hours (docs/quiet-hours.md): read only where it matters."""
    if route.policy.quiet_hours.get(Channel(route.contact.channel)) is None:
        return route.company.timezone
    lead = crm.get_lead(session, company_id=route.company.id, lead_id=lead_id)
    phones = [
        c.value
        for c in crm.lead_contacts(session, company_id=route.company.id, lead_id=lead_id)
        if c.value.startswith("+")
    ]
    return lead_zone(lead.timezone, phones, route.company.timezone)


def lead_time_zone(session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID) -> str:
    """The lead's IANA zone as quiet hours read it (docs/quiet-hours.md): the lead's own, else
    their phone number's country, else the company's. Sequence windows run in it too."""
    company = tenancy.get_company(session, company_id=company_id)
    lead = crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    phones = [
        c.value
        for c in crm.lead_contacts(session, company_id=company_id, lead_id=lead_id)
        if c.value.startswith("+")
    ]
    return lead_zone(lead.timezone, phones, company.timezone)


def preflight(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    kind: SendKind,
    settings: Settings,
    now: datetime,
    content: OutboundContent | None = None,
) -> Verdict:
    """The router's verdict on a send of this kind to this lead now (send, defer until, or
    refuse with a reason), before its content exists: a handler asks this before any model
    call, so a send that must wait or may not happen costs nothing. Writes nothing.

    Given the content (a person's message, written already), the verdict is the one the send
    would give it now: `decide()` and the template catalog's checks, as in `_send`."""
    route = _route(
        session, company_id=company_id, lead_id=lead_id, channel=channel, settings=settings
    )
    if isinstance(route, Refuse):
        return route
    email_refusal = None if content is None else _email_refusal(channel, content)
    if email_refusal is not None:
        return email_refusal
    facts = _facts(session, route, lead_id=lead_id, channel=channel, now=now)
    if content is None:
        return verdict(route.policy, facts, kind)
    decision = decide(route.policy, facts, content, kind)
    if not isinstance(decision, Send):
        return decision
    checked = _check_template(
        session, company_id=company_id, channel=channel, facts=facts, content=decision.content
    )
    if isinstance(checked, Refuse):
        return checked
    return Allow(decision.content.template if decision.content is not content else None)


def refuse_preflight(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    verdict: Defer | Refuse,
    now: datetime,
    with_send: WithSend | None = None,
) -> NoReturn:
    """A preflight that said no, as the send would have: the job waits (nothing written, no
    attempt counted), or fails for good with a SendRefused event that says why, kept with
    what `with_send` writes."""
    if isinstance(verdict, Defer):
        raise DeferJob(verdict.until, verdict.reason)
    _refuse(session, company_id, lead_id, verdict, now, with_send)


# --- sending ----------------------------------------------------------------------------------


def send_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    content: OutboundContent,
    send_key: str,
    settings: Settings,
    now: Callable[[], datetime],
    kind: SendKind | None = None,
    actor: str = "system",
    meta: dict[str, Any] | None = None,
    with_send: WithSend | None = None,
) -> Phases[SendResultOut]:
    """Send one message to a lead, at most once per send key, in the job's phases.

    `kind` says what the send is when its content does not (a bump-up: marketing, which needs
    the contact's consent); by default it is the content's shape (`policies.kind_of`). The
    opt-out confirmation is not a kind a caller can give: `send_opt_out_confirmation` is its
    only way out.

    Raises DeferJob (pacing, throughput: the job runs again later, no attempt counted),
    PermanentJobError (refused by a policy or by the provider, with a SendRefused event), or
    RetryJob for failures worth retrying; each keeps what the run wrote since its last call.
    `with_send` writes what belongs with this send once the router has said yes, or with its
    refusal; a deferral leaves it unwritten for the rerun.
    """
    if kind is SendKind.opt_out_confirmation:
        raise ValueError("the opt-out confirmation is sent only by send_opt_out_confirmation()")
    return _send(
        session,
        company_id=company_id,
        lead_id=lead_id,
        channel=channel,
        content=content,
        kind=kind or kind_of(content),
        send_key=send_key,
        settings=settings,
        now=now,
        actor=actor,
        meta=meta,
        with_send=with_send,
    )


# --- a person's message ----------------------------------------------------------------------

# What to do about each refusal, said to the person whose message it refused.
_WHAT_TO_DO = {
    "outside_24h_window": "outside WhatsApp's 24-hour window (the lead last wrote more than "
    "24 hours ago, or never on this channel): send an approved template instead "
    "(`template` with its name, language and body_params)",
    "suppressed": "the lead opted out of messages on this channel: nothing can be sent to "
    "them until they opt in again (they write START, or an admin lifts the suppression with "
    "DELETE /suppressions/{id})",
    "no_marketing_consent": "the lead stopped marketing messages on WhatsApp: until they "
    "resume, only free-form text or a template that is not MARKETING may go, and only inside "
    "their 24-hour window",
}
# Refusals of what the body asked for (an unknown or unapproved template, wrong parameters):
# 422; the rest are the lead's or the channel's state: 409.
_INPUT_REFUSALS = frozenset(
    {
        "template_not_sendable",
        "subject_required",
        "email_text_required",
        "email_fields_on_other_channel",
    }
)
_DETAIL_ADVICE = {
    "template_not_sendable": "sync the templates (POST /templates/sync) or send an approved "
    "one with its parameters",
    "no_contact": "choose a channel the lead has a contact on (`channel`)",
    "subject_required": "give `subject` (and `text`, optionally `html`) for an email",
    "email_text_required": "send an email as `text` with a `subject` (optionally `html`)",
    "email_fields_on_other_channel": "leave out `subject` and `html`, or send with "
    '"channel": "email"',
}


class SendRefusedNow(ShvyaError):
    """The router refused a person's message when it was asked for: nothing was written."""

    def __init__(self, refusal: Refuse) -> None:
        advice = _WHAT_TO_DO.get(refusal.reason)
        if advice is None:
            extra = _DETAIL_ADVICE.get(refusal.reason)
            advice = f"{refusal.detail}: {extra}" if extra else refusal.detail
        super().__init__(advice)
        self.code = refusal.reason
        self.status = 422 if refusal.reason in _INPUT_REFUSALS else 409


@dataclass(frozen=True)
class QueuedMessage:
    message: Message
    job_id: uuid.UUID
    verdict: Allow | Defer


def person_message_channel(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID
) -> Channel | None:
    """Where a person's message goes when they name no channel: the channel the lead last
    wrote on, else their first contact's."""
    contacts = crm.lead_contacts(session, company_id=company_id, lead_id=lead_id)
    if not contacts:
        return None
    written = sorted(
        (c for c in contacts if c.last_inbound_at is not None),
        key=lambda c: (c.last_inbound_at, c.created_at),
    )
    return Channel((written[-1] if written else contacts[0]).channel)


def queue_person_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel | None,
    content: OutboundContent,
    actor: str,
    settings: Settings,
    now: datetime,
) -> QueuedMessage:
    """A message a person (an agent, a supervisor) writes to a lead: the router is asked
    first with the content (`preflight`), and a refusal raises SendRefusedNow with nothing
    written. Otherwise the message is written `queued` (the conversation shows it at once),
    its send is a job through the same router and send-once protocol as the AI's
    (`send_queued_message`), and the AI stays paused for the lead until someone resumes it.
    """
    lead = crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    if channel is None:
        channel = person_message_channel(session, company_id=company_id, lead_id=lead_id)
        if channel is None:
            raise SendRefusedNow(Refuse("no_contact", "the lead has no contact"))
    kind = kind_of(content)
    answer = preflight(
        session,
        company_id=company_id,
        lead_id=lead_id,
        channel=channel,
        kind=kind,
        settings=settings,
        now=now,
        content=content,
    )
    if isinstance(answer, Refuse):
        raise SendRefusedNow(answer)
    contact = crm.lead_contact(
        session, company_id=company_id, lead_id=lead_id, channel=channel.value
    )
    assert contact is not None  # the router refuses a lead without one (no_contact)
    account = (
        tenancy.company_channel_account(session, company_id=company_id, channel=channel.value)
        if channel in (Channel.wa_cloud, Channel.email, Channel.sms)
        else None
    )
    message_id = new_id()
    send_key = f"{JobType.agent_reply.value}:{message_id}"
    message = conversations.create_outbound_message(
        session,
        company_id=company_id,
        lead_id=lead_id,
        contact_id=contact.id,
        channel=channel.value,
        channel_account_id=account.id if account is not None else None,
        text=content.preview(),
        send_key=send_key,
        template_id=None,
        meta={
            "purpose": "agent_reply",
            "actor": actor,
            "kind": content.kind,
            "content": content.model_dump(mode="json", exclude_defaults=True),
        },
        now=now,
        status=MessageStatus.queued,
        message_id=message_id,
    )
    job_id, _ = enqueue_job(
        session,
        JobType.agent_reply.value,
        {"message_id": str(message.id)},
        company_id=company_id,
        lead_id=lead_id,
        idempotency_key=send_key,
        now=now,
        # A deferral (pacing) is known already: the worker need not claim it only to wait.
        run_at=answer.until if isinstance(answer, Defer) else now,
    )
    _event(
        session,
        company_id,
        lead_id,
        "OutboundMessageQueued",
        message.id,
        now,
        {
            "channel": channel.value,
            "kind": content.kind,
            "job_id": str(job_id),
            **(
                {"deferred_until": answer.until.isoformat(), "defer_reason": answer.reason}
                if isinstance(answer, Defer)
                else {}
            ),
        },
        actor,
    )
    # The person has taken the conversation: the AI keeps quiet until someone resumes it.
    crm.set_ai_paused(session, lead=lead, paused=True, reason="agent_replied", actor=actor, now=now)
    return QueuedMessage(message=message, job_id=job_id, verdict=answer)


def send_queued_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    message_id: uuid.UUID,
    settings: Settings,
    now: Callable[[], datetime],
) -> Phases[SendResultOut]:
    """Send a message written `queued` (queue_person_message), once: its send key is its
    own, so a crash or a rerun finds the row (`sending` becomes `unknown`, `sent` is not sent
    again). The router asks again and that answer counts: a deferral reschedules the job, a
    refusal fails it with a SendRefused event and the message `failed` with the reason."""
    message = conversations.get_message(session, company_id=company_id, message_id=message_id)
    actor = str(message.meta.get("actor") or "system")
    content = OutboundContent.model_validate(message.meta["content"])
    try:
        result: SendResultOut = yield from _send(
            session,
            company_id=company_id,
            lead_id=message.lead_id,
            channel=Channel(message.channel),
            content=content,
            kind=kind_of(content),
            send_key=str(message.send_key),
            settings=settings,
            now=now,
            actor=actor,
            meta={k: v for k, v in message.meta.items() if k not in ("content", "kind")},
            with_send=None,
        )
    except PermanentJobError as exc:
        session.refresh(message, ["status"])  # the send may have moved it on (failed)
        if message.status == MessageStatus.queued.value:
            # Refused before it was handed to the provider: the conversation says so.
            conversations.set_outbound_status(
                session,
                message_id=message.id,
                status=MessageStatus.failed,
                now=now(),
                error=str(exc),
                meta_update={"retryable": False, "failure_code": exc.reason},
            )
        raise
    return result


def send_opt_out_confirmation(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    suppression_id: uuid.UUID,
    settings: Settings,
    now: Callable[[], datetime],
) -> Phases[SendResultOut]:
    """The one confirmation an opt-out is owed (docs/whatsapp.md 2), and the only send that
    goes to a suppressed address (docs/architecture.md rule 9).

    Once per opt-out by itself: its send key is the suppression's (`optout:<suppression
    id>`), so a second call, a redelivered or retried job sends nothing more. A contact who
    opted in again before it went (the suppression is gone, or is another one now) is not
    told it is unsubscribed: nothing is sent, the outcome is `skipped`.
    """
    try:
        suppression: Suppression | None = crm.get_suppression(
            session, company_id=company_id, suppression_id=suppression_id
        )
    except crm.SuppressionNotFound:
        suppression = None  # lifted: the contact opted in again
    contact = crm.lead_contact(
        session, company_id=company_id, lead_id=lead_id, channel=channel.value
    )
    if (
        suppression is None
        or contact is None
        or (suppression.channel, suppression.address) != (channel.value, contact.value)
    ):
        return SendResultOut(outcome=SendOutcome.skipped, reason="not_opted_out")
    if channel is Channel.sms and suppression.source == "keyword":
        # Twilio answers STOP on SMS itself (Advanced Opt-Out, docs/sms.md 6): a second
        # confirmation from us would be a double message.
        return SendResultOut(outcome=SendOutcome.skipped, reason="provider_confirms_opt_out")
    company = tenancy.get_company(session, company_id=company_id)
    text = str(company.settings.get("opt_out_confirmation") or DEFAULT_OPT_OUT_CONFIRMATION)
    result: SendResultOut = yield from _send(
        session,
        company_id=company_id,
        lead_id=lead_id,
        channel=channel,
        content=OutboundContent(text=text),
        kind=SendKind.opt_out_confirmation,
        send_key=f"optout:{suppression.id}",
        settings=settings,
        now=now,
        actor="system",
        meta={"purpose": "opt_out_confirmation"},
        with_send=None,
    )
    return result


def _send(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    content: OutboundContent,
    kind: SendKind,
    send_key: str,
    settings: Settings,
    now: Callable[[], datetime],
    actor: str,
    meta: dict[str, Any] | None,
    with_send: WithSend | None,
) -> Phases[SendResultOut]:
    existing = conversations.find_outbound_by_send_key(
        session, company_id=company_id, send_key=send_key
    )
    if existing is not None:
        status = MessageStatus(existing.status)
        if settle_interrupted_send(session, company_id=company_id, send_key=send_key, now=now()):
            return SendResultOut(outcome=SendOutcome.unknown, message_id=existing.id)
        if status is MessageStatus.unknown:
            return SendResultOut(outcome=SendOutcome.unknown, message_id=existing.id)
        if status is MessageStatus.queued:
            pass  # written when it was asked for (queue_message), never handed to a provider
        elif status is not MessageStatus.failed:
            return SendResultOut(
                outcome=SendOutcome.already_sent,
                message_id=existing.id,
                external_id=existing.external_id,
            )
        elif not existing.meta.get("retryable"):
            raise PermanentJobError(
                f"this message already failed: {existing.error}", reason="already_failed"
            )

    moment = now()
    route = _route(
        session, company_id=company_id, lead_id=lead_id, channel=channel, settings=settings
    )
    if isinstance(route, Refuse):
        _refuse(session, company_id, lead_id, route, moment, with_send, actor)
    email_refusal = _email_refusal(channel, content)
    if email_refusal is not None:
        _refuse(session, company_id, lead_id, email_refusal, moment, with_send, actor)
    facts = _facts(session, route, lead_id=lead_id, channel=channel, now=moment)
    decision = decide(route.policy, facts, content, kind)
    if isinstance(decision, Defer):
        # Nothing of this send is written yet: the run's records so far (a provider call's
        # usage) stand, what depends on the send waits for the rerun.
        raise DeferJob(decision.until, decision.reason, keep_work=True)
    if isinstance(decision, Refuse):
        _refuse(session, company_id, lead_id, decision, moment, with_send, actor)
    content = decision.content
    checked = _check_template(
        session, company_id=company_id, channel=channel, facts=facts, content=content
    )
    if isinstance(checked, Refuse):
        _refuse(session, company_id, lead_id, checked, moment, with_send, actor)
    content, template_id = checked

    if with_send is not None:
        with_send()
    # What the sender attaches (why it was sent, the passages an AI reply used), then the
    # content as sent.
    message_meta: dict[str, Any] = {
        **(meta or {}),
        "kind": content.kind,
        "content": content.model_dump(mode="json", exclude_defaults=True),
    }
    contact, account = route.contact, route.account
    if existing is None:
        message = conversations.create_outbound_message(
            session,
            company_id=company_id,
            lead_id=lead_id,
            contact_id=contact.id,
            channel=channel.value,
            channel_account_id=account.id if account else None,
            text=content.preview(),
            send_key=send_key,
            template_id=template_id,
            meta=message_meta,
            now=moment,
        )
        message_id = message.id
    else:
        # A queued message, or a retry of a send that failed retryably: the row now says
        # what goes this time.
        message_id = existing.id
        conversations.resend_outbound_message(
            session,
            message_id=message_id,
            text=content.preview(),
            template_id=template_id,
            meta=message_meta,
            now=moment,
        )

    # The call: the runner commits the row first, so it is durable before the provider
    # hears of it.
    adapter, to, sent_content = route.adapter, contact.value, content
    try:
        result: SendResult = yield Call(
            f"send:{channel.value}", lambda: adapter.send(to=to, content=sent_content)
        )
    except ChannelSendError as exc:
        _record_failure(
            session,
            company_id=company_id,
            lead_id=lead_id,
            message_id=message_id,
            address=contact.value,
            channel=channel,
            error=exc,
            now=now(),
            account_id=account.id if account is not None else None,
        )
    # The provider has it and nothing of that is committed yet: docs/reliability.md F2.
    crash_point("channels.after_provider_accepted")
    sent_at = now()
    conversations.set_outbound_status(
        session,
        message_id=message_id,
        status=MessageStatus.sent,
        now=sent_at,
        external_id=result.external_id,
    )
    if isinstance(result, EmailSendResult) and result.email_message_id:
        # For threading the lead's reply to it (docs/email.md 1).
        session.get_one(Message, message_id).email_message_id = result.email_message_id
    crm.touch_last_outbound(session, company_id=company_id, lead_id=lead_id, at=sent_at)
    _event(
        session,
        company_id,
        lead_id,
        "OutboundMessageSent",
        message_id,
        sent_at,
        {
            "channel": channel.value,
            "kind": content.kind,
            "external_id": result.external_id,
            "actor": actor,
        },
        actor,
    )
    return SendResultOut(
        outcome=SendOutcome.sent, message_id=message_id, external_id=result.external_id
    )


def _check_template(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    facts: SendFacts,
    content: OutboundContent,
) -> tuple[OutboundContent, uuid.UUID | None] | Refuse:
    """A template send checked against the company's catalog (approved, its parameters) and
    its category's consent rule; the content with its URL buttons' positions, and the
    template's id. Anything else passes as it is."""
    if content.template is None:
        return content, None
    template = templates.find_template(
        session,
        company_id=company_id,
        channel=channel.value,
        name=content.template.name,
        language=content.template.language,
    )
    try:
        positions = templates.check_sendable(
            template,
            name=content.template.name,
            language=content.template.language,
            body_params=len(content.template.body_params),
            url_params=len(content.template.button_url_params),
            has_header_media=content.template.header_media is not None,
            has_header_text=content.template.header_text is not None,
        )
    except templates.TemplateNotSendable as exc:
        return Refuse("template_not_sendable", exc.message)
    assert template is not None  # check_sendable refuses an unknown template
    refusal = template_verdict(facts, category=template.category)
    if refusal is not None:
        return refusal
    sent = content.model_copy(
        update={"template": content.template.model_copy(update={"url_button_indexes": positions})}
    )
    return sent, template.id


def settle_interrupted_send(
    session: Session, *, company_id: uuid.UUID, send_key: str, now: datetime
) -> bool:
    """A send whose row says `sending` was interrupted after the row was committed (a crash,
    a lost lease): the provider may have the message, so it becomes `unknown`, visible with an
    OutboundMessageUnknown event, and is never sent again. True if it was such a send."""
    existing = conversations.find_outbound_by_send_key(
        session, company_id=company_id, send_key=send_key
    )
    if existing is None or existing.status != MessageStatus.sending.value:
        return False
    conversations.set_outbound_status(
        session, message_id=existing.id, status=MessageStatus.unknown, now=now
    )
    _event(session, company_id, existing.lead_id, "OutboundMessageUnknown", existing.id, now, {})
    return True


def _event(
    session: Session,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    type_: str,
    message_id: uuid.UUID | None,
    now: datetime,
    data: dict[str, Any],
    actor: str = "system",
) -> None:
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=lead_id,
        type=type_,
        data={**({"message_id": str(message_id)} if message_id else {}), **data},
        actor=actor,
        now=now,
    )


def _refuse(
    session: Session,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    refusal: Refuse,
    now: datetime,
    with_send: WithSend | None,
    actor: str = "system",
) -> NoReturn:
    """The send may not happen: a SendRefused event says why, kept (with what belongs with
    the send) although the job fails."""
    if with_send is not None:
        with_send()
    _event(
        session,
        company_id,
        lead_id,
        "SendRefused",
        None,
        now,
        {"reason": refusal.reason, "detail": refusal.detail},
        actor,
    )
    raise PermanentJobError(
        f"{refusal.reason}: {refusal.detail}", reason=refusal.reason, keep_work=True
    )


def _record_failure(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    message_id: uuid.UUID,
    address: str,
    channel: Channel,
    error: ChannelSendError,
    now: datetime,
    account_id: uuid.UUID | None = None,
) -> NoReturn:
    """The record phase of a failed send: the failure on the message, kept whatever the job
    does next (retry, or fail for good). A refused token is a configuration error: the job
    fails at once, the account is marked as needing a person and the company alerted."""
    shown = f"{error.code}: {error.message}"
    if error.kind is FailureKind.unknown:
        conversations.set_outbound_status(
            session, message_id=message_id, status=MessageStatus.unknown, now=now, error=shown
        )
        _event(
            session,
            company_id,
            lead_id,
            "OutboundMessageUnknown",
            message_id,
            now,
            {"error": shown},
        )
        raise PermanentJobError(
            f"the provider may or may not have the message ({shown}); not resent",
            reason="send_outcome_unknown",
            keep_work=True,
        )
    retryable = error.kind is FailureKind.retry
    conversations.set_outbound_status(
        session,
        message_id=message_id,
        status=MessageStatus.failed,
        now=now,
        error=shown,
        meta_update={"retryable": retryable, "failure_code": error.code},
    )
    # One OutboundMessageFailed either way: retried, or failed for good and why.
    reason = {
        FailureKind.outside_window: "outside_24h_window",
        FailureKind.auth: "channel_auth_failed",
        FailureKind.channel_blocked: "channel_blocked",
    }.get(error.kind, f"provider_{error.code}")
    outcome = {"retrying": True} if retryable else {"reason": reason}
    _event(
        session,
        company_id,
        lead_id,
        "OutboundMessageFailed",
        message_id,
        now,
        {"error": shown, **outcome},
    )
    if retryable:
        # A provider that said when it takes requests again (a rate limit's reset) is not
        # asked before then (docs/email-providers.md).
        raise RetryJob(str(error), keep_work=True, not_before=error.retry_at) from error
    if error.kind in (FailureKind.auth, FailureKind.channel_blocked):
        # A company-level alert: nothing on this channel will send until a person acts.
        if error.kind is FailureKind.auth and account_id is not None:
            tenancy.flag_channel_account(
                session,
                account_id=account_id,
                reason=f"the access token cannot be used ({shown}): connect the number "
                "again with a valid token",
                now=now,
            )
        append_company_event(
            session,
            company_id=company_id,
            type="ChannelAuthFailed" if error.kind is FailureKind.auth else "ChannelBlocked",
            data={
                "channel": channel.value,
                "error": shown,
                **({"account_id": str(account_id)} if account_id is not None else {}),
            },
            now=now,
        )
    if channel is Channel.sms and error.code == str(TWILIO_UNSUBSCRIBED):
        # The number texted STOP to this sender and Twilio refuses it (docs/sms.md 3).
        crm.add_suppression(
            session,
            company_id=company_id,
            channel=channel.value,
            address=address,
            reason=SuppressionReason.opt_out,
            source="provider",
            actor="twilio",
            now=now,
            lead_id=lead_id,
        )
    if error.code == str(MARKETING_OPT_OUT_CODE):
        crm.add_suppression(
            session,
            company_id=company_id,
            channel=channel.value,
            address=address,
            reason=SuppressionReason.marketing_opt_out,
            source=SuppressionSource.provider,
            actor="system",
            now=now,
            lead_id=lead_id,
        )
    raise PermanentJobError(f"{reason}: {shown}", reason=reason, keep_work=True)


def show_typing(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    reply_to_external_id: str | None,
    settings: Settings,
) -> Phases[bool]:
    """Mark the lead's message read and show "typing…" before an AI reply (WhatsApp only).
    Best effort: a failure here never stops the reply."""
    if channel is not Channel.wa_cloud or not reply_to_external_id:
        return False
    account = tenancy.company_channel_account(session, company_id=company_id, channel=channel.value)
    if account is None:
        return False
    adapter = whatsapp_adapter(account, settings)
    message_id = reply_to_external_id
    try:
        yield Call("whatsapp:typing", lambda: adapter.mark_read(message_id, typing=True))
    except ChannelSendError as exc:
        logger.warning("whatsapp.typing_failed", extra={"code": exc.code})
        return False
    return True


# --- templates with Meta ----------------------------------------------------------------------


def whatsapp_admin_adapter(
    session: Session, *, company_id: uuid.UUID, settings: Settings
) -> tuple[WhatsAppCloudAdapter, str]:
    """The adapter and WABA id for account-level calls (templates)."""
    account = tenancy.company_channel_account(
        session, company_id=company_id, channel=Channel.wa_cloud.value
    )
    if account is None:
        raise ChannelNotConnected("no WhatsApp Cloud number is connected to this company")
    waba_id = (account.config or {}).get("waba_id")
    if not waba_id:
        raise ChannelNotConnected("the WhatsApp account has no WABA id; reconnect it with waba_id")
    return whatsapp_adapter(account, settings), str(waba_id)


def sync_whatsapp_templates(
    session: Session, *, company_id: uuid.UUID, settings: Settings, now: datetime
) -> Phases[tuple[int, int]]:
    """Every template of the account and its status, from Meta. Returns (seen, approved)."""
    adapter, waba_id = whatsapp_admin_adapter(session, company_id=company_id, settings=settings)
    listed: list[dict[str, Any]] = yield Call(
        "whatsapp:templates", lambda: list(adapter.list_templates(waba_id))
    )
    seen = [
        templates.upsert_provider_template(
            session, company_id=company_id, channel=Channel.wa_cloud.value, data=item, now=now
        )
        for item in listed
    ]
    return len(seen), sum(t.status == templates.TemplateStatus.approved.value for t in seen)


# --- channel accounts -------------------------------------------------------------------------


class WhatsAppCheckFailed(InvalidInput):
    """Meta, asked with the given token, does not confirm the number (docs/whatsapp.md 1.14)."""

    code = "whatsapp_check_failed"

    def __init__(self, code: str, message: str, *, field: str) -> None:
        super().__init__(message, extra={"errors": [{"field": field, "message": message}]})
        self.code = code


class GraphUnavailable(ShvyaError):
    """Meta could not be asked; nothing was stored."""

    code = "graph_unavailable"
    status = 502


def _check_failed(exc: ChannelSendError, *, asking: str, field: str) -> ShvyaError:
    """What a refused connection check means for the person connecting the number."""
    said = f"{exc.code}: {exc.message}"
    if exc.kind is FailureKind.auth:
        return WhatsAppCheckFailed(
            "whatsapp_token_refused",
            f"Meta refused the access token ({said}): give a valid token of a system user "
            "with the whatsapp_business_messaging and whatsapp_business_management "
            "permissions",
            field="access_token",
        )
    if exc.kind is FailureKind.channel_blocked:
        return WhatsAppCheckFailed(
            "whatsapp_permission_missing",
            f"the access token may not read {asking} ({said}): give it the "
            "whatsapp_business_management permission on this WhatsApp Business Account",
            field="access_token",
        )
    if exc.code == "100":  # no such object, or not one this token may see
        return WhatsAppCheckFailed(
            "whatsapp_not_found",
            f"Meta knows no {asking} that this access token may use ({said})",
            field=field,
        )
    return GraphUnavailable(
        f"Meta's Graph API did not answer the check of {asking} as expected ({said}); "
        "nothing was stored: try again"
    )


@dataclass(frozen=True)
class VerifiedNumber:
    """What Meta confirmed about a business number, asked with its token."""

    phone_number_id: str
    waba_id: str | None
    display_phone_number: str | None
    verified_name: str | None


def verify_whatsapp_number(data: WhatsAppAccountIn, settings: Settings) -> Phases[VerifiedNumber]:
    """Ask Meta, with the given token, whether the number exists and may be used with it
    (`GET /{phone-number-id}`) and whether it is one of the given WABA's numbers
    (`GET /{waba-id}/phone_numbers`): docs/whatsapp.md 1.14. Raises a 422 saying which field
    is wrong, or a 502 when Meta cannot be asked. Touches no database."""
    adapter = WhatsAppCloudAdapter(
        phone_number_id=data.phone_number_id,
        access_token=data.access_token,
        base_url=settings.meta_graph_base_url,
        version=settings.meta_graph_version,
    )
    try:
        try:
            number: dict[str, Any] = yield Call("whatsapp:phone_number", adapter.phone_number)
        except ChannelSendError as exc:
            raise _check_failed(
                exc, asking=f"phone number {data.phone_number_id}", field="phone_number_id"
            ) from None
        waba_id = data.waba_id
        if waba_id is not None:
            try:
                listed: list[dict[str, Any]] = yield Call(
                    "whatsapp:waba_phone_numbers", lambda: adapter.waba_phone_numbers(waba_id)
                )
            except ChannelSendError as exc:
                raise _check_failed(
                    exc, asking=f"WhatsApp Business Account {waba_id}", field="waba_id"
                ) from None
            if data.phone_number_id not in {str(item.get("id")) for item in listed}:
                raise WhatsAppCheckFailed(
                    "whatsapp_number_not_in_waba",
                    f"phone number {data.phone_number_id} is not one of the numbers of "
                    f"WhatsApp Business Account {waba_id}: give the WABA the number belongs to",
                    field="waba_id",
                )
    finally:
        adapter.close()
    shown, name = number.get("display_phone_number"), number.get("verified_name")
    return VerifiedNumber(
        phone_number_id=data.phone_number_id,
        waba_id=waba_id,
        display_phone_number=str(shown)[:32] if shown else None,
        verified_name=str(name)[:200] if name else None,
    )


def connect_whatsapp(
    session: Session,
    *,
    company_id: uuid.UUID,
    data: WhatsAppAccountIn,
    settings: Settings,
    actor: str,
    now: datetime,
) -> Phases[ChannelAccount]:
    """Connect (or reconnect) a WhatsApp Cloud number once Meta has confirmed it with the
    given token (verify_whatsapp_number); nothing is stored when Meta says no or cannot be
    asked. A number or a WABA of another company is a 409."""
    verified = yield from verify_whatsapp_number(data, settings)
    return store_whatsapp_account(
        session,
        company_id=company_id,
        data=data,
        verified=verified,
        settings=settings,
        actor=actor,
        now=now,
    )


def store_whatsapp_account(
    session: Session,
    *,
    company_id: uuid.UUID,
    data: WhatsAppAccountIn,
    verified: VerifiedNumber,
    settings: Settings,
    actor: str,
    now: datetime,
) -> ChannelAccount:
    """Store a number Meta confirmed (connect_whatsapp), its token encrypted, and claim its
    WABA for the company: a number or a WABA of another company is a 409."""
    account = tenancy.upsert_channel_account(
        session,
        company_id=company_id,
        channel=Channel.wa_cloud.value,
        external_id=data.phone_number_id,
        name=data.name,
        credentials_encrypted=encrypt_secret(
            data.access_token, secret_key=settings.secret_key.get_secret_value()
        ),
        config={
            k: v
            for k, v in {
                "waba_id": verified.waba_id,
                "display_phone_number": data.display_phone_number or verified.display_phone_number,
                "verified_name": verified.verified_name,
            }.items()
            if v
        },
        actor=actor,
        now=now,
    )
    if verified.waba_id is not None:
        tenancy.claim_whatsapp_business_account(
            session, company_id=company_id, waba_id=verified.waba_id, now=now
        )
    return account


def connect_whatsapp_from_environment(
    session: Session, *, company_id: uuid.UUID, settings: Settings, now: datetime
) -> Phases[ChannelAccount | None]:
    """META_PHONE_NUMBER_ID and META_WHATSAPP_TOKEN connect the default company's number,
    checked with Meta like any other (connect_whatsapp) unless it is connected already with
    that token."""
    if not settings.meta_phone_number_id or settings.meta_whatsapp_token is None:
        return None
    existing = tenancy.find_channel_account(
        session, channel=Channel.wa_cloud.value, external_id=settings.meta_phone_number_id
    )
    token = settings.meta_whatsapp_token.get_secret_value()
    if existing is not None and existing.credentials_encrypted:
        current = decrypt_secret(
            existing.credentials_encrypted, secret_key=settings.secret_key.get_secret_value()
        )
        if current == token and existing.company_id == company_id:
            return existing
    try:
        data = WhatsAppAccountIn(
            phone_number_id=settings.meta_phone_number_id,
            access_token=token,
            waba_id=settings.meta_waba_id,
            name="from META_* settings",
        )
    except ValidationError as exc:
        raise InvalidInput(
            "META_PHONE_NUMBER_ID, META_WHATSAPP_TOKEN or META_WABA_ID is not valid: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    account = yield from connect_whatsapp(
        session,
        company_id=company_id,
        data=data,
        settings=settings,
        actor="settings",
        now=now,
    )
    return account


# --- email accounts (docs/email.md 5) ---------------------------------------------------------


class EmailCheckFailed(InvalidInput):
    """The email provider, asked with the given settings, does not accept them."""

    code = "email_check_failed"

    def __init__(self, code: str, message: str, *, field: str) -> None:
        super().__init__(message, extra={"errors": [{"field": field, "message": message}]})
        self.code = code


def _bad_email_field(field: str, message: str) -> EmailCheckFailed:
    return EmailCheckFailed("email_account_invalid", message, field=field)


def email_account_config(data: EmailAccountIn) -> tuple[str, dict[str, Any], str | None]:
    """The account's from address (lower-case), its config and its secret, checked: a 422
    naming the field on bad input."""
    if data.provider not in EMAIL_TRANSPORTS:
        raise _bad_email_field(
            "provider",
            f"unknown email provider {data.provider!r}: one of "
            + ", ".join(sorted(EMAIL_TRANSPORTS)),
        )
    try:
        from_email = crm.normalise_email(data.from_email)
    except ValueError as exc:
        raise _bad_email_field("from_email", f"from_email: {exc}") from None
    config: dict[str, Any] = {"provider": data.provider}
    if data.from_name:
        config["from_name"] = data.from_name
    if data.unsubscribe_mailto:
        config["unsubscribe_mailto"] = data.unsubscribe_mailto
    if data.provider == "smtp":
        if not data.host:
            raise _bad_email_field("host", "host: the SMTP server's name is required for smtp")
        config.update({"host": data.host, "security": data.security})
        if data.port:
            config["port"] = data.port
        if data.username:
            config["username"] = data.username
        if data.username and not data.password:
            raise _bad_email_field("password", "password: a username needs its password")
    extra = dict(data.model_extra or {})
    for field in ("region", "access_key_id", "configuration_set", *_EMAIL_SECRET_FIELDS.values()):
        if getattr(data, field) is not None:
            extra[field] = getattr(data, field)
    secret = data.password
    # Each provider's secret under its own name (docs/email-providers.md): stored encrypted,
    # never in the config that GET /channels/accounts shows.
    for provider, field in _EMAIL_SECRET_FIELDS.items():
        given = extra.pop(field, None)
        if given is None:
            continue
        if data.provider != provider or not isinstance(given, str) or not given:
            raise _bad_email_field(field, f"{field}: only for provider {provider}, as a string")
        secret = given
    if data.provider == "ses":
        for field in ("region", "access_key_id"):
            if not isinstance(extra.get(field), str) or not extra[field]:
                raise _bad_email_field(field, f"{field}: required for Amazon SES")
        if not secret:
            raise _bad_email_field("secret_access_key", "secret_access_key: required for SES")
    if data.provider == "sendgrid" and not secret:
        raise _bad_email_field("api_key", "api_key: the SendGrid API key is required")
    # Other providers' fields (and the webhook settings of docs/email.md 5) go in as given.
    config.update({k: v for k, v in extra.items() if k not in config})
    return from_email, config, secret


_EMAIL_SECRET_FIELDS = {"ses": "secret_access_key", "sendgrid": "api_key"}


def verify_email_account(
    config: dict[str, Any], secret: str | None, settings: Settings
) -> Phases[None]:
    """Connect and log in with the given settings (the transport's verify()), on a transport
    of its own that is closed after; a 422 naming the field that is wrong."""
    transport = EMAIL_TRANSPORTS[str(config["provider"])](config, secret, settings)
    try:
        yield Call("email:verify", transport.verify)
    except ChannelSendError as exc:
        if exc.kind is FailureKind.auth:
            field = _EMAIL_SECRET_FIELDS.get(str(config["provider"]), "password")
            raise _bad_email_field(
                field, f"the email provider refused the credentials ({exc.message})"
            ) from None
        raise _bad_email_field(
            "host", f"the email server could not be reached or refused us ({exc.message})"
        ) from None
    finally:
        transport.close()


def store_email_account(
    session: Session,
    *,
    company_id: uuid.UUID,
    from_email: str,
    config: dict[str, Any],
    secret: str | None,
    name: str,
    settings: Settings,
    actor: str,
    now: datetime,
) -> ChannelAccount:
    """Store the company's email account, its secret encrypted; connecting again replaces it
    (one email account per company: the router sends from the newest)."""
    for old in tenancy.list_channel_accounts(session, company_id=company_id):
        if old.channel == Channel.email.value and old.external_id != from_email:
            old.is_active = False  # kept: its messages name it
    account = tenancy.upsert_channel_account(
        session,
        company_id=company_id,
        channel=Channel.email.value,
        external_id=from_email,
        name=name,
        credentials_encrypted=encrypt_secret(
            secret, secret_key=settings.secret_key.get_secret_value()
        )
        if secret
        else None,
        config=config,
        actor=actor,
        now=now,
    )
    account.config = config  # replaced, not merged: a field left out is gone
    session.flush()
    return account


def connect_email(
    session: Session,
    *,
    company_id: uuid.UUID,
    data: EmailAccountIn,
    settings: Settings,
    actor: str,
    now: datetime,
) -> Phases[ChannelAccount]:
    """Check the settings with the provider (unless `verify` is false), then store them."""
    from_email, config, secret = email_account_config(data)
    if data.verify:
        yield from verify_email_account(config, secret, settings)
    return store_email_account(
        session,
        company_id=company_id,
        from_email=from_email,
        config=config,
        secret=secret,
        name=data.name,
        settings=settings,
        actor=actor,
        now=now,
    )


def connect_email_from_environment(
    session: Session, *, company_id: uuid.UUID, settings: Settings, now: datetime
) -> Phases[ChannelAccount | None]:
    """SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASS, SMTP_FROM_EMAIL and SMTP_SECURITY connect
    the default company's mailbox, checked like any other, unless it is connected already
    with these settings."""
    if not settings.smtp_host or not settings.smtp_from_email:
        return None
    password = settings.smtp_pass.get_secret_value() if settings.smtp_pass else None
    try:
        data = EmailAccountIn(
            provider="smtp",
            from_email=settings.smtp_from_email,
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_user,
            password=password,
            name="from SMTP_* settings",
        )
        from_email, config, secret = email_account_config(data)
    except (ValidationError, InvalidInput) as exc:
        raise InvalidInput(f"SMTP_* settings are not valid: {exc}") from None
    existing = tenancy.company_channel_account(
        session, company_id=company_id, channel=Channel.email.value
    )
    if existing is not None and existing.external_id == from_email:
        current = (
            decrypt_secret(
                existing.credentials_encrypted, secret_key=settings.secret_key.get_secret_value()
            )
            if existing.credentials_encrypted
            else None
        )
        same = {k: v for k, v in (existing.config or {}).items() if k in config}
        if current == secret and same == config:
            return existing
    account = yield from connect_email(
        session, company_id=company_id, data=data, settings=settings, actor="settings", now=now
    )
    return account


# --- WhatsApp webhooks ------------------------------------------------------------------------


@dataclass
class WebhookSummary:
    messages: int = 0
    duplicates: int = 0
    statuses: int = 0
    preferences: int = 0
    templates: int = 0
    unknown_numbers: int = 0
    ignored: int = 0
    # Messages the database refused although cleaned: logged, and the rest kept.
    not_stored: int = 0


_STATUS = {
    "sent": MessageStatus.sent,
    "delivered": MessageStatus.delivered,
    "read": MessageStatus.read,
    "played": MessageStatus.read,
    "failed": MessageStatus.failed,
}


def process_whatsapp_webhook(
    session: Session, *, payload: Any, settings: Settings, now: datetime
) -> WebhookSummary:
    """Record everything in one delivery, in the caller's transaction: inbound messages go
    through the same receive() as the API, statuses move messages forward, preferences set
    consent, template updates set template status. Nothing here calls Meta."""
    batch: WebhookBatch = parse_webhook(payload)
    summary = WebhookSummary(ignored=batch.ignored)
    companies: dict[str, tenancy.CompanyRef | None] = {}

    def company_for(phone_number_id: str | None) -> tenancy.CompanyRef | None:
        if phone_number_id is None:
            return None
        if phone_number_id not in companies:
            companies[phone_number_id] = tenancy.find_channel_company(
                session, channel=Channel.wa_cloud.value, external_id=phone_number_id
            )
        return companies[phone_number_id]

    # Each message stands alone (docs/reliability.md P1): one that cannot be kept never costs
    # the others, and a correctly signed delivery is answered 200 unless the database itself
    # is unavailable (then Meta's redelivery brings back what was not kept).
    # A delivery usually holds one message: with nothing written before it, a repeat or a
    # refused row can roll back the whole transaction, and the savepoint's two round trips are
    # saved.
    alone = len(batch.inbound) == 1
    for inbound in batch.inbound:
        company = company_for(inbound.phone_number_id)
        if company is None:
            summary.unknown_numbers += 1
            continue
        sender = f"+{inbound.wa_id}" if inbound.wa_id else f"bsuid:{inbound.user_id}"
        try:
            # Otherwise each message in its own savepoint: a copy racing another delivery, or
            # a row the database refuses, rolls back alone, not the rest of the batch.
            with contextlib.nullcontext() if alone else session.begin_nested():
                result = conversations.receive_inbound_message(
                    session,
                    company_id=company.id,
                    message=conversations.InboundMessage(
                        channel=Channel.wa_cloud,
                        sender=sender,
                        text=inbound.text,
                        name=inbound.name,
                        external_id=inbound.wamid,
                        received_at=inbound.timestamp,
                        meta=inbound.meta,
                        external_user_id=inbound.user_id,
                        # Meta's wa_id is authoritative: a number of a range the phone library
                        # does not know yet is still the lead's (docs/reliability.md P2).
                        sender_from_provider=inbound.wa_id is not None,
                    ),
                    region=company.phone_region or settings.default_phone_region,
                    actor="whatsapp",
                    now=now,
                    opt_out_keywords=company.settings.get("opt_out_keywords", []),
                    clamp_future=True,
                )
        except conversations.DuplicateInbound:
            if alone:
                session.rollback()
            summary.duplicates += 1
            continue
        except InvalidInput as exc:
            if alone:
                session.rollback()
            logger.warning("whatsapp.inbound_rejected", extra={"reason": exc.code})
            summary.ignored += 1
            continue
        except Exception as exc:
            if database_unavailable(exc):
                raise  # 503: nothing is lost, Meta delivers it again
            if alone:
                session.rollback()
            logger.exception(
                "whatsapp.inbound_not_stored",
                extra={"wamid": inbound.wamid[:200], "error": type(exc).__name__},
            )
            summary.not_stored += 1
            continue
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.messages += 1

    for status in batch.statuses:
        company = company_for(status.phone_number_id)
        state = _STATUS.get(status.status)
        if company is None or state is None:
            summary.unknown_numbers += company is None
            summary.ignored += state is None
            continue
        changed = conversations.apply_delivery_status(
            session,
            company_id=company.id,
            channel=Channel.wa_cloud,
            status=conversations.DeliveryStatus(
                external_id=status.wamid,
                status=state,
                at=status.timestamp or now,
                error_code=str(status.error_code) if status.error_code else None,
                error=status.error,
            ),
            now=now,
        )
        if changed is not None:
            summary.statuses += 1
            if state is MessageStatus.failed and status.error_code == MARKETING_OPT_OUT_CODE:
                contact = crm.lead_contact(
                    session,
                    company_id=company.id,
                    lead_id=changed.lead_id,
                    channel=Channel.wa_cloud.value,
                )
                if contact is not None:
                    crm.add_suppression(
                        session,
                        company_id=company.id,
                        channel=Channel.wa_cloud.value,
                        address=contact.value,
                        reason=SuppressionReason.marketing_opt_out,
                        source=SuppressionSource.provider,
                        actor="whatsapp",
                        now=now,
                        lead_id=changed.lead_id,
                    )

    for preference in batch.preferences:
        # By the number when the change names one, else by the WABA, which belongs to one
        # company (docs/whatsapp.md 1.14).
        company = company_for(preference.phone_number_id)
        company_id = (
            company.id
            if company is not None
            else tenancy.whatsapp_business_account_company(session, waba_id=preference.waba_id)
        )
        if company_id is None:
            summary.unknown_numbers += 1
            continue
        contact = crm.find_contact(
            session,
            company_id=company_id,
            channel=Channel.wa_cloud.value,
            value=f"+{preference.wa_id}",
        )
        if contact is not None and crm.set_marketing_consent(
            session,
            contact=contact,
            value=preference.value,
            at=preference.timestamp or now,
            now=now,
        ):
            summary.preferences += 1

    for update in batch.template_updates:
        # Named by the WABA alone, which belongs to one company (docs/whatsapp.md 1.14).
        owner = tenancy.whatsapp_business_account_company(session, waba_id=update.waba_id)
        if owner is None:
            summary.unknown_numbers += 1
            continue
        template = templates.find_template(
            session,
            company_id=owner,
            channel=Channel.wa_cloud.value,
            name=update.name,
            language=update.language,
        )
        status_value = templates.PROVIDER_STATUS.get(update.event.upper())
        if template is None or status_value is None:
            summary.ignored += 1
            continue
        if templates.set_template_status(
            session,
            template=template,
            status=status_value,
            now=now,
            reason=update.reason if update.reason and update.reason != "NONE" else None,
            external_id=update.template_id,
        ):
            summary.templates += 1
    return summary
