"""Sequences, their steps and the enrolments that walk leads through them (docs/sequences.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, JSONType, utcnow


class Sequence(IdMixin, Base):
    __tablename__ = "sequences"
    __table_args__ = (UniqueConstraint("company_id", "name"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # The steps' channel when they share one, else "mixed" (each step names its own).
    channel: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    # A lead's reply ends their enrollment (kept equal to "reply" in stop_on).
    stop_on_reply: Mapped[bool] = mapped_column(default=True)
    # What ends an enrolment when a step runs: reply, stage_change, unsubscribe, handoff.
    stop_on: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SequenceStep(IdMixin, Base):
    __tablename__ = "sequence_steps"
    __table_args__ = (UniqueConstraint("sequence_id", "position"),)

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    sequence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()
    # `after` in seconds: from the previous step's send, or from enrolment for the first.
    delay_seconds: Mapped[int] = mapped_column(default=0)
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("templates.id", ondelete="RESTRICT")
    )
    # The fixed text (email: the text part).
    body: Mapped[str] = mapped_column(Text, default="")
    # Let the AI write this step from the conversation instead of a fixed text.
    ai_generated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(16), default="")
    # {"days", "hours", "minutes"} as the API took it.
    after: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # {"from": "09:00", "to": "18:00", "weekdays": [1..7]} in the lead's zone, or None.
    window: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Only Monday to Friday (in the lead's zone); `after.days` count business days.
    business_days: Mapped[bool] = mapped_column(default=False)
    subject: Mapped[str | None] = mapped_column(String(998))
    # {"name", "language", "params"}: an approved template of the step's channel.
    template: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    ai_instruction: Mapped[str | None] = mapped_column(Text)


class EnrollmentStatus(StrEnum):
    active = "active"
    paused = "paused"  # out of office until next_run_at, or waiting for a person
    completed = "completed"
    stopped = "stopped"


class Enrollment(IdMixin, Base):
    """One lead walking through one sequence. A lead is at most once active (or paused) in a
    sequence (the partial unique index below); enrolling a lead whose enrolment ended (stopped,
    completed) adds a new row that starts again from the first step, so each row's step jobs
    have keys of their own (seq:<enrolment id>:<position>)."""

    __tablename__ = "sequence_enrollments"
    __table_args__ = (Index(None, "company_id", "lead_id"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    sequence_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    # The lead's stage when enrolled: a change ends the enrolment (stop_on stage_change).
    stage_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    # The index of the next step to send.
    position: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.active.value)
    # When the next step is due; NULL once the scheduler queued its job, and when nothing is due.
    next_run_at: Mapped[datetime | None] = mapped_column()
    queued_at: Mapped[datetime | None] = mapped_column()
    last_step_at: Mapped[datetime | None] = mapped_column()
    # Inbound messages after this moment are replies (an out-of-office moves it on).
    replies_after: Mapped[datetime] = mapped_column(default=utcnow)
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    # Why the next step waits (window, a sending limit, quiet hours...), or None.
    hold_reason: Mapped[str | None] = mapped_column(String(200))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


LIVE_STATUSES = (EnrollmentStatus.active.value, EnrollmentStatus.paused.value)

# A lead is never twice live in the same sequence: bulk enrolment answers "already" for them.
Index(
    "uq_sequence_enrollments_live",
    Enrollment.sequence_id,
    Enrollment.lead_id,
    unique=True,
    sqlite_where=Enrollment.status.in_(LIVE_STATUSES),
    postgresql_where=Enrollment.status.in_(LIVE_STATUSES),
)

# The scheduler's claim: only rows with a due time are in it, so a tick costs the due rows.
Index(
    "ix_sequence_enrollments_due",
    Enrollment.next_run_at,
    sqlite_where=Enrollment.next_run_at.is_not(None),
    postgresql_where=Enrollment.next_run_at.is_not(None),
)
