from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class Direction(StrEnum):
    inbound = "in"
    outbound = "out"


class MessageStatus(StrEnum):
    received = "received"
    queued = "queued"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    read = "read"
    failed = "failed"
    # The provider may or may not have taken it (crash mid-send): shown, never resent by itself.
    unknown = "unknown"


class Message(IdMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        # The provider's message id dedupes redelivered webhooks (NULLs never collide).
        UniqueConstraint("company_id", "channel", "external_id"),
        # One outbound message per send key (job and purpose): a retried job finds the row it
        # wrote before calling the provider instead of sending a second message.
        UniqueConstraint("company_id", "send_key"),
        Index(None, "lead_id", "created_at"),
        Index(None, "channel_account_id", "direction", "created_at"),
        Index(None, "company_id", "created_at"),
        # An email reply names the message it answers by its Message-ID (In-Reply-To,
        # References): threading finds the lead by it.
        Index(None, "company_id", "email_message_id"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("lead_contacts.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("channel_accounts.id", ondelete="SET NULL")
    )
    direction: Mapped[str] = mapped_column(String(3))
    text: Mapped[str] = mapped_column(Text, default="")
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("templates.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16))
    # The provider's id, whole: no length limit is documented, so none is imposed
    # (docs/reliability.md P1; one too long for the unique index is stored as its hash).
    external_id: Mapped[str | None] = mapped_column(Text)
    send_key: Mapped[str | None] = mapped_column(String(255))
    # Email only: the RFC 5322 Message-ID header, without angle brackets (SHVYA's own for what
    # it sends, the sender's for what it receives).
    email_message_id: Mapped[str | None] = mapped_column(String(998))
    error: Mapped[str | None] = mapped_column(Text)
    # Media, buttons, passages used by the AI: whatever the channel or the AI attaches.
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The provider's own time of the message (inbound) or of the send (outbound).
    received_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    read_at: Mapped[datetime | None] = mapped_column()
