"""Message templates: the provider-approved messages a channel allows outside a conversation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class Template(IdMixin, Base):
    """A message template; on WhatsApp Cloud the only thing allowed outside the 24-hour window."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("company_id", "channel", "name", "language"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16), default="en")
    # WhatsApp: MARKETING, UTILITY or AUTHENTICATION; email: free text.
    category: Mapped[str] = mapped_column(String(32), default="")
    subject: Mapped[str | None] = mapped_column(String(998))
    body: Mapped[str] = mapped_column(Text, default="")
    # Email: the HTML part's Jinja2 source (the text part is `body`); None for text-only mail.
    html: Mapped[str | None] = mapped_column(Text)
    components: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # draft, submitted, approved, rejected, paused, disabled (the provider's word, mapped).
    status: Mapped[str] = mapped_column(String(16), default="draft")
    rejection_reason: Mapped[str | None] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
