from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shvya.conversations import service
from shvya.conversations.schemas import (
    HistoryIn,
    HistoryOut,
    InboundMessageIn,
    MessagePage,
    ReceiveResultOut,
)
from shvya.db.session import DbSession, unit_of_work
from shvya.deps import ClockDep, Paging
from shvya.errors import UnsupportedMediaType
from shvya.schemas import (
    AUTH_ERRORS,
    error_responses,
    inline_json_schema,
)
from shvya.tenancy.auth import BearerCredentials, CurrentKey, authenticate_request

router = APIRouter(tags=["conversations"], responses=error_responses(*AUTH_ERRORS))


INBOUND_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_json_schema(InboundMessageIn)}},
    }
}


@router.post(
    "/inbound-message",
    status_code=201,
    summary="Record a lead's message and queue the AI's reply",
    openapi_extra=INBOUND_BODY,
    responses={
        200: {"model": ReceiveResultOut, "description": "A repeat of a known external_id"},
        **error_responses(415),
    },
)
async def post_inbound_message(
    request: Request, response: Response, credentials: BearerCredentials
) -> ReceiveResultOut:
    # The busiest route: authentication, the body's validation, the unit of work and its
    # commit run in one thread-pool call instead of a hop per dependency (bench/RESULTS.md,
    # ingest). The key is checked before the body, as on every route, and the commit still
    # comes before the response.
    raw = await request.body()
    result = await run_in_threadpool(_receive, request, credentials, raw)
    if result.duplicate:
        response.status_code = 200  # a redelivery: the same ids, nothing written
    return result


def _require_json(request: Request) -> None:
    """415 unless the body is declared JSON (`application/json`, any parameters such as
    charset): a form post or a text/plain body is not read as JSON."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise UnsupportedMediaType(
            f"the body must be JSON with Content-Type: application/json (got {shown})"
        )


def _parse(raw: bytes) -> InboundMessageIn:
    try:
        return InboundMessageIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        # The fast parser refuses some JSON that Python's accepts (a lone surrogate escape),
        # without naming the field; read it again to say which field holds what.
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise RequestValidationError(errors) from None
        try:
            return InboundMessageIn.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_input=False)
    raise RequestValidationError(errors)


def _receive(
    request: Request, credentials: HTTPAuthorizationCredentials | None, raw: bytes
) -> ReceiveResultOut:
    state = request.app.state
    with unit_of_work(state.session_factory) as session:
        key = authenticate_request(request, session, credentials)
        _require_json(request)
        body = _parse(raw)
        try:
            return service.receive_inbound_message(
                session,
                company_id=key.company.id,
                message=service.InboundMessage.from_api(body),
                region=key.company.phone_region or state.settings.default_phone_region,
                actor=key.actor,
                now=state.clock.now(),
                opt_out_keywords=key.company.settings.get("opt_out_keywords", []),
            )
        except service.DuplicateInbound as duplicate:
            session.rollback()  # the copy that lost the race writes nothing
            return duplicate.result


@router.get(
    "/leads/{lead_id}/messages",
    summary="A lead's conversation, oldest first",
    responses=error_responses(404),
)
def list_lead_messages(
    lead_id: uuid.UUID, session: DbSession, key: CurrentKey, page: Paging
) -> MessagePage:
    messages, total = service.list_lead_messages(
        session, company_id=key.company.id, lead_id=lead_id, page=page
    )
    return MessagePage.of(messages, total, page)


@router.post(
    "/leads/{lead_id}/history",
    status_code=201,
    summary="Import earlier messages of a conversation (nothing is enqueued)",
    responses=error_responses(404),
)
def import_history(
    lead_id: uuid.UUID, body: HistoryIn, session: DbSession, key: CurrentKey, clock: ClockDep
) -> HistoryOut:
    return service.import_history(
        session,
        company_id=key.company.id,
        lead_id=lead_id,
        history=body,
        actor=key.actor,
        now=clock.now(),
    )
