"""Message templates and their approval workflow (docs/whatsapp.md 1.12).

draft -> submitted -> approved | rejected; an approved template can later be paused or
disabled by the provider. Only approved templates are ever sent.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.db.queries import get_for_company, page_of
from shvya.errors import Conflict, InvalidInput, NotFound
from shvya.events.service import append_company_event
from shvya.schemas import PageRequest
from shvya.templates.models import Template

BODY_VARIABLE = re.compile(r"\{\{\s*(\d+)\s*\}\}")


class TemplateStatus(StrEnum):
    draft = "draft"
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"
    paused = "paused"
    disabled = "disabled"


# Meta's statuses and webhook events, in our words.
PROVIDER_STATUS = {
    "APPROVED": TemplateStatus.approved,
    "PENDING": TemplateStatus.submitted,
    "IN_APPEAL": TemplateStatus.submitted,
    "REINSTATED": TemplateStatus.approved,
    "UNARCHIVED": TemplateStatus.approved,
    "REJECTED": TemplateStatus.rejected,
    "PAUSED": TemplateStatus.paused,
    "FLAGGED": TemplateStatus.approved,  # still sendable, quality warning
    "DISABLED": TemplateStatus.disabled,
    "ARCHIVED": TemplateStatus.disabled,
    "DELETED": TemplateStatus.disabled,
    "PENDING_DELETION": TemplateStatus.disabled,
    "LIMIT_EXCEEDED": TemplateStatus.rejected,
    "LOCKED": TemplateStatus.paused,
}


class TemplateNotFound(NotFound):
    code = "template_not_found"


class TemplateNotSendable(InvalidInput):
    code = "template_not_sendable"


class TemplateExists(Conflict):
    code = "template_exists"


class TemplateNotDraft(Conflict):
    code = "template_not_draft"


def body_variable_count(body: str) -> int:
    """`{{1}}`, `{{2}}`...: the highest index is how many body parameters a send needs."""
    indexes = [int(match) for match in BODY_VARIABLE.findall(body)]
    return max(indexes, default=0)


def _components_body(components: Any) -> str:
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and str(component.get("type", "")).upper() == "BODY":
            return str(component.get("text", ""))
    return ""


def url_button_positions(components: Any) -> list[int]:
    """Positions, among all of a template's buttons, of the URL buttons that take a variable:
    Meta's `index` of a button parameter counts quick replies too."""
    positions: list[int] = []
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and str(component.get("type", "")).upper() == "BUTTONS":
            for position, button in enumerate(component.get("buttons", [])):
                if str(button.get("type", "")).upper() == "URL" and BODY_VARIABLE.search(
                    str(button.get("url", ""))
                ):
                    positions.append(position)
    return positions


def _header_text(components: Any) -> str:
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and str(component.get("type", "")).upper() == "HEADER":
            return str(component.get("text", ""))
    return ""


def _header_format(components: Any) -> str | None:
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and str(component.get("type", "")).upper() == "HEADER":
            return str(component.get("format", "TEXT")).upper()
    return None


def list_templates(
    session: Session, *, company_id: uuid.UUID, channel: str | None, page: PageRequest
) -> tuple[Sequence[Template], int]:
    where = [Template.company_id == company_id]
    if channel is not None:
        where.append(Template.channel == channel)
    return page_of(
        session, Template, *where, order_by=(Template.name, Template.language), page=page
    )


def get_template(session: Session, *, company_id: uuid.UUID, template_id: uuid.UUID) -> Template:
    return get_for_company(
        session, Template, template_id, company_id=company_id, missing=TemplateNotFound
    )


def find_template(
    session: Session, *, company_id: uuid.UUID, channel: str, name: str, language: str
) -> Template | None:
    return session.scalars(
        select(Template).where(
            Template.company_id == company_id,
            Template.channel == channel,
            Template.name == name,
            Template.language == language,
        )
    ).first()


def create_draft(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: str,
    name: str,
    language: str,
    category: str,
    body: str,
    components: list[dict[str, Any]],
    actor: str,
    now: datetime,
) -> Template:
    if find_template(session, company_id=company_id, channel=channel, name=name, language=language):
        raise TemplateExists(f"template {name!r} ({language}) already exists on {channel}")
    if not any(str(c.get("type", "")).upper() == "BODY" for c in components):
        components = [{"type": "BODY", "text": body}, *components]
    template = Template(
        company_id=company_id,
        channel=channel,
        name=name,
        language=language,
        category=category,
        body=body,
        components={"items": components},
        status=TemplateStatus.draft.value,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    session.flush()
    append_company_event(
        session,
        company_id=company_id,
        type="TemplateDrafted",
        data={"template_id": str(template.id), "name": name, "language": language},
        actor=actor,
        now=now,
    )
    return template


def provider_definition(template: Template) -> dict[str, Any]:
    """What Meta's POST /{waba}/message_templates takes for this draft."""
    return {
        "name": template.name,
        "language": template.language,
        "category": template.category.upper(),
        "components": template.components.get("items", []),
    }


def set_template_status(
    session: Session,
    *,
    template: Template,
    status: TemplateStatus,
    now: datetime,
    reason: str | None = None,
    external_id: str | None = None,
) -> bool:
    """Returns whether it changed; a repeated status webhook changes nothing."""
    if external_id is not None:
        template.external_id = external_id
    if template.status == status.value and template.rejection_reason == reason:
        return False
    previous = template.status
    template.status = status.value
    template.rejection_reason = reason
    template.updated_at = now
    append_company_event(
        session,
        company_id=template.company_id,
        type="TemplateStatusChanged",
        data={
            "template_id": str(template.id),
            "name": template.name,
            "language": template.language,
            "from": previous,
            "to": status.value,
            **({"reason": reason} if reason else {}),
        },
        now=now,
    )
    return True


def upsert_provider_template(
    session: Session, *, company_id: uuid.UUID, channel: str, data: dict[str, Any], now: datetime
) -> Template:
    """A template as the provider lists it (Graph's message_templates shape)."""
    name, language = str(data.get("name", "")), str(data.get("language", ""))
    if not name or not language:
        raise InvalidInput("a provider template without a name or language")
    components = data.get("components", [])
    status = PROVIDER_STATUS.get(str(data.get("status", "")).upper(), TemplateStatus.submitted)
    template = find_template(
        session, company_id=company_id, channel=channel, name=name, language=language
    )
    if template is None:
        template = Template(
            company_id=company_id,
            channel=channel,
            name=name,
            language=language,
            status=status.value,
            created_at=now,
            updated_at=now,
        )
        session.add(template)
    template.category = str(data.get("category", "")).upper()
    template.components = {"items": components if isinstance(components, list) else []}
    template.body = _components_body(components)
    template.external_id = str(data["id"]) if data.get("id") else template.external_id
    reason = data.get("rejected_reason")
    set_template_status(
        session,
        template=template,
        status=status,
        now=now,
        reason=str(reason) if reason and reason != "NONE" else None,
    )
    session.flush()
    return template


def check_sendable(
    template: Template | None,
    *,
    name: str,
    language: str,
    body_params: int,
    url_params: int,
    has_header_media: bool,
    has_header_text: bool,
) -> list[int]:
    """Refuse what Meta would refuse (132000, 132001, 132015, 132016), before we send it.
    Returns the positions of the URL buttons the URL parameters go to."""
    if template is None:
        raise TemplateNotSendable(
            f"template {name!r} ({language}) is unknown; sync templates or create it"
        )
    if template.status != TemplateStatus.approved.value:
        raise TemplateNotSendable(
            f"template {name!r} ({language}) is {template.status}, not approved"
        )
    items = template.components.get("items", [])
    expected = body_variable_count(_components_body(items) or template.body)
    if body_params != expected:
        raise TemplateNotSendable(
            f"template {name!r} takes {expected} body parameter(s), {body_params} given"
        )
    positions = url_button_positions(items)
    if url_params != len(positions):
        raise TemplateNotSendable(
            f"template {name!r} takes {len(positions)} URL button parameter(s), {url_params} given"
        )
    header = _header_format(items)
    if header in {"IMAGE", "VIDEO", "DOCUMENT"} and not has_header_media:
        raise TemplateNotSendable(f"template {name!r} needs a {header.lower()} header")
    if header == "TEXT" and BODY_VARIABLE.search(_header_text(items)) and not has_header_text:
        raise TemplateNotSendable(f"template {name!r} needs a header text parameter")
    return positions
