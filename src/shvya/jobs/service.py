from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.db.statements import insert_or_ignore
from shvya.errors import ShvyaError
from shvya.jobs.models import Job, JobStatus


class JobType(StrEnum):
    ai_engage = "ai.engage"
    followup_bumpup = "followup.bumpup"
    ai_summary = "ai.summary"
    sequence_step = "sequence.step"
    email_sequence = "email.sequence"
    webhook_reminder = "webhook.reminder"


# Fixed by DESIGN.md: a caller cannot choose a priority, only a type.
PRIORITIES: dict[JobType, int] = {
    JobType.ai_engage: 100,
    JobType.followup_bumpup: 95,
    JobType.ai_summary: 90,
    JobType.sequence_step: 70,
    JobType.email_sequence: 60,
    JobType.webhook_reminder: 50,
}
P1_MIN_PRIORITY = 90  # ai.engage, followup.bumpup and ai.summary: replies to live leads


class UnknownJobType(ShvyaError):
    code = "unknown_job_type"
    status = 422


def job_priority(job_type: str) -> int:
    try:
        return PRIORITIES[JobType(job_type)]
    except ValueError:
        known = ", ".join(t.value for t in JobType)
        raise UnknownJobType(f"unknown job type {job_type!r}; known types: {known}") from None


def enqueue_job(
    session: Session,
    job_type: str,
    payload: dict[str, Any],
    *,
    company_id: uuid.UUID,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 5,
) -> tuple[uuid.UUID, bool]:
    """Write a queued job in the caller's transaction; returns (job id, created).

    With an idempotency key, a second enqueue of the same (company, key) returns the first
    job and writes nothing: the unique index decides, also between concurrent transactions.
    """
    priority = job_priority(job_type)
    job_id = insert_or_ignore(
        session,
        Job.__table__,  # type: ignore[arg-type]
        {
            "company_id": company_id,
            "lead_id": lead_id,
            "type": job_type,
            "priority": priority,
            "payload": payload,
            "status": JobStatus.queued.value,
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_at": run_at or now,
            "idempotency_key": idempotency_key,
            "created_at": now,
        },
        conflict_on=("company_id", "idempotency_key"),
    )
    if job_id is not None:
        return job_id, True
    existing = session.scalar(
        select(Job.id).where(Job.company_id == company_id, Job.idempotency_key == idempotency_key)
    )
    assert existing is not None  # the conflict we just hit is this row
    return existing, False


def find_job_id(
    session: Session, *, company_id: uuid.UUID, idempotency_key: str
) -> uuid.UUID | None:
    return session.scalar(
        select(Job.id).where(Job.company_id == company_id, Job.idempotency_key == idempotency_key)
    )
