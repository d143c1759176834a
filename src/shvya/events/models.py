from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class Event(IdMixin, Base):
    """The audit trail. Rows are only ever inserted; the migration makes the database refuse
    UPDATE and DELETE on this table."""

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "company_id", "entity_type", "entity_id", "created_at"),
        Index(None, "company_id", "type", "created_at"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[uuid.UUID] = mapped_column()
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Who did it: "system", "api_key:<id>", "user:<id>", "ai".
    actor: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
