"""Email feedback (bounces, complaints, deliveries) and each sending domain's reputation
(docs/email-feedback.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class FeedbackKind(StrEnum):
    bounce = "bounce"  # permanent: the address is suppressed
    soft_bounce = "soft_bounce"  # transient, undetermined or blocked: recorded only
    complaint = "complaint"
    dropped = "dropped"  # the provider refused to send (SendGrid: a known bad address)
    unsubscribe = "unsubscribe"
    delivery = "delivery"


class ReputationState(StrEnum):
    ok = "ok"
    alerted = "alerted"
    paused = "paused"


class EmailFeedback(IdMixin, Base):
    """One provider event about one recipient of one email; the provider's event id makes a
    redelivered webhook a no-op."""

    __tablename__ = "email_feedback"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index(None, "company_id", "sending_domain", "occurred_at"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    # SES: the SNS MessageId and the recipient; SendGrid: sg_event_id.
    event_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    sending_domain: Mapped[str] = mapped_column(String(255))
    message_external_id: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailReputation(IdMixin, Base):
    """A sending domain's state for a company: ok, alerted (the company was told) or paused
    (sequence email from it is refused until an admin resumes it)."""

    __tablename__ = "email_reputation"
    __table_args__ = (UniqueConstraint("company_id", "sending_domain"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    sending_domain: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column()
    # After a resume, rates count only events from here on (the old ones caused the pause).
    counted_from: Mapped[datetime | None] = mapped_column()
