"""Job handlers of the channels: a person's messages and system notices to leads, and
template upkeep with Meta."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.channels import service
from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.crm.models import Channel
from shvya.db.phases import Call, Phases
from shvya.jobs.runner import JobContext
from shvya.jobs.service import PermanentJobError
from shvya.templates import service as templates


def send_notice(ctx: JobContext) -> Phases[dict[str, Any]]:
    """channel.notice: a message SHVYA itself owes the lead (an opt-out confirmation), sent
    once however often the job runs."""
    payload = ctx.job.payload
    notice = payload.get("notice")
    if notice != "opt_out_confirmation":
        raise PermanentJobError(f"unknown notice {notice!r}", reason="unknown_notice")
    try:
        lead_id = uuid.UUID(str(payload["lead_id"]))
        suppression_id = uuid.UUID(str(payload["suppression_id"]))
        channel = Channel(payload["channel"])
    except (KeyError, ValueError):
        raise PermanentJobError(
            f"the job's payload is not a notice's: {payload!r}", reason="bad_payload"
        ) from None
    result = yield from service.send_opt_out_confirmation(
        ctx.session,
        company_id=ctx.job.company_id,
        lead_id=lead_id,
        channel=channel,
        suppression_id=suppression_id,
        settings=ctx.settings,
        now=ctx.clock.now,
    )
    return result.model_dump(mode="json", exclude_none=True)


def send_person_message(ctx: JobContext) -> Phases[dict[str, Any]]:
    """agent.reply: a person's message to a lead, written `queued` when it was asked for
    (POST /leads/{id}/messages), sent once however often the job runs."""
    try:
        message_id = uuid.UUID(str(ctx.job.payload["message_id"]))
    except (KeyError, ValueError):
        raise PermanentJobError(
            f"the job's payload is not a message's: {ctx.job.payload!r}", reason="bad_payload"
        ) from None
    result = yield from service.send_queued_message(
        ctx.session,
        company_id=ctx.job.company_id,
        message_id=message_id,
        settings=ctx.settings,
        now=ctx.clock.now,
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
