from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, JSONType, utcnow

DEFAULT_STAGES = ("New", "Qualified", "Nurture", "Converted", "Lost")


class Channel(StrEnum):
    wa_cloud = "wa_cloud"
    wa_web = "wa_web"
    email = "email"
    sms = "sms"
    sandbox = "sandbox"


# Automatic bump-ups (docs/scheduler.md): how long a lead stays silent after our last message
# before the scheduler nudges them, per channel when the stage sets none. WhatsApp Cloud's is
# 20 h so the nudge lands inside the 24-hour window the lead's last message opened; the
# sandbox stands in for Cloud. Email and SMS get no bump-ups at all.
DEFAULT_BUMPUP_IDLE_MINUTES: dict[Channel, int] = {
    Channel.wa_cloud: 20 * 60,
    Channel.wa_web: 24 * 60,
    Channel.sandbox: 20 * 60,
}
# Bump-ups a lead gets after their last message before the scheduler stops (0: none).
DEFAULT_BUMPUP_MAX = 2
BUMPUP_IDLE_MINUTES_RANGE = (10, 30 * 24 * 60)
BUMPUP_MAX_RANGE = (0, 10)


class Pipeline(IdMixin, Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("company_id", "name"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(default=False)
    # Rules that move a lead between this pipeline's stages on what the AI understood
    # (crm.schemas.StageRule). NULL: the built-in rules; an empty list: none.
    stage_rules: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# At most one default pipeline per company.
Index(
    "uq_pipelines_default_per_company",
    Pipeline.company_id,
    unique=True,
    sqlite_where=Pipeline.is_default,
    postgresql_where=Pipeline.is_default,
)


class Stage(IdMixin, Base):
    __tablename__ = "stages"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "name"),
        Index(None, "pipeline_id", "position"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column()
    # The AI's brief for leads in this stage: goal, tone, next question, topics to avoid...
    ai_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bump-up timing for leads in this stage; NULL: the default (DEFAULT_BUMPUP_IDLE_MINUTES
    # for the lead's channel, DEFAULT_BUMPUP_MAX).
    bumpup_idle_minutes: Mapped[int | None] = mapped_column()
    bumpup_max: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A lead entering this stage is enrolled in this sequence (docs/sequences.md). No foreign
    # key: crm's tables load without the sequences domain's (the CLI, the layers); the API
    # accepts only the company's own sequences, and sequences are deactivated, never deleted.
    auto_enroll_sequence_id: Mapped[uuid.UUID | None] = mapped_column()


class Lead(IdMixin, Base):
    __tablename__ = "leads"
    __table_args__ = (
        Index(None, "company_id", "created_at"),
        Index(None, "company_id", "stage_id"),
        # GET /leads?assigned_to=...; also what deleting a user scans to unassign its leads.
        Index(None, "company_id", "assigned_user_id"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id"))
    stage_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stages.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(default=0)
    ai_paused: Mapped[bool] = mapped_column(default=False)
    # Why the AI is paused and since when (set_ai_paused); None while it answers. A handoff's
    # reason ("handoff: unknown_answer") means the lead needs a person (docs/ai.md 5.5).
    ai_paused_reason: Mapped[str | None] = mapped_column(String(200))
    ai_paused_at: Mapped[datetime | None] = mapped_column()
    assigned_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_inbound_at: Mapped[datetime | None] = mapped_column()
    last_outbound_at: Mapped[datetime | None] = mapped_column()
    # The lead's IANA time zone when known (they said it, a form gave it): quiet hours run in
    # it before the phone number's country or the company's zone (docs/architecture.md).
    timezone: Mapped[str | None] = mapped_column(String(64))
    # When the bump-up scheduler should look at this lead again (docs/scheduler.md): set when
    # we send (our message plus the shortest idle time a stage can have), moved to the exact
    # due time or cleared by the scheduler. NULL: nothing to look at until we send again.
    next_bumpup_at: Mapped[datetime | None] = mapped_column()


# GET /leads?needs_person=true and ?ai_paused=true, oldest pause first: only paused leads are
# in it, so it stays as small as the queue of conversations waiting for a person.
Index(
    "ix_leads_paused",
    Lead.company_id,
    Lead.ai_paused_at,
    sqlite_where=Lead.ai_paused,
    postgresql_where=Lead.ai_paused,
)


# The bump-up scheduler's claim (sequences.bumpups.due_bumpups): only leads with a wake-up
# time and the AI on are in it, so a tick reads the due ones and never the rest.
Index(
    "ix_leads_next_bumpup",
    Lead.next_bumpup_at,
    sqlite_where=Lead.next_bumpup_at.is_not(None) & ~Lead.ai_paused,
    postgresql_where=Lead.next_bumpup_at.is_not(None) & ~Lead.ai_paused,
)


class LeadContact(IdMixin, Base):
    """One way to reach a lead. `value` is an E.164 phone or a lower-case email."""

    __tablename__ = "lead_contacts"
    __table_args__ = (
        UniqueConstraint("company_id", "channel", "value"),
        # WhatsApp's business-scoped user id: a lead is found by it before its phone number.
        UniqueConstraint("company_id", "channel", "external_user_id"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    # The provider's timestamp of the lead's last message: WhatsApp's 24-hour window runs from it.
    last_inbound_at: Mapped[datetime | None] = mapped_column()
    external_user_id: Mapped[str | None] = mapped_column(String(255))
    # Marketing messages: "stop" or "resume" as the lead last told the provider.
    marketing_consent: Mapped[str | None] = mapped_column(String(16))
    marketing_consent_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SuppressionReason(StrEnum):
    opt_out = "opt_out"  # the lead sent STOP (or one of the company's own keywords)
    marketing_opt_out = "marketing_opt_out"  # WhatsApp user_preferences "stop", or 131050
    undeliverable = "undeliverable"
    bounce = "bounce"
    complaint = "complaint"
    manual = "manual"


class SuppressionSource(StrEnum):
    """Where a suppression came from (docs/email-providers.md section 3)."""

    keyword = "keyword"  # the lead asked to stop: an opt-out keyword, or the AI understood it
    unsubscribe_link = "unsubscribe_link"  # the email's unsubscribe link or one-click POST
    bounce = "bounce"  # a permanent bounce reported by the email provider
    complaint = "complaint"  # the recipient marked the email as spam
    provider = "provider"  # the channel's provider said so (WhatsApp 131050, Twilio 21610...)
    manual = "manual"  # a person, through the API or the CLI


class Suppression(IdMixin, Base):
    """An address nothing may be sent to on a channel; the router checks it before any send."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("company_id", "channel", "address"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # As contacts store it: E.164 phone or lower-case email.
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(32))
    # Where it came from: a SuppressionSource value.
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
