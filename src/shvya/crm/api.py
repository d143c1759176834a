from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from shvya.crm import service
from shvya.crm.schemas import LeadCreateIn, LeadOut, LeadPage, LeadPatchIn, PipelineOut
from shvya.db.session import DbSession
from shvya.deps import ClockDep
from shvya.schemas import (
    AUTH_ERRORS,
    PAGE_LIMIT_DEFAULT,
    LimitQuery,
    OffsetQuery,
    SafeStr,
    clamp_limit,
    error_responses,
)
from shvya.tenancy.auth import CurrentKey, PhoneRegion

router = APIRouter(tags=["leads"], responses=error_responses(*AUTH_ERRORS))


@router.post(
    "/leads",
    status_code=201,
    summary="Create a lead without a message (nothing is enqueued)",
    responses=error_responses(404, 409),
)
def create_lead(
    body: LeadCreateIn, session: DbSession, key: CurrentKey, clock: ClockDep, region: PhoneRegion
) -> LeadOut:
    lead = service.create_lead(
        session,
        company_id=key.company.id,
        data=body,
        region=region,
        actor=key.actor,
        now=clock.now(),
    )
    return service.present_leads(session, [lead])[0]


@router.get("/leads", summary="List leads, newest first", responses=error_responses(404))
def list_leads(
    session: DbSession,
    key: CurrentKey,
    stage: Annotated[SafeStr | None, Query(max_length=100, description="Stage id or name")] = None,
    limit: Annotated[LimitQuery, Query()] = PAGE_LIMIT_DEFAULT,
    offset: Annotated[OffsetQuery, Query()] = 0,
) -> LeadPage:
    limit = clamp_limit(limit)
    leads, total = service.list_leads(
        session, company_id=key.company.id, stage_ref=stage, limit=limit, offset=offset
    )
    return LeadPage(
        items=service.present_leads(session, leads), total=total, limit=limit, offset=offset
    )


@router.get(
    "/leads/{lead_id}",
    summary="One lead with its contacts and stage",
    responses=error_responses(404),
)
def get_lead(lead_id: uuid.UUID, session: DbSession, key: CurrentKey) -> LeadOut:
    lead = service.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    return service.present_leads(session, [lead])[0]


@router.patch(
    "/leads/{lead_id}",
    summary="Change a lead's stage, name, priority or attributes",
    responses=error_responses(404),
)
def patch_lead(
    lead_id: uuid.UUID, body: LeadPatchIn, session: DbSession, key: CurrentKey, clock: ClockDep
) -> LeadOut:
    lead = service.update_lead(
        session,
        company_id=key.company.id,
        lead_id=lead_id,
        patch=body,
        actor=key.actor,
        now=clock.now(),
    )
    return service.present_leads(session, [lead])[0]


@router.get("/pipelines", summary="The company's pipelines with their stages in order")
def list_pipelines(session: DbSession, key: CurrentKey) -> list[PipelineOut]:
    return service.list_pipelines(session, company_id=key.company.id)
