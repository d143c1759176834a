"""Sending limits per mailbox and per number, and per recipient domain
(docs/sequences-ooo-and-limits.md, "Sending limits").

A sequence step asks `limit_verdict` before it sends. The limits are counted the way Apollo
and Outreach count them: over a rolling window that ends now (the last 60 minutes, the last
24 hours), never per calendar hour or day, so a burst at 23:59 does not get a fresh allowance
at 00:00. A step over a limit waits until enough of the oldest sends in the window have aged
out of it; the hold says which limit and until when, for the enrolment to show.

What counts: SHVYA's own outbound messages on the account (`Message.channel_account_id`),
whatever sent them (AI replies, bump-ups, a person, other sequences), except those that
failed (the provider never took them) and those still `queued` (written ahead of their send
job, not yet handed to the provider; they count once they are). Two aggregate queries at most
per window: a count, and, only when the count is at the limit, the one row that must age out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.orm import Session

from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.crm.models import Channel, LeadContact

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)

# Mailbox providers whose domain is shared by millions of unrelated people: a cap per
# recipient domain protects one company's mail server and spam filter from a flood of
# prospecting, and would only throttle a B2C sender to these for no reason.
SHARED_MAIL_DOMAINS = frozenset(
    "gmail.com googlemail.com yahoo.com yahoo.co.in yahoo.co.uk yahoo.es ymail.com "
    "outlook.com hotmail.com hotmail.es live.com msn.com icloud.com me.com mac.com aol.com "
    "proton.me protonmail.com gmx.com gmx.net zoho.com zohomail.in rediffmail.com "
    "mail.com yandex.com".split()
)


class SendingLimits(BaseModel):
    """How much one channel account may send (None: no limit of that kind)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_hour: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Sends in any rolling 60 minutes."
    )
    per_day: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Sends in any rolling 24 hours."
    )
    per_domain_per_day: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Email only: sends by the whole company to addresses at one recipient "
        "domain in any rolling 24 hours.",
    )
    exempt_domains: frozenset[str] = Field(
        default=SHARED_MAIL_DOMAINS,
        description="Recipient domains the per-domain limit does not apply to.",
    )


# The defaults, per channel (docs/sequences-ooo-and-limits.md, "Defaults and where they come
# from"). A company may override them per channel in `settings["sending_limits"]`.
DEFAULT_LIMITS: dict[str, SendingLimits] = {
    # A Gmail or Microsoft 365 mailbox: Apollo's recommended start is 400 a day; 50 an hour
    # spreads those over a working day instead of one burst. Google's own cap is 2,000 a day.
    Channel.email.value: SendingLimits(per_hour=50, per_day=400, per_domain_per_day=100),
    # Meta's messaging limit starts at 250 new conversations a day and grows with quality;
    # SHVYA counts every outbound message on the number (replies too), hence more.
    Channel.wa_cloud.value: SendingLimits(per_hour=100, per_day=1000),
    # An unofficial WhatsApp Web session has no published limit and is banned for bulk
    # sending: deliberately low.
    Channel.wa_web.value: SendingLimits(per_hour=20, per_day=200),
    # US 10DLC: T-Mobile's smallest daily cap for a registered brand is 2,000 messages.
    Channel.sms.value: SendingLimits(per_hour=500, per_day=2000),
    Channel.sandbox.value: SendingLimits(),
}


def limits_for(channel: str, company_settings: dict[str, Any] | None = None) -> SendingLimits:
    """The limits for a channel: the company's override in `settings["sending_limits"]
    [channel]` (fields it names replace the default's), else the default. A stored override
    that does not validate is ignored, so a bad value never lifts every limit."""
    default = DEFAULT_LIMITS.get(channel, SendingLimits())
    raw = (company_settings or {}).get("sending_limits")
    override = raw.get(channel) if isinstance(raw, dict) else None
    if not isinstance(override, dict):
        return default
    try:
        return SendingLimits.model_validate({**default.model_dump(), **override})
    except ValidationError:
        return default


@dataclass(frozen=True)
class LimitHold:
    """Why a send must wait, and until when."""

    reason: str  # e.g. "mailbox_daily_limit", "number_hourly_limit", "domain_daily_limit"
    detail: str
    until: datetime  # aware UTC


def account_kind(channel: str) -> str:
    """What a limit's reason calls the sending account: mailbox, number or account."""
    if channel == Channel.email.value:
        return "mailbox"
    if channel in (Channel.wa_cloud.value, Channel.wa_web.value, Channel.sms.value):
        return "number"
    return "account"


def _counted() -> ColumnElement[bool]:
    return and_(
        Message.direction == Direction.outbound.value,
        Message.status.not_in((MessageStatus.failed.value, MessageStatus.queued.value)),
    )


def recipient_domain(recipient: str) -> str | None:
    """The domain of an email address, lower case; None when it has none."""
    _, at, domain = recipient.strip().rpartition("@")
    domain = domain.strip().rstrip(".").lower()
    return domain if at and domain else None


def _aged_out_at(
    session: Session, in_window: Select[datetime], *, count: int, limit: int, window: timedelta
) -> datetime:
    """When the send that must leave the window for one more to fit does: the
    (count - limit + 1)-th oldest in the window, plus the window. One indexed row, not a
    load of the window."""
    oldest = session.scalar(in_window.order_by(Message.created_at).offset(count - limit).limit(1))
    assert oldest is not None  # `count` rows matched a moment ago, in this transaction
    return oldest + window


def limit_verdict(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel_account_id: uuid.UUID | None,
    channel: str,
    recipient: str,
    now: datetime,
    limits: SendingLimits,
) -> LimitHold | None:
    """None when one more send on this account (and, for email, to this recipient's domain)
    stays within `limits`; else the hold that ends latest (every limit must have room).

    `channel_account_id` None (a channel without an account row, such as a WhatsApp Web
    session) counts the company's sends on that channel that have no account either.
    """
    holds: list[LimitHold] = []
    kind = account_kind(channel)
    day_since, hour_since = now - DAY, now - HOUR
    account = (
        Message.channel_account_id == channel_account_id
        if channel_account_id is not None
        else and_(Message.channel_account_id.is_(None), Message.channel == channel)
    )
    if limits.per_day is not None or limits.per_hour is not None:
        # Uses the index (channel_account_id, direction, created_at); without an account,
        # (company_id, created_at).
        where = [Message.company_id == company_id, account, _counted()]
        day_count, hour_count = session.execute(
            select(
                func.count(Message.id),
                func.coalesce(func.sum(case((Message.created_at > hour_since, 1), else_=0)), 0),
            ).where(*where, Message.created_at > day_since)
        ).one()
        for count, limit, window, since, name, span in (
            (int(day_count), limits.per_day, DAY, day_since, "daily", "24 hours"),
            (int(hour_count), limits.per_hour, HOUR, hour_since, "hourly", "60 minutes"),
        ):
            if limit is None or count < limit:
                continue
            until = _aged_out_at(
                session,
                select(Message.created_at).where(*where, Message.created_at > since),
                count=count,
                limit=limit,
                window=window,
            )
            holds.append(
                LimitHold(
                    reason=f"{kind}_{name}_limit",
                    detail=f"this {kind} sent {count} messages in the last {span} "
                    f"(limit {limit}); the next may go at {until.isoformat()}",
                    until=until,
                )
            )

    domain = recipient_domain(recipient) if channel == Channel.email.value else None
    if (
        domain is not None
        and limits.per_domain_per_day is not None
        and domain not in limits.exempt_domains
    ):
        where = [
            Message.company_id == company_id,
            Message.channel == Channel.email.value,
            _counted(),
            Message.created_at > day_since,
            LeadContact.company_id == company_id,
            LeadContact.value.endswith(f"@{domain}", autoescape=True),
        ]
        count = (
            session.scalar(
                select(func.count(Message.id))
                .join(LeadContact, LeadContact.id == Message.contact_id)
                .where(*where)
            )
            or 0
        )
        if count >= limits.per_domain_per_day:
            until = _aged_out_at(
                session,
                select(Message.created_at)
                .join(LeadContact, LeadContact.id == Message.contact_id)
                .where(*where),
                count=count,
                limit=limits.per_domain_per_day,
                window=DAY,
            )
            holds.append(
                LimitHold(
                    reason="domain_daily_limit",
                    detail=f"{count} emails went to addresses at {domain} in the last 24 hours "
                    f"(limit {limits.per_domain_per_day}); the next may go at "
                    f"{until.isoformat()}",
                    until=until,
                )
            )
    if not holds:
        return None
    return max(holds, key=lambda hold: hold.until)
