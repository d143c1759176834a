"""Each channel's rules, decided in one place (docs/architecture.md rule 6): send, defer until,
or refuse.

Pure functions over facts the router gathers, so every rule is testable without a database:
pacing per lead, the provider's throughput per number, WhatsApp's 24-hour customer service
window (docs/whatsapp.md 1.11), the suppression list and the contact's marketing consent
(docs/architecture.md rule 9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from shvya.channels.quiet_hours import (
    DEFAULT_WINDOWS,
    LIVE_CONVERSATION,
    QuietHoursInvalid,
    QuietWindow,
    next_allowed,
    parse_windows,
)
from shvya.channels.schemas import OutboundContent, TemplateSend
from shvya.crm.models import Channel

WHATSAPP_CHANNELS = frozenset({Channel.wa_cloud})


@dataclass(frozen=True)
class ChannelPolicy:
    """A company's settings for its channels (`company.settings["channels"]`)."""

    # The plan's minimum delay between two messages to one lead; it also keeps us under
    # Meta's pair rate limit (about one message per 6 s, docs/whatsapp.md 1.9).
    min_gap_seconds: float = 15.0
    # Meta's default throughput per business number (docs/whatsapp.md 1.9). Meta counts inbound
    # and outbound messages; SHVYA counts its own sends against it.
    throughput_per_second: int = 80
    window_hours: float = 24.0
    # Sent instead of a free-form AI reply or bump-up outside the 24-hour window.
    reengagement_template: TemplateSend | None = None
    # Local hours email and SMS may go in (docs/quiet-hours.md); the defaults where unset.
    quiet_hours: Mapping[Channel, QuietWindow] = field(
        default_factory=lambda: dict(DEFAULT_WINDOWS)
    )

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ChannelPolicy:
        raw = settings.get("channels", {}) if isinstance(settings, dict) else {}
        template = raw.get("reengagement_template")
        return cls(
            min_gap_seconds=float(raw.get("min_gap_seconds", cls.min_gap_seconds)),
            throughput_per_second=int(raw.get("throughput_per_second", cls.throughput_per_second)),
            window_hours=float(raw.get("window_hours", cls.window_hours)),
            reengagement_template=TemplateSend.model_validate(template) if template else None,
            quiet_hours=_stored_quiet_hours(raw.get("quiet_hours")),
        )


def _stored_quiet_hours(raw: Any) -> dict[Channel, QuietWindow]:
    # PATCH /channels/quiet-hours validates what it stores: anything else is the defaults.
    try:
        return parse_windows(raw)
    except QuietHoursInvalid:
        return dict(DEFAULT_WINDOWS)


@dataclass(frozen=True)
class SendFacts:
    """What the router knows about this send when it asks."""

    channel: Channel
    now: datetime
    is_suppressed: bool
    # The provider's timestamp of the lead's last inbound message on this channel.
    last_inbound_at: datetime | None
    # Our last outbound message to this lead on this channel (any status but failed).
    last_outbound_at: datetime | None
    # Outbound messages on this number in the last second.
    sent_last_second: int
    # May marketing go to this contact? False once they withdrew it (WhatsApp: a
    # `user_preferences` "stop", until "resume"). A contact who never said either has the
    # consent they gave by writing to the business first (docs/whatsapp.md 1.12).
    marketing_consent: bool
    # The lead's IANA time zone for quiet hours (docs/quiet-hours.md): their own, else their
    # phone number's, else the company's.
    lead_timezone: str = "UTC"
    # Email only: why sequence email from the sender's domain is paused (its complaint or
    # bounce rate crossed the pause line, docs/email-feedback.md 4), or None.
    email_paused: str | None = None


class SendKind(StrEnum):
    """What a send is, which is all the rules need to know before its content exists."""

    # Free-form, written for the lead now in answer to them (an AI reply): a service message.
    # Outside WhatsApp's window it may go as the company's re-engagement template, which then
    # starts a conversation and so is marketing.
    reply = "reply"
    # Free-form that must go as written: refused outside the window.
    message = "message"
    # An approved template: allowed outside the window, where it starts a conversation and so
    # is marketing.
    template = "template"
    # A follow-up no message of the lead's asked for: marketing wherever it goes. Free-form;
    # outside the window it may go as the re-engagement template.
    bumpup = "bumpup"
    # A step of a sequence (planned: no handler yet): marketing wherever it goes, sent as
    # written (a free-form step is refused outside the window, a template step is not).
    sequence_step = "sequence_step"
    # The one confirmation an opt-out gets: the only thing sent to a suppressed contact. Only
    # `channels.service.send_opt_out_confirmation` sends with this kind.
    opt_out_confirmation = "opt_out_confirmation"


# Sends that need the contact's marketing consent whatever the window (docs/architecture.md
# rule 9): messages the business starts, not answers to the lead.
MARKETING_KINDS = frozenset({SendKind.bumpup, SendKind.sequence_step})
# Free-form kinds the router may swap for the re-engagement template outside the window.
REENGAGING_KINDS = frozenset({SendKind.reply, SendKind.bumpup})
# The template category WhatsApp's marketing preference stops (docs/whatsapp.md 1.12).
MARKETING_CATEGORY = "MARKETING"
# What a paused sending domain stops (docs/email-feedback.md 4).
EMAIL_PAUSED_KINDS = frozenset({SendKind.sequence_step, SendKind.bumpup})


def kind_of(content: OutboundContent) -> SendKind:
    """The kind of a send whose sender did not say: its content's shape."""
    if content.template is not None:
        return SendKind.template
    return SendKind.reply if content.reengage_with_template else SendKind.message


@dataclass(frozen=True)
class Allow:
    """A send of this kind may go now; as `template` when the window requires it."""

    template: TemplateSend | None = None


@dataclass(frozen=True)
class Send:
    content: OutboundContent


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


@dataclass(frozen=True)
class Refuse:
    reason: str
    detail: str


Verdict = Allow | Defer | Refuse
Decision = Send | Defer | Refuse


def in_customer_service_window(policy: ChannelPolicy, facts: SendFacts) -> bool:
    if facts.last_inbound_at is None:
        return False
    return facts.now - facts.last_inbound_at < timedelta(hours=policy.window_hours)


NO_MARKETING_CONSENT = Refuse(
    "no_marketing_consent",
    "the contact stopped marketing messages (WhatsApp: a user_preferences stop): only replies "
    "inside an open conversation may go until they resume",
)


EMAIL_NOT_FOR_BUMPUPS = Refuse(
    "email_not_for_bumpups",
    "email is for scheduled work (sequences and a person's messages): a bump-up never goes by "
    "email",
)


def quiet_hours_verdict(policy: ChannelPolicy, facts: SendFacts, kind: SendKind) -> Defer | None:
    """Email and SMS wait for the lead's morning (docs/quiet-hours.md). Not WhatsApp, which
    answers live conversations; not the opt-out confirmation; not an SMS answer (a reply or a
    person's message) to a lead who wrote on SMS in the last 30 minutes."""
    window = policy.quiet_hours.get(facts.channel)
    if window is None or kind is SendKind.opt_out_confirmation:
        return None
    live = (
        facts.channel is Channel.sms
        and kind in (SendKind.reply, SendKind.message)
        and facts.last_inbound_at is not None
        and facts.now - facts.last_inbound_at < LIVE_CONVERSATION
    )
    if live:
        return None
    until = next_allowed(window, facts.now, facts.lead_timezone)
    if until is None:
        return None
    local = facts.now.astimezone(ZoneInfo(facts.lead_timezone))
    hours = window.as_json()
    return Defer(
        until,
        f"quiet_hours: {facts.channel.value} goes {hours['start']}-{hours['end']} in the lead's "
        f"time ({facts.lead_timezone}, now {local:%H:%M} there)",
    )


def verdict(policy: ChannelPolicy, facts: SendFacts, kind: SendKind) -> Verdict:
    """The rules for a send of this kind: what a handler asks before it drafts (preflight)
    and what the send asks again with the content (decide)."""
    # Before its content exists a sequence step may be a template: the send decides.
    return _rules(
        policy, facts, kind, as_template=kind in (SendKind.template, SendKind.sequence_step)
    )


def _rules(
    policy: ChannelPolicy, facts: SendFacts, kind: SendKind, *, as_template: bool
) -> Verdict:
    confirmation = kind is SendKind.opt_out_confirmation
    if kind is SendKind.bumpup and facts.channel is Channel.email:
        return EMAIL_NOT_FOR_BUMPUPS
    if facts.is_suppressed and not confirmation:
        # The confirmation's once-only is its send key's (channels.service).
        return Refuse("suppressed", "the contact is on the suppression list")
    if facts.email_paused and facts.channel is Channel.email and kind in EMAIL_PAUSED_KINDS:
        # Replies and a person's messages still go: only what the business starts waits.
        return Refuse("email_paused", facts.email_paused)
    if kind in MARKETING_KINDS and not facts.marketing_consent:
        return NO_MARKETING_CONSENT
    template = None
    window_open = facts.channel not in WHATSAPP_CHANNELS or in_customer_service_window(
        policy, facts
    )
    if not window_open and not as_template:
        if kind not in REENGAGING_KINDS or policy.reengagement_template is None:
            return Refuse(
                "outside_24h_window",
                "more than 24 hours since the lead's last message: only an approved "
                "template may be sent (set a re-engagement template to reach them)",
            )
        template = policy.reengagement_template
    if not window_open and not facts.marketing_consent:
        # A template outside the window starts a conversation: that is marketing.
        return NO_MARKETING_CONSENT
    quiet = quiet_hours_verdict(policy, facts, kind)
    if quiet is not None:
        return quiet
    paced = facts.channel in WHATSAPP_CHANNELS  # the sandbox answers as fast as it can
    if paced and facts.last_outbound_at is not None and not confirmation:
        next_allowed = facts.last_outbound_at + timedelta(seconds=policy.min_gap_seconds)
        if facts.now < next_allowed:
            return Defer(next_allowed, f"at most one message per {policy.min_gap_seconds:g} s")
    if facts.sent_last_second >= policy.throughput_per_second:
        return Defer(
            facts.now + timedelta(seconds=1),
            f"number throughput ({policy.throughput_per_second}/s) reached",
        )
    return Allow(template)


def decide(
    policy: ChannelPolicy, facts: SendFacts, content: OutboundContent, kind: SendKind | None = None
) -> Decision:
    """The verdict for this content, sent as `kind` (by default its shape, `kind_of`), and
    the content to send (the re-engagement template in place of a reply outside the
    window)."""
    answer = _rules(
        policy, facts, kind or kind_of(content), as_template=content.template is not None
    )
    if not isinstance(answer, Allow):
        return answer
    return Send(content if answer.template is None else OutboundContent(template=answer.template))


def template_verdict(facts: SendFacts, *, category: str) -> Refuse | None:
    """A marketing template needs the contact's consent inside the window too: WhatsApp
    refuses it to a contact who stopped marketing (131050, docs/whatsapp.md 1.12)."""
    if category.upper() == MARKETING_CATEGORY and not facts.marketing_consent:
        return NO_MARKETING_CONSENT
    return None
