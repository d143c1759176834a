from __future__ import annotations

import uuid

from fastapi import APIRouter

from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging
from shvya.jobs.service import JobType, enqueue_job
from shvya.schemas import (
    AUTH_ERRORS,
    JobAcceptedOut,
    error_responses,
)
from shvya.templates import service
from shvya.templates.schemas import TemplateDraftIn, TemplateOut, TemplatePage
from shvya.tenancy.auth import AdminKey, CurrentKey

router = APIRouter(tags=["templates"], responses=error_responses(*AUTH_ERRORS))


@router.get("/templates", summary="The company's message templates and their status")
def list_templates(session: DbSession, key: CurrentKey, page: Paging) -> TemplatePage:
    rows, total = service.list_templates(
        session, company_id=key.company.id, channel=None, page=page
    )
    return TemplatePage.of(rows, total, page)


@router.post(
    "/templates",
    status_code=201,
    summary="Create a template draft (admin)",
    responses=error_responses(403, 409),
)
def create_template(
    body: TemplateDraftIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> TemplateOut:
    template = service.create_draft(
        session,
        company_id=key.company.id,
        channel=body.channel,
        name=body.name,
        language=body.language,
        category=body.category,
        body=body.body,
        components=list(body.components),
        actor=key.actor,
        now=clock.now(),
    )
    return TemplateOut.model_validate(template)


@router.get("/templates/{template_id}", summary="One template", responses=error_responses(404))
def get_template(template_id: uuid.UUID, session: DbSession, key: CurrentKey) -> TemplateOut:
    return TemplateOut.model_validate(
        service.get_template(session, company_id=key.company.id, template_id=template_id)
    )


@router.post(
    "/templates/{template_id}/submit",
    status_code=202,
    summary="Submit a draft to Meta for approval (admin); done by a job",
    responses=error_responses(403, 404, 409),
)
def submit_template(
    template_id: uuid.UUID, session: DbSession, key: AdminKey, clock: ClockDep
) -> JobAcceptedOut:
    template = service.get_template(session, company_id=key.company.id, template_id=template_id)
    if template.status != service.TemplateStatus.draft.value:
        raise service.TemplateNotDraft(f"template is {template.status}; only drafts are submitted")
    job_id, _ = enqueue_job(
        session,
        JobType.templates_submit,
        {"template_id": str(template.id)},
        company_id=key.company.id,
        idempotency_key=f"templates.submit:{template.id}",
        now=clock.now(),
    )
    return JobAcceptedOut(job_id=job_id)


@router.post(
    "/templates/sync",
    status_code=202,
    summary="Pull the account's templates and statuses from Meta (admin); done by a job",
    responses=error_responses(403),
)
def sync_templates(session: DbSession, key: AdminKey, clock: ClockDep) -> JobAcceptedOut:
    job_id, _ = enqueue_job(
        session, JobType.templates_sync, {}, company_id=key.company.id, now=clock.now()
    )
    return JobAcceptedOut(job_id=job_id)
