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
from shvya.tenancy.auth import AdminKey, CompanyKeyOrOperator, CurrentKey
from shvya.tenancy.service import AuthenticatedOperator

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
    description="A company's key sees its company's jobs. Every company's jobs together "
    "(`all_companies=true`) are for the installation's operator: an operator key, made only "
    "by `shvya apikey create --operator` (an operator key always sees every company's).",
    responses=error_responses(403),
)
def get_queue_stats(
    session: DbSession,
    caller: CompanyKeyOrOperator,
    clock: ClockDep,
    all_companies: Annotated[
        bool,
        Query(
            description="Every company's jobs (an operator key: `shvya apikey create --operator`)"
        ),
    ] = False,
) -> QueueStatsOut:
    company_id: uuid.UUID | None = None
    if isinstance(caller, AuthenticatedOperator):
        all_companies = True  # an operator key has no company of its own
    elif all_companies:
        raise Forbidden(
            "all_companies is for the installation's operator: use an operator key "
            "(`shvya apikey create --operator`) or `shvya queue stats` on the server"
        )
    else:
        company_id = caller.company.id
    stats = service.queue_stats(session, company_id=company_id, now=clock.now())
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
