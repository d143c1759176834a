"""The AI's tables: the model chosen per task and each lead's memory (AISession). Every
provider call's usage (AIUsage) is in ai/usage.py, below the knowledge base that records its
embeddings calls there too; imported here as it always was."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.ai.usage import AIUsage
from shvya.db.base import Base, IdMixin, utcnow

__all__ = ["AIModel", "AISession", "AIUsage"]


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
