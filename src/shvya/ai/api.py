from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from shvya.ai import service
from shvya.ai.providers import AITask
from shvya.ai.schemas import (
    AIModelIn,
    AIModelOut,
    UsageOut,
)
from shvya.conversations import service as conversations
from shvya.crm import service as crm
from shvya.crm.schemas import ResumeOut
from shvya.db.session import DbSession
from shvya.deps import ClockDep
from shvya.schemas import (
    AUTH_ERRORS,
    TIMESTAMP_FORMAT,
    Timestamp,
    error_responses,
)
from shvya.tenancy.auth import AdminKey, CurrentKey

router = APIRouter(tags=["knowledge base and AI"], responses=error_responses(*AUTH_ERRORS))
# A lead's route that needs the conversations domain, which crm (a lower layer) cannot import.
leads_router = APIRouter(tags=["leads"], responses=error_responses(*AUTH_ERRORS))


@leads_router.post(
    "/leads/{lead_id}/ai/resume",
    summary="Let the AI answer this lead again, starting with what no one has answered yet",
    description="The lead's messages since the last answer (by the AI or a person; imported "
    "history and opt-in/out keywords left out) get one AI reply, by the ai.engage job named in "
    "`job_id`. Resuming again queues nothing more, and a lead whose last message is ours gets "
    "no job (docs/ai.md 5.5).",
    responses=error_responses(404),
)
def resume_ai(
    lead_id: uuid.UUID, session: DbSession, key: CurrentKey, clock: ClockDep
) -> ResumeOut:
    resumed = conversations.resume_ai(
        session, company_id=key.company.id, lead_id=lead_id, actor=key.actor, now=clock.now()
    )
    lead = crm.present_lead(
        session, crm.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    )
    return ResumeOut(**lead.model_dump(), pending_messages=resumed.pending, job_id=resumed.job_id)


@router.get(
    "/ai/usage",
    summary="AI calls, tokens, cost and latency: the company's, or one lead's",
    responses=error_responses(404),
)
def get_usage(
    session: DbSession,
    key: CurrentKey,
    lead_id: Annotated[uuid.UUID | None, Query()] = None,
    since: Annotated[
        Timestamp | None,
        Query(description=f"Only calls at or after this time ({TIMESTAMP_FORMAT})"),
    ] = None,
    until: Annotated[
        Timestamp | None,
        Query(description=f"Only calls before this time ({TIMESTAMP_FORMAT})"),
    ] = None,
) -> UsageOut:
    if lead_id is not None:
        crm.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    total, by_task, by_model = service.usage_summary(
        session, company_id=key.company.id, lead_id=lead_id, since=since, until=until
    )
    return UsageOut(
        lead_id=lead_id, since=since, until=until, total=total, by_task=by_task, by_model=by_model
    )


@router.get("/ai/models", summary="Which provider and model each AI task uses")
def list_models(session: DbSession, key: CurrentKey) -> list[AIModelOut]:
    return [
        AIModelOut.model_validate(m)
        for m in service.list_models(session, company_id=key.company.id)
    ]


@router.put(
    "/ai/models/{task}",
    summary="Choose the provider, model and prices for an AI task (admin)",
    responses=error_responses(403),
)
def set_model(
    task: AITask, body: AIModelIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> AIModelOut:
    row = service.set_model(
        session,
        company_id=key.company.id,
        task=task,
        values=body.stored_values(),
        actor=key.actor,
        now=clock.now(),
    )
    return AIModelOut.model_validate(row)
