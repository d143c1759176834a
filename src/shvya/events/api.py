from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from shvya.crm import service as crm
from shvya.db.session import DbSession
from shvya.events import service
from shvya.events.schemas import EventOut, EventPage
from shvya.schemas import (
    AUTH_ERRORS,
    PAGE_LIMIT_DEFAULT,
    LimitQuery,
    OffsetQuery,
    clamp_limit,
    error_responses,
)
from shvya.tenancy.auth import CurrentKey

router = APIRouter(tags=["leads"], responses=error_responses(*AUTH_ERRORS))


@router.get(
    "/leads/{lead_id}/events",
    summary="A lead's timeline, oldest first",
    responses=error_responses(404),
)
def list_lead_events(
    lead_id: uuid.UUID,
    session: DbSession,
    key: CurrentKey,
    limit: Annotated[LimitQuery, Query()] = PAGE_LIMIT_DEFAULT,
    offset: Annotated[OffsetQuery, Query()] = 0,
) -> EventPage:
    limit = clamp_limit(limit)
    crm.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    events, total = service.list_entity_events(
        session,
        company_id=key.company.id,
        entity_type="lead",
        entity_id=lead_id,
        limit=limit,
        offset=offset,
    )
    return EventPage(
        items=[EventOut.model_validate(e) for e in events], total=total, limit=limit, offset=offset
    )
