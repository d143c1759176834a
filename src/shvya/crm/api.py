from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from shvya.crm import service
from shvya.crm.models import Channel
from shvya.crm.schemas import (
    AIPauseIn,
    AssigneeRef,
    LeadCreateIn,
    LeadFilter,
    LeadOut,
    LeadPage,
    LeadPatchIn,
    PipelineOut,
    StageOut,
    StagePatchIn,
    StageRulesIn,
)
from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging
from shvya.errors import Conflict, InvalidInput
from shvya.events import service as events
from shvya.events.schemas import EventPage
from shvya.jobs.service import JobType, enqueue_job
from shvya.schemas import (
    AUTH_ERRORS,
    JobAcceptedOut,
    SafeStr,
    error_responses,
)
from shvya.tenancy.auth import AdminKey, CurrentKey, PhoneRegion

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
    return service.present_lead(session, lead)


@router.get(
    "/leads",
    summary="List leads, newest first; filter by stage, channel, a search, assignee or AI state",
    description="Every filter given narrows the list. `needs_person=true` lists the leads the "
    "AI handed to a person who has not answered yet, the longest-waiting first, with "
    "`ai_paused_reason` and `ai_paused_since` (docs/ai.md 5.5). A query parameter this "
    "endpoint does not take is a 422 naming it.",
    responses=error_responses(404),
)
def list_leads(
    session: DbSession,
    key: CurrentKey,
    page: Paging,
    stage: Annotated[
        SafeStr | None,
        Query(max_length=100, description="Stage id, or name in the default pipeline"),
    ] = None,
    needs_person: Annotated[
        bool | None,
        Query(
            description="true: the AI handed the lead to a person and no person has answered "
            "yet, oldest first; false: every other lead"
        ),
    ] = None,
    ai_paused: Annotated[
        bool | None, Query(description="true: the AI is paused for the lead (for any reason)")
    ] = None,
    channel: Annotated[
        Channel | None, Query(description="The lead has a contact on this channel")
    ] = None,
    q: Annotated[
        SafeStr | None,
        Query(
            min_length=1,
            max_length=200,
            description="Search the name, phone numbers and email addresses (any case; a phone "
            "number matches by its digits)",
        ),
    ] = None,
    assigned_to: Annotated[
        AssigneeRef | None,
        Query(
            description="A user id of the company, `me` for the person the calling key "
            "belongs to, or `none` for leads assigned to no one"
        ),
    ] = None,
) -> LeadPage:
    if assigned_to == "me":
        if key.user_id is None:
            raise InvalidInput(
                "assigned_to=me needs a key that belongs to a person (shvya apikey create "
                "--user EMAIL, or POST /api-keys with user_id); pass a user id instead",
                extra={"field": "assigned_to"},
            )
        assigned_to = key.user_id
    filters = LeadFilter(
        stage=stage,
        needs_person=needs_person,
        ai_paused=ai_paused,
        channel=channel,
        search=q,
        assigned_to=assigned_to,
    )
    leads, total = service.list_leads(
        session, company_id=key.company.id, filters=filters, page=page
    )
    return LeadPage.of(service.present_leads(session, leads), total, page)


@router.get(
    "/leads/{lead_id}",
    summary="One lead with its contacts and stage",
    responses=error_responses(404),
)
def get_lead(lead_id: uuid.UUID, session: DbSession, key: CurrentKey) -> LeadOut:
    lead = service.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    return service.present_lead(session, lead)


@router.patch(
    "/leads/{lead_id}",
    summary="Change a lead's stage, name, priority, attributes or assignee",
    description="`assigned_to`: a user of the company (another id is a 404 user_not_found "
    "naming the field); null unassigns. Each change of assignee is a LeadAssigned event.",
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
    return service.present_lead(session, lead)


@router.post(
    "/leads/{lead_id}/ai/pause",
    summary="Stop the AI answering this lead: a person takes the conversation",
    responses=error_responses(404),
)
def pause_ai(
    lead_id: uuid.UUID,
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
    body: AIPauseIn | None = None,
) -> LeadOut:
    lead = service.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    reason = (body.reason if body else None) or "taken over by a person"
    service.set_ai_paused(
        session, lead=lead, paused=True, reason=reason, actor=key.actor, now=clock.now()
    )
    return service.present_lead(session, lead)


class EmailNotForBumpups(Conflict):
    code = "email_not_for_bumpups"


def _enqueue_for_lead(
    session: DbSession, key: CurrentKey, lead_id: uuid.UUID, job_type: JobType, now: datetime
) -> JobAcceptedOut:
    lead = service.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    job_id, _ = enqueue_job(
        session,
        job_type,
        {"lead_id": str(lead.id)},
        company_id=lead.company_id,
        lead_id=lead.id,
        now=now,
    )
    return JobAcceptedOut(job_id=job_id)


@router.post(
    "/leads/{lead_id}/bumpup",
    status_code=202,
    summary="Send the lead a bump-up now (WhatsApp and sandbox only); done by a job",
    description="The job's result (GET /jobs/{id}) says what was sent, or why it was "
    "refused: not a WhatsApp lead, AI paused, the lead is waiting for an answer, the lead "
    "stopped marketing messages (no_marketing_consent). A lead reachable only by email is "
    "refused at once (409 email_not_for_bumpups): email is never used for bump-ups.",
    responses=error_responses(404, 409),
)
def request_bumpup(
    lead_id: uuid.UUID, session: DbSession, key: CurrentKey, clock: ClockDep
) -> JobAcceptedOut:
    contacts = service.lead_contacts(session, company_id=key.company.id, lead_id=lead_id)
    kinds = {c.channel for c in contacts}
    if kinds == {Channel.email.value}:
        # The router refuses it too (channels.policies, email_not_for_bumpups): say so now.
        raise EmailNotForBumpups(
            "email is for scheduled work: a bump-up never goes by email, and this lead is "
            "reachable only by email"
        )
    return _enqueue_for_lead(session, key, lead_id, JobType.followup_bumpup, clock.now())


@router.post(
    "/leads/{lead_id}/summary",
    status_code=202,
    summary="Write the lead's AI summary now (lead.attributes.ai_summary); done by a job",
    responses=error_responses(404),
)
def request_summary(
    lead_id: uuid.UUID, session: DbSession, key: CurrentKey, clock: ClockDep
) -> JobAcceptedOut:
    return _enqueue_for_lead(session, key, lead_id, JobType.ai_summary, clock.now())


@router.get("/pipelines", summary="The company's pipelines with their stages in order")
def list_pipelines(session: DbSession, key: CurrentKey) -> list[PipelineOut]:
    return service.list_pipelines(session, company_id=key.company.id)


@router.put(
    "/pipelines/{pipeline_id}/stage-rules",
    summary="Replace the rules that move leads between the pipeline's stages (admin)",
    responses=error_responses(403, 404),
)
def put_stage_rules(
    pipeline_id: uuid.UUID, body: StageRulesIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> PipelineOut:
    return service.set_stage_rules(
        session,
        company_id=key.company.id,
        pipeline_id=pipeline_id,
        rules=body.rules,
        actor=key.actor,
        now=clock.now(),
    )


@router.patch(
    "/stages/{stage_id}",
    summary="Set a stage's AI brief (goal, tone, next question, limits, handoff) and its "
    "bump-up timing (admin)",
    description="A field left out keeps its value. `bumpup_idle_minutes` and `bumpup_max` "
    "time the automatic bump-ups of the stage's leads (docs/scheduler.md); null puts a field "
    "back to its default.",
    responses=error_responses(403, 404),
)
def patch_stage(
    stage_id: uuid.UUID, body: StagePatchIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> StageOut:
    stage = service.set_stage_bumpup_timing(
        session,
        company_id=key.company.id,
        stage_id=stage_id,
        patch=body,
        actor=key.actor,
        now=clock.now(),
    )
    if body.ai_config is not None:
        stage = service.set_stage_ai_config(
            session,
            company_id=key.company.id,
            stage_id=stage_id,
            config=body.ai_config,
            actor=key.actor,
            now=clock.now(),
        )
    if "auto_enroll_sequence_id" in body.model_fields_set:
        stage = service.set_stage_auto_enroll(
            session,
            company_id=key.company.id,
            stage_id=stage_id,
            sequence_id=body.auto_enroll_sequence_id,
            actor=key.actor,
            now=clock.now(),
        )
    return StageOut.model_validate(stage)


@router.get(
    "/leads/{lead_id}/events",
    summary="A lead's timeline, oldest first",
    responses=error_responses(404),
)
def list_lead_events(
    lead_id: uuid.UUID, session: DbSession, key: CurrentKey, page: Paging
) -> EventPage:
    service.get_lead(session, company_id=key.company.id, lead_id=lead_id)
    rows, total = events.list_entity_events(
        session,
        company_id=key.company.id,
        entity_type="lead",
        entity_id=lead_id,
        page=page,
    )
    return EventPage.of(rows, total, page)
