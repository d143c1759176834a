from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from shvya.conversations import service
from shvya.conversations.schemas import (
    InboundMessageIn,
    MessageOut,
    MessagePage,
    ReceiveResultOut,
)
from shvya.db.session import DbSession
from shvya.deps import ClockDep
from shvya.schemas import (
    AUTH_ERRORS,
    PAGE_LIMIT_DEFAULT,
    LimitQuery,
    OffsetQuery,
    clamp_limit,
    error_responses,
)
from shvya.tenancy.auth import CurrentKey, PhoneRegion

router = APIRouter(tags=["conversations"], responses=error_responses(*AUTH_ERRORS))


@router.post(
    "/inbound-message",
    status_code=201,
    summary="Record a lead's message and queue the AI's reply",
    responses={200: {"model": ReceiveResultOut, "description": "A repeat of a known external_id"}},
)
def post_inbound_message(
    body: InboundMessageIn,
    response: Response,
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
    region: PhoneRegion,
) -> ReceiveResultOut:
    try:
        result = service.receive_inbound_message(
            session,
            company_id=key.company.id,
            message=service.InboundMessage.from_api(body),
            region=region,
            actor=key.actor,
            now=clock.now(),
            opt_out_keywords=key.company.settings.get("opt_out_keywords", []),
        )
    except service.DuplicateInbound as duplicate:
        session.rollback()  # the copy that lost the race writes nothing
        result = duplicate.result
    if result.duplicate:
        response.status_code = 200  # a redelivery: the same ids, nothing written
    return result


@router.get(
    "/leads/{lead_id}/messages",
    summary="A lead's conversation, oldest first",
    responses=error_responses(404),
)
def list_lead_messages(
    lead_id: uuid.UUID,
    session: DbSession,
    key: CurrentKey,
    limit: Annotated[LimitQuery, Query()] = PAGE_LIMIT_DEFAULT,
    offset: Annotated[OffsetQuery, Query()] = 0,
) -> MessagePage:
    limit = clamp_limit(limit)
    messages, total = service.list_lead_messages(
        session, company_id=key.company.id, lead_id=lead_id, limit=limit, offset=offset
    )
    return MessagePage(
        items=[MessageOut.model_validate(m) for m in messages],
        total=total,
        limit=limit,
        offset=offset,
    )
