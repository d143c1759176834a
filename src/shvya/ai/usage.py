"""Every provider call's usage: what it cost, in tokens, money and time.

The model calls of the AI (ai.service.generate) and the embeddings calls of the knowledge
base (knowledge.service) write a row each, in the record phase after the call
(docs/architecture.md, "Phases of a job that calls out"). A table and nothing else, so it
sits in the AI's lowest layer, below the knowledge base (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


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
