"""Each channel's rules, decided in one place (docs/architecture.md rule 6): send, defer until,
or refuse.

Pure functions over facts the router gathers, so every rule is testable without a database:
pacing per lead, the provider's throughput per number, WhatsApp's 24-hour customer service
window (docs/whatsapp.md 1.11) and the suppression list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

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

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ChannelPolicy:
        raw = settings.get("channels", {}) if isinstance(settings, dict) else {}
        template = raw.get("reengagement_template")
        return cls(
            min_gap_seconds=float(raw.get("min_gap_seconds", cls.min_gap_seconds)),
            throughput_per_second=int(raw.get("throughput_per_second", cls.throughput_per_second)),
            window_hours=float(raw.get("window_hours", cls.window_hours)),
            reengagement_template=TemplateSend.model_validate(template) if template else None,
        )


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
    # An opt-out confirmation already went to this contact since it opted out.
    confirmation_already_sent: bool = False


class SendKind(StrEnum):
    """What a send is, which is all the rules need to know before its content exists."""

    # Free-form, written for the lead now (an AI reply, a bump-up): outside WhatsApp's window
    # it may go as the company's re-engagement template.
    reply = "reply"
    # Free-form that must go as written: refused outside the window.
    message = "message"
    # An approved template: allowed outside the window.
    template = "template"
    # The one confirmation an opt-out gets: the only thing sent to a suppressed contact.
    opt_out_confirmation = "opt_out_confirmation"


def kind_of(content: OutboundContent) -> SendKind:
    if content.is_opt_out_confirmation:
        return SendKind.opt_out_confirmation
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


def verdict(policy: ChannelPolicy, facts: SendFacts, kind: SendKind) -> Verdict:
    """The rules for a send of this kind: what a handler asks before it drafts (preflight)
    and what the send asks again with the content (decide)."""
    confirmation = kind is SendKind.opt_out_confirmation
    if facts.is_suppressed:
        if not confirmation:
            return Refuse("suppressed", "the contact is on the suppression list")
        if facts.confirmation_already_sent:
            return Refuse("suppressed", "the contact already got its opt-out confirmation")
    template = None
    needs_template = (
        facts.channel in WHATSAPP_CHANNELS
        and kind is not SendKind.template
        and not in_customer_service_window(policy, facts)
    )
    if needs_template:
        if kind is not SendKind.reply or policy.reengagement_template is None:
            return Refuse(
                "outside_24h_window",
                "more than 24 hours since the lead's last message: only an approved "
                "template may be sent (set a re-engagement template to reach them)",
            )
        template = policy.reengagement_template
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


def decide(policy: ChannelPolicy, facts: SendFacts, content: OutboundContent) -> Decision:
    """The verdict for this content, and the content to send (the re-engagement template in
    place of a reply outside the window)."""
    answer = verdict(policy, facts, kind_of(content))
    if not isinstance(answer, Allow):
        return answer
    return Send(content if answer.template is None else OutboundContent(template=answer.template))
