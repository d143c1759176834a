"""Job handlers of the channels: system notices to leads, and template upkeep with Meta."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.channels import service
from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.channels.schemas import OutboundContent
from shvya.crm.models import Channel
from shvya.db.phases import Call, Phases
from shvya.jobs.runner import JobContext
from shvya.jobs.service import PermanentJobError
from shvya.templates import service as templates
from shvya.tenancy import service as tenancy

DEFAULT_OPT_OUT_CONFIRMATION = (
    "You're unsubscribed and won't get more messages from us. Reply START to subscribe again."
)


def send_notice(ctx: JobContext) -> Phases[dict[str, Any]]:
    """channel.notice: a message SHVYA itself owes the lead (an opt-out confirmation)."""
    payload = ctx.job.payload
    company = tenancy.get_company(ctx.session, company_id=ctx.job.company_id)
    notice = payload.get("notice")
    if notice != "opt_out_confirmation":
        raise PermanentJobError(f"unknown notice {notice!r}", reason="unknown_notice")
    text = str(company.settings.get("opt_out_confirmation") or DEFAULT_OPT_OUT_CONFIRMATION)
    result = yield from service.send_message(
        ctx.session,
        company_id=company.id,
        lead_id=uuid.UUID(payload["lead_id"]),
        channel=Channel(payload["channel"]),
        content=OutboundContent(text=text, is_opt_out_confirmation=True),
        send_key=f"optout:{payload['suppression_id']}",
        settings=ctx.settings,
        now=ctx.clock.now,
        meta={"purpose": "opt_out_confirmation"},
    )
    return result.model_dump(mode="json", exclude_none=True)


def _provider_failure(exc: ChannelSendError) -> Exception:
    if exc.kind is FailureKind.retry:
        return exc
    return PermanentJobError(
        f"Meta refused: {exc.code}: {exc.message}", reason=f"provider_{exc.code}"
    )


def sync_templates(ctx: JobContext) -> Phases[dict[str, Any]]:
    """templates.sync: the account's templates and their statuses, from the Graph API."""
    try:
        count, approved = yield from service.sync_whatsapp_templates(
            ctx.session, company_id=ctx.job.company_id, settings=ctx.settings, now=ctx.now
        )
    except service.ChannelNotConnected as exc:
        raise PermanentJobError(exc.message, reason=exc.code) from None
    except ChannelSendError as exc:
        raise _provider_failure(exc) from None
    return {"templates": count, "approved": approved}


def submit_template(ctx: JobContext) -> Phases[dict[str, Any]]:
    """templates.submit: a draft goes to Meta for approval."""
    template = templates.get_template(
        ctx.session,
        company_id=ctx.job.company_id,
        template_id=uuid.UUID(ctx.job.payload["template_id"]),
    )
    if template.status != templates.TemplateStatus.draft.value:
        return {"skipped": f"template is {template.status}, not a draft"}
    try:
        adapter, waba_id = service.whatsapp_admin_adapter(
            ctx.session, company_id=ctx.job.company_id, settings=ctx.settings
        )
    except service.ChannelNotConnected as exc:
        raise PermanentJobError(exc.message, reason=exc.code) from None
    definition = templates.provider_definition(template)
    try:
        answer: dict[str, Any] = yield Call(
            "whatsapp:submit_template", lambda: adapter.submit_template(waba_id, definition)
        )
    except ChannelSendError as exc:
        raise _provider_failure(exc) from None
    status = templates.PROVIDER_STATUS.get(
        str(answer.get("status", "PENDING")).upper(), templates.TemplateStatus.submitted
    )
    templates.set_template_status(
        ctx.session,
        template=template,
        status=status,
        now=ctx.now,
        external_id=str(answer.get("id") or "") or None,
    )
    return {"template_id": str(template.id), "status": status.value}
