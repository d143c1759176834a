from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class JobStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    dlq = "dlq"


class Job(IdMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # Enqueueing the same trigger twice returns the first job (NULL keys never collide).
        UniqueConstraint("company_id", "idempotency_key"),
        Index(None, "company_id", "status"),
        Index(None, "lead_id"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column()
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column()
    # Fencing token of the current claim: completion and failure update the row only while
    # it still holds this token, so a worker that froze past its lease changes nothing.
    lease_token: Mapped[uuid.UUID | None] = mapped_column()
    # When the Celery relay last handed this job to the broker (NULL: not since it was due).
    published_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


# Claiming reads queued jobs in exactly this order (highest priority, then earliest due), so
# the claim walks the index instead of sorting the queue; only queued rows are in it, which
# keeps it small however many jobs have finished.
Index(
    "ix_jobs_claim",
    Job.priority.desc(),
    Job.run_at,
    Job.id,
    postgresql_where=Job.status == "queued",
    sqlite_where=Job.status == "queued",
)
