"""Email templates: POST /templates/email and POST /templates/{id}/preview.

See docs/email-domains.md 3.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, Field

from shvya.db.session import DbSession
from shvya.deps import ClockDep
from shvya.schemas import AUTH_ERRORS, SafeStr, StrictInput, error_responses
from shvya.templates import rendering
from shvya.templates.schemas import TemplateOut
from shvya.tenancy.auth import AdminKey, CurrentKey

router = APIRouter(tags=["templates"], responses=error_responses(*AUTH_ERRORS))


class EmailTemplateIn(StrictInput):
    # Sizes keep the whole body under the API's 1 MB request limit even when every character
    # arrives JSON-escaped (6 bytes); Gmail clips a message over about 102 KB anyway.
    name: SafeStr = Field(min_length=1, max_length=512)
    subject: SafeStr = Field(
        min_length=1, max_length=998, description="Jinja2, e.g. 'A quote for {{ first_name }}'"
    )
    text: SafeStr = Field(
        min_length=1, max_length=50_000, description="The plain-text part (Jinja2)"
    )
    html: SafeStr | None = Field(
        default=None,
        max_length=100_000,
        description="The HTML part (Jinja2; the lead's fields are HTML-escaped)",
    )


class PreviewIn(StrictInput):
    lead_id: uuid.UUID


class RenderedEmailOut(BaseModel):
    subject: str
    text: str
    html: str | None


@router.post(
    "/templates/email",
    status_code=201,
    summary=(
        "Create an email template (admin): Jinja2 with the lead's fields, checked for syntax, "
        "unknown variables and unsafe attributes before it is stored"
    ),
    responses=error_responses(403, 409, 422),
)
def create_email_template(
    body: EmailTemplateIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> TemplateOut:
    template = rendering.create_email_template(
        session,
        company_id=key.company.id,
        name=body.name,
        subject=body.subject,
        text=body.text,
        html=body.html,
        now=clock.now(),
    )
    return TemplateOut.model_validate(template)


@router.post(
    "/templates/{template_id}/preview",
    summary=(
        "Render an email template for one lead: the subject, text and HTML the lead would get, "
        "or 422 naming the field the lead lacks"
    ),
    responses=error_responses(404, 422),
)
def preview_email_template(
    template_id: uuid.UUID, body: PreviewIn, session: DbSession, key: CurrentKey
) -> RenderedEmailOut:
    rendered = rendering.render_email_template(
        session, company_id=key.company.id, template_id=template_id, lead_id=body.lead_id
    )
    return RenderedEmailOut(subject=rendered.subject, text=rendered.text, html=rendered.html)
