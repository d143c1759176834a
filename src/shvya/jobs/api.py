from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging
from shvya.errors import Forbidden
from shvya.jobs import service
from shvya.jobs.schemas import JobOut, JobPage, LaneStatsOut, QueueStatsOut, ReplayIn, ReplayOut
from shvya.jobs.service import JobType
from shvya.schemas import (
    AUTH_ERRORS,
    error_responses,
)
from shvya.tenancy.auth import AdminKey, CurrentKey
from shvya.tenancy.models import Role

router = APIRouter(tags=["jobs"], responses=error_responses(*AUTH_ERRORS))


@router.get(
    "/jobs/{job_id}",
    summary="One job: its status, attempts, result and last error",
    responses=error_responses(404),
)
def get_job(job_id: uuid.UUID, session: DbSession, key: CurrentKey) -> JobOut:
    return JobOut.model_validate(service.get_job(session, company_id=key.company.id, job_id=job_id))


@router.get(
    "/queue/stats",
    summary="Queue counts, the oldest due job per lane, and wait times over the last hour",
    responses=error_responses(403),
)
def get_queue_stats(
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
    all_companies: Annotated[
        bool, Query(description="Every company's jobs (admin keys only)")
    ] = False,
) -> QueueStatsOut:
    if all_companies and key.role is not Role.admin:
        raise Forbidden("all_companies needs an admin key")
    stats = service.queue_stats(
        session, company_id=None if all_companies else key.company.id, now=clock.now()
    )
    return QueueStatsOut(
        scope="all" if all_companies else "company",
        by_status=stats.by_status,
        by_type=stats.by_type,
        lanes={lane: LaneStatsOut(**asdict(value)) for lane, value in stats.lanes.items()},
    )


@router.get(
    "/admin/dlq",
    summary="Dead-lettered jobs with their last error (admin)",
    responses=error_responses(403),
)
def list_dead_jobs(
    session: DbSession,
    key: AdminKey,
    page: Paging,
    type: Annotated[JobType | None, Query(description="Only jobs of this type")] = None,
) -> JobPage:
    jobs, total = service.list_dead_jobs(
        session,
        company_id=key.company.id,
        job_type=None if type is None else type.value,
        page=page,
    )
    return JobPage.of(jobs, total, page)


@router.post(
    "/admin/dlq/replay",
    summary="Put dead-lettered jobs back in the queue with their attempts reset (admin)",
    responses=error_responses(403),
)
def replay_dead_jobs(
    session: DbSession, key: AdminKey, clock: ClockDep, body: ReplayIn | None = None
) -> ReplayOut:
    body = body or ReplayIn()
    replayed = service.replay_dead_jobs(
        session,
        company_id=key.company.id,
        job_type=None if body.type is None else body.type.value,
        limit=body.limit,
        now=clock.now(),
    )
    return ReplayOut(replayed=replayed)
