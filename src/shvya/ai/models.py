"""The AI's tables: the model chosen per task, every provider call's usage, and each lead's
memory (AISession)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class AIModel(IdMixin, Base):
    """Which provider and model a company uses for one task (engage, bumpup, summary, extract)."""

    __tablename__ = "ai_models"
    __table_args__ = (UniqueConstraint("company_id", "task"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32), default="offline")
    model: Mapped[str] = mapped_column(String(200), default="")
    temperature: Mapped[Decimal] = mapped_column(Numeric(3, 2), default=Decimal("0.30"))
    max_tokens: Mapped[int] = mapped_column(default=512)
    price_per_1k_input: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    price_per_1k_output: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AIUsage(IdMixin, Base):
    """One provider call: what it cost, in tokens, money and time."""

    __tablename__ = "ai_usage"
    __table_args__ = (
        Index(None, "company_id", "created_at"),
        Index(None, "lead_id", "created_at"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    job_id: Mapped[uuid.UUID | None] = mapped_column()
    task: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=Decimal(0))
    latency_ms: Mapped[int] = mapped_column(default=0)
    # ok, or the failure kind (rate_limited, unavailable, auth, bad_request).
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AISession(IdMixin, Base):
    """The AI's memory of one lead: recent turns plus a rolling summary."""

    __tablename__ = "ai_sessions"

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    lead_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE"), unique=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    turns: Mapped[dict[str, Any]] = mapped_column(default=dict)
    token_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
