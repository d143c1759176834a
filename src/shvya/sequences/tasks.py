"""sequence.step (WhatsApp, SMS, sandbox) and email.sequence (email): one step of one
enrolment, sent once (docs/sequences.md, "Running a step").

In order, with the enrolment's row locked: the stop conditions (checked now, not only when the
step was scheduled), the step's window, the sending limits, the router's preflight; then the
content (template, fixed text, or the AI's draft) and the send. The enrolment advances in the
send's record phase, so a step that went is never sent again, and a step that did not go
never counts as sent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.ai import followups
from shvya.ai.runs import Run, payload_id
from shvya.channels import service as channels
from shvya.channels.policies import Allow, Defer, SendKind
from shvya.channels.schemas import OutboundContent, TemplateSend
from shvya.conversations import service as conversations
from shvya.crm import service as crm
from shvya.crm.models import Lead
from shvya.db.phases import Phases
from shvya.errors import InvalidInput
from shvya.jobs.runner import JobContext
from shvya.jobs.service import DeferJob, PermanentJobError
from shvya.sequences import ooo, service
from shvya.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStep
from shvya.sequences.timing import next_opening
from shvya.templates import rendering
from shvya.tenancy import service as tenancy

# When an out-of-office reply states no return date (docs/sequences.md).
OOO_DEFAULT_DAYS = 14
NEEDS_PERSON = "needs_person"


def _lock(ctx: JobContext, enrollment_id: uuid.UUID) -> Enrollment | None:
    return ctx.session.scalars(
        select(Enrollment)
        .where(Enrollment.id == enrollment_id, Enrollment.company_id == ctx.job.company_id)
        .with_for_update()
    ).first()


def _out_of_office(
    session: Session, enrollment: Enrollment, lead: Lead, *, now: datetime
) -> datetime | None:
    """The return date an out-of-office reply states (or 14 days on), when every reply since
    the enrolment's cut-off is one (by its words, or by the mail's Auto-Submitted header);
    None when a real reply is among them."""
    replies = [
        m
        for m in conversations.recent_messages(
            session, company_id=lead.company_id, lead_id=lead.id, limit=20
        )
        if m.direction == "in" and m.created_at > enrollment.replies_after
    ]
    if not replies:
        return None
    zone = channels.lead_time_zone(session, company_id=lead.company_id, lead_id=lead.id)
    until: datetime | None = None
    for message in replies:
        found = ooo.detect_out_of_office(
            message.text, subject=message.meta.get("subject"), now=now, zone=zone
        )
        if found is not None:
            back = found.until
        elif message.meta.get("auto_submitted"):
            # A mail a program sent (docs/email-inbound.md) whose words state no return date.
            back = now + ooo.DEFAULT_PAUSE
        else:
            return None
        until = max(until or back, back)
    return until


def _stop_reason(
    session: Session, enrollment: Enrollment, sequence: Sequence, lead: Lead, *, now: datetime
) -> str | None:
    """Why the enrolment ends now, or None. An out-of-office reply pauses it instead (written
    here: status paused, the job deferred to the return date)."""
    stop_on = set(sequence.stop_on or [])
    standing = service.standing_stop_reason(
        session, stop_on=stop_on, lead=lead, enrolled_stage_id=enrollment.stage_id
    )
    if standing is not None:
        return standing
    if (
        "reply" in stop_on
        and lead.last_inbound_at is not None
        and lead.last_inbound_at > enrollment.replies_after
    ):
        until = _out_of_office(session, enrollment, lead, now=now)
        if until is None:
            return "reply"
        enrollment.status = EnrollmentStatus.paused.value
        enrollment.replies_after = lead.last_inbound_at
        enrollment.hold_reason = f"out_of_office until {until.isoformat()}"
        enrollment.updated_at = now
        raise DeferJob(until, "out_of_office", keep_work=True)
    return None


def _hold(enrollment: Enrollment, until: datetime, reason: str, *, now: datetime) -> DeferJob:
    """The step waits (its window, a limit, the router): the reason shows on the enrolment."""
    enrollment.hold_reason = f"{reason} until {until.isoformat()}"[:200]
    enrollment.updated_at = now
    return DeferJob(until, reason, keep_work=True)


class _StepCannotGo(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _content(
    ctx: JobContext,
    step: SequenceStep,
    sequence: Sequence,
    lead: Lead,
    verdict: Allow,
) -> Phases[OutboundContent | None]:
    subject = step.subject or (sequence.name if step.channel == "email" else None)
    if step.template is not None and step.channel == "email":
        # An email template is rendered here for the lead (Jinja2, docs/email-domains.md 3);
        # the step's own subject, when it has one, goes before the template's.
        assert step.template_id is not None  # written with the template it names
        rendered = rendering.render_email_template(
            ctx.session,
            company_id=lead.company_id,
            template_id=step.template_id,
            lead_id=lead.id,
        )
        return OutboundContent(
            text=rendered.text, html=rendered.html, subject=step.subject or rendered.subject
        )
    if step.template is not None:
        return OutboundContent(
            template=TemplateSend(
                name=step.template["name"],
                language=step.template.get("language") or "en",
                body_params=list(step.template.get("params") or []),
            ),
        )
    if not step.ai_generated:
        return OutboundContent(text=step.body, subject=subject)
    company = tenancy.get_company(ctx.session, company_id=lead.company_id)
    if not company.ai_enabled:
        raise _StepCannotGo("ai_disabled", "the AI is switched off for this company")
    if verdict.template is not None:
        # Outside WhatsApp's window only the re-engagement template may go: no model writes.
        return OutboundContent(template=verdict.template)
    drafted = yield from followups.draft_followup(
        ctx, Run(), company=company, lead=lead, instruction=step.ai_instruction
    )
    if drafted.text is None:
        return None
    return OutboundContent(text=drafted.text, subject=subject)


def run_step(ctx: JobContext) -> Phases[dict[str, Any]]:
    session, now = ctx.session, ctx.now
    enrollment_id = payload_id(ctx.job.payload, "enrollment_id")
    position = ctx.job.payload.get("position")
    if not isinstance(position, int):
        raise PermanentJobError(
            f"the job's payload has no step position: {ctx.job.payload!r}", reason="bad_payload"
        )
    enrollment = _lock(ctx, enrollment_id)
    if enrollment is None:
        return {"outcome": "skipped", "reason": "enrollment_gone"}
    if enrollment.position != position or enrollment.status not in (
        EnrollmentStatus.active.value,
        EnrollmentStatus.paused.value,
    ):
        # Sent already (a rerun), or the enrolment ended while the job waited.
        return {
            "outcome": "skipped",
            "reason": f"enrollment is {enrollment.status} at step {enrollment.position}",
        }
    if (
        enrollment.status == EnrollmentStatus.paused.value
        and enrollment.hold_reason == NEEDS_PERSON
    ):
        return {"outcome": "skipped", "reason": NEEDS_PERSON}
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    step = service.step_at(session, sequence_id=sequence.id, position=position)
    if step is None:
        service.complete(session, enrollment, now=now)
        return {"outcome": "completed"}
    if not sequence.is_active:
        service.stop(session, enrollment, reason="sequence_deactivated", actor="system", now=now)
        return {"outcome": "stopped", "reason": "sequence_deactivated"}
    lead = crm.get_lead(session, company_id=enrollment.company_id, lead_id=enrollment.lead_id)
    reason = _stop_reason(session, enrollment, sequence, lead, now=now)
    if reason is not None:
        service.stop(session, enrollment, reason=reason, actor="system", now=now)
        return {"outcome": "stopped", "reason": reason}
    enrollment.status = EnrollmentStatus.active.value  # back from an out-of-office pause
    zone = channels.lead_time_zone(session, company_id=lead.company_id, lead_id=lead.id)
    opening = next_opening(service.step_timing(step), now, zone)
    if opening is None:
        service.stop(session, enrollment, reason="window_never_opens", actor="system", now=now)
        return {"outcome": "stopped", "reason": "window_never_opens"}
    if opening > now:
        # Outside the step's window at run time: it waits for the next opening, and the later
        # steps, due from this one's send, shift with it.
        raise _hold(enrollment, opening, "window", now=now)
    channel = service.step_channel(session, lead, step)
    limited = service.step_limits(session, channel, lead, now=now)
    if limited is not None and limited.hold is not None:
        raise _hold(enrollment, limited.hold.until, limited.hold.reason, now=now)
    verdict = channels.preflight(
        session,
        company_id=lead.company_id,
        lead_id=lead.id,
        channel=channel,
        kind=SendKind.sequence_step,
        settings=ctx.settings,
        now=now,
    )
    if isinstance(verdict, Defer):
        raise _hold(enrollment, verdict.until, verdict.reason, now=now)
    if not isinstance(verdict, Allow):
        service.stop(session, enrollment, reason=verdict.reason, actor="system", now=now)
        return {"outcome": "stopped", "reason": verdict.reason, "detail": verdict.detail}
    try:
        content = yield from _content(ctx, step, sequence, lead, verdict)
    except (InvalidInput, _StepCannotGo) as exc:
        # The lead lacks a field the email template uses, or the AI is off: no retry helps.
        service.stop(session, enrollment, reason=exc.code, actor="system", now=now)
        return {"outcome": "stopped", "reason": exc.code, "detail": exc.message}
    # What the model took its time over: the enrolment as it is now.
    session.refresh(enrollment, with_for_update=True)
    if enrollment.position != position or enrollment.status != EnrollmentStatus.active.value:
        return {"outcome": "skipped", "reason": f"enrollment is {enrollment.status}"}
    if step.ai_generated:
        # The model took its time: the lead may have written, or a person taken over.
        crm.lock_lead(session, lead)
        reason = _stop_reason(session, enrollment, sequence, lead, now=ctx.clock.now())
        if reason is not None:
            service.stop(session, enrollment, reason=reason, actor="system", now=ctx.clock.now())
            return {"outcome": "stopped", "reason": reason}
    if content is None:
        # Every draft broke a rule: nothing goes, a person decides.
        enrollment.status = EnrollmentStatus.paused.value
        enrollment.hold_reason = NEEDS_PERSON
        enrollment.updated_at = now
        crm.set_ai_paused(
            session,
            lead=lead,
            paused=True,
            reason=crm.SEQUENCE_DRAFT_REFUSED_REASON,
            actor="ai",
            now=now,
        )
        return {"outcome": "paused", "reason": NEEDS_PERSON}
    send_key = service.step_job_key(enrollment.id, position)
    try:
        sent = yield from channels.send_message(
            session,
            company_id=lead.company_id,
            lead_id=lead.id,
            channel=channel,
            content=content,
            kind=SendKind.sequence_step,
            send_key=send_key,
            settings=ctx.settings,
            now=ctx.clock.now,
            actor="system",
            meta={
                "purpose": "sequence_step",
                "sequence_id": str(sequence.id),
                "enrollment_id": str(enrollment.id),
                "step": position,
            },
        )
    except PermanentJobError as exc:
        session.refresh(enrollment, with_for_update=True)
        if enrollment.status in (EnrollmentStatus.active.value, EnrollmentStatus.paused.value):
            service.stop(
                session,
                enrollment,
                reason=exc.reason or "refused",
                actor="system",
                now=ctx.clock.now(),
            )
        raise PermanentJobError(str(exc), reason=exc.reason, keep_work=True) from exc
    # The record phase: the enrolment moves on with the send that went.
    session.refresh(enrollment, with_for_update=True)
    sent_at = ctx.clock.now()
    if enrollment.position == position:
        service.advance(
            session, enrollment, sent_at=sent_at, message_id=sent.message_id, now=sent_at
        )
    return {
        "outcome": sent.outcome.value,
        "message_id": str(sent.message_id),
        "step": position,
        "status": enrollment.status,
    }


# The job types: the same run, told apart by the queue for its lanes and logs.
sequence_step = run_step
email_sequence = run_step
