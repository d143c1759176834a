"""Sequences: their steps, enrolments, and the scheduler's source of due steps
(docs/sequences.md). Services take the session and never commit (docs/architecture.md rule 2).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shvya.channels import service as channels
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, Stage
from shvya.db.queries import get_for_company, page_of
from shvya.errors import Conflict, InvalidInput, NotFound
from shvya.events.service import append_company_event, append_lead_event
from shvya.jobs.service import JobType, enqueue_prepared, prepare_job
from shvya.schemas import PageRequest
from shvya.sequences import limits
from shvya.sequences.models import (
    LIVE_STATUSES,
    Enrollment,
    EnrollmentStatus,
    Sequence,
    SequenceStep,
)
from shvya.sequences.schemas import (
    AfterOut,
    SequenceIn,
    SequenceOut,
    SequencePatchIn,
    StepIn,
    StepOut,
    TemplateRefOut,
    WindowOut,
)
from shvya.sequences.timing import StepTiming, due_at
from shvya.templates import service as templates
from shvya.templates.models import Template
from shvya.tenancy import service as tenancy


class SequenceNotFound(NotFound):
    code = "sequence_not_found"


class EnrollmentNotFound(NotFound):
    code = "enrollment_not_found"


class SequenceInactive(Conflict):
    code = "sequence_inactive"


# The template catalog's channel for a step's channel.
_TEMPLATE_CHANNEL = {"whatsapp": "wa_cloud", "wa_cloud": "wa_cloud", "email": "email"}


# --- sequences -------------------------------------------------------------------------------


def get_sequence(session: Session, *, company_id: uuid.UUID, sequence_id: uuid.UUID) -> Sequence:
    return get_for_company(
        session,
        Sequence,
        sequence_id,
        company_id=company_id,
        missing=SequenceNotFound,
        hint="; GET /sequences lists the company's sequences",
    )


def sequence_steps(session: Session, *, sequence_id: uuid.UUID) -> list[SequenceStep]:
    return list(
        session.scalars(
            select(SequenceStep)
            .where(SequenceStep.sequence_id == sequence_id)
            .order_by(SequenceStep.position)
        )
    )


def _step_template(
    session: Session, *, company_id: uuid.UUID, index: int, step: StepIn
) -> Template | None:
    if step.template is None:
        return None
    channel = _TEMPLATE_CHANNEL[step.channel]
    found = templates.find_template(
        session,
        company_id=company_id,
        channel=channel,
        name=step.template.name,
        language=step.template.language,
    )
    where = f"steps[{index}].template"
    if found is None:
        raise InvalidInput(
            f"{where}: no {channel} template {step.template.name!r} ({step.template.language}); "
            "GET /templates lists them",
            extra={"field": where},
        )
    if found.status != templates.TemplateStatus.approved.value:
        raise InvalidInput(
            f"{where}: template {found.name!r} ({found.language}) is {found.status}, not "
            "approved; only an approved template may be sent",
            extra={"field": where},
        )
    return found


def _write_steps(
    session: Session, sequence: Sequence, steps: list[StepIn], *, now: datetime
) -> None:
    for old in sequence_steps(session, sequence_id=sequence.id):
        session.delete(old)
    session.flush()
    for index, step in enumerate(steps):
        template = _step_template(session, company_id=sequence.company_id, index=index, step=step)
        after = step.after
        session.add(
            SequenceStep(
                company_id=sequence.company_id,
                sequence_id=sequence.id,
                position=index,
                channel=step.channel,
                after=after.model_dump(),
                delay_seconds=((after.days * 24 + after.hours) * 60 + after.minutes) * 60,
                window=None if step.window is None else step.window.model_dump(by_alias=True),
                business_days=step.business_days,
                subject=step.subject,
                body=step.text or "",
                template_id=template.id if template is not None else None,
                template=None if step.template is None else step.template.model_dump(),
                ai_generated=step.ai is not None,
                ai_instruction=step.ai,
                created_at=now,
            )
        )
    channels_used = {s.channel for s in steps}
    sequence.channel = channels_used.pop() if len(channels_used) == 1 else "mixed"
    session.flush()


def _name_taken(
    session: Session, *, company_id: uuid.UUID, name: str, but: uuid.UUID | None
) -> None:
    taken = session.scalar(
        select(Sequence.id).where(Sequence.company_id == company_id, Sequence.name == name)
    )
    if taken is not None and taken != but:
        raise Conflict(f"a sequence named {name!r} exists already: choose another name")


STAGE_STOP = "stage:"


def _stop_on(session: Session, *, company_id: uuid.UUID, stop_on: Iterable[str]) -> list[str]:
    """The stop conditions as stored: each "stage:<name or id>" resolved to "stage:<id>" of
    one of the company's stages (a rename does not lose it), duplicates dropped."""
    stored = []
    for item in stop_on:
        if item.startswith(STAGE_STOP):
            ref = item.removeprefix(STAGE_STOP)
            try:
                stage = crm.resolve_stage(session, company_id=company_id, ref=ref, pipeline_id=None)
            except NotFound:
                raise InvalidInput(
                    f"stop_on: stage {ref!r} not found; GET /pipelines lists the stages",
                    extra={"field": "stop_on"},
                ) from None
            item = f"{STAGE_STOP}{stage.id}"
        stored.append(item)
    return list(dict.fromkeys(stored))


def create_sequence(
    session: Session, *, company_id: uuid.UUID, data: SequenceIn, actor: str, now: datetime
) -> Sequence:
    _name_taken(session, company_id=company_id, name=data.name, but=None)
    stop_on = _stop_on(session, company_id=company_id, stop_on=data.stop_on)
    sequence = Sequence(
        company_id=company_id,
        name=data.name,
        channel="",
        is_active=True,
        stop_on=stop_on,
        stop_on_reply="reply" in stop_on,
        created_at=now,
        updated_at=now,
    )
    session.add(sequence)
    session.flush()
    _write_steps(session, sequence, data.steps, now=now)
    append_company_event(
        session,
        company_id=company_id,
        type="SequenceCreated",
        data={"sequence_id": str(sequence.id), "name": sequence.name, "steps": len(data.steps)},
        actor=actor,
        now=now,
    )
    return sequence


def update_sequence(
    session: Session,
    *,
    company_id: uuid.UUID,
    sequence_id: uuid.UUID,
    data: SequencePatchIn,
    actor: str,
    now: datetime,
) -> Sequence:
    sequence = get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    changed = sorted(data.model_fields_set)
    if data.name is not None:
        _name_taken(session, company_id=company_id, name=data.name, but=sequence.id)
        sequence.name = data.name
    if data.stop_on is not None:
        sequence.stop_on = _stop_on(session, company_id=company_id, stop_on=data.stop_on)
        sequence.stop_on_reply = "reply" in sequence.stop_on
    if data.steps is not None:
        _write_steps(session, sequence, data.steps, now=now)
    if data.active is not None and data.active != sequence.is_active:
        if data.active:
            sequence.is_active = True
        else:
            _deactivate(session, sequence, actor=actor, now=now)
    sequence.updated_at = now
    append_company_event(
        session,
        company_id=company_id,
        type="SequenceUpdated",
        data={"sequence_id": str(sequence.id), "changed": changed},
        actor=actor,
        now=now,
    )
    return sequence


def _deactivate(session: Session, sequence: Sequence, *, actor: str, now: datetime) -> None:
    sequence.is_active = False
    live = session.scalars(
        select(Enrollment).where(
            Enrollment.sequence_id == sequence.id, Enrollment.status.in_(LIVE_STATUSES)
        )
    ).all()
    for enrollment in live:
        stop(session, enrollment, reason="sequence_deactivated", actor=actor, now=now)


def deactivate_sequence(
    session: Session, *, company_id: uuid.UUID, sequence_id: uuid.UUID, actor: str, now: datetime
) -> Sequence:
    sequence = get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    if sequence.is_active:
        _deactivate(session, sequence, actor=actor, now=now)
        sequence.updated_at = now
        append_company_event(
            session,
            company_id=company_id,
            type="SequenceDeactivated",
            data={"sequence_id": str(sequence.id)},
            actor=actor,
            now=now,
        )
    return sequence


def list_sequences(
    session: Session, *, company_id: uuid.UUID, page: PageRequest
) -> tuple[list[SequenceOut], int]:
    rows, total = page_of(
        session,
        Sequence,
        Sequence.company_id == company_id,
        order_by=(Sequence.created_at, Sequence.id),
        page=page,
    )
    return [present_sequence(session, row) for row in rows], total


def present_step(step: SequenceStep) -> StepOut:
    return StepOut(
        position=step.position,
        channel=step.channel,
        after=AfterOut.model_validate(step.after or {}),
        window=None if step.window is None else WindowOut.model_validate(step.window),
        business_days=step.business_days,
        subject=step.subject,
        text=None if step.template is not None or step.ai_generated else step.body,
        template=None if step.template is None else TemplateRefOut.model_validate(step.template),
        ai=step.ai_instruction,
    )


def present_sequence(session: Session, sequence: Sequence) -> SequenceOut:
    return SequenceOut(
        id=sequence.id,
        name=sequence.name,
        active=sequence.is_active,
        stop_on=list(sequence.stop_on or []),
        steps=[present_step(s) for s in sequence_steps(session, sequence_id=sequence.id)],
        created_at=sequence.created_at,
        updated_at=sequence.updated_at,
    )


# --- enrolments ------------------------------------------------------------------------------


def step_at(session: Session, *, sequence_id: uuid.UUID, position: int) -> SequenceStep | None:
    return session.scalars(
        select(SequenceStep).where(
            SequenceStep.sequence_id == sequence_id, SequenceStep.position == position
        )
    ).first()


def step_timing(step: SequenceStep) -> StepTiming:
    return StepTiming.of(step.after, step.window, step.business_days)


def schedule(
    session: Session,
    *,
    step: SequenceStep,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    base: datetime,
) -> datetime | None:
    """When `step` is due for the lead: `base` plus its `after`, in its next opening in the
    lead's zone (timing.due_at). None: its window never opens."""
    timing = step_timing(step)
    if timing.window is None and not timing.business_days and not timing.days:
        return due_at(timing, base=base, zone_name="UTC")  # no local time involved
    zone = channels.lead_time_zone(session, company_id=company_id, lead_id=lead_id)
    return due_at(timing, base=base, zone_name=zone)


def _event(
    session: Session,
    enrollment: Enrollment,
    type: str,
    data: dict[str, Any],
    *,
    actor: str,
    now: datetime,
) -> None:
    append_lead_event(
        session,
        company_id=enrollment.company_id,
        lead_id=enrollment.lead_id,
        type=type,
        data={
            "sequence_id": str(enrollment.sequence_id),
            "enrollment_id": str(enrollment.id),
            **data,
        },
        actor=actor,
        now=now,
    )


def stop(
    session: Session, enrollment: Enrollment, *, reason: str, actor: str, now: datetime
) -> None:
    """The enrolment ends here, with why (a SequenceStopped event)."""
    enrollment.status = EnrollmentStatus.stopped.value
    enrollment.stop_reason = reason[:64]
    enrollment.next_run_at = None
    enrollment.queued_at = None
    enrollment.updated_at = now
    _event(
        session,
        enrollment,
        "SequenceStopped",
        {"reason": reason, "step": enrollment.position},
        actor=actor,
        now=now,
    )


def leads_of(session: Session, *, company_id: uuid.UUID, lead_ids: list[uuid.UUID]) -> list[Lead]:
    wanted = list(dict.fromkeys(lead_ids))
    leads = list(
        session.scalars(select(Lead).where(Lead.company_id == company_id, Lead.id.in_(wanted)))
    )
    missing = sorted(set(wanted) - {lead.id for lead in leads}, key=str)
    if missing:
        raise crm.LeadNotFound(
            f"leads not found: {', '.join(str(m) for m in missing)}; nothing was enrolled",
            extra={"missing": [str(m) for m in missing]},
        )
    order = {lead_id: i for i, lead_id in enumerate(wanted)}
    return sorted(leads, key=lambda lead: order[lead.id])


def enroll_leads(
    session: Session,
    *,
    sequence: Sequence,
    leads: Iterable[Lead],
    actor: str,
    now: datetime,
) -> tuple[int, int]:
    """Enrol the leads not live in the sequence already: (enrolled, already)."""
    if not sequence.is_active:
        raise SequenceInactive(
            f"sequence {sequence.name!r} is deactivated: PATCH it with active true to enrol leads"
        )
    leads = list(leads)
    live = set(
        session.scalars(
            select(Enrollment.lead_id).where(
                Enrollment.sequence_id == sequence.id,
                Enrollment.lead_id.in_([lead.id for lead in leads]),
                Enrollment.status.in_(LIVE_STATUSES),
            )
        )
    )
    first = step_at(session, sequence_id=sequence.id, position=0)
    assert first is not None  # a sequence has at least one step (schemas.SequenceIn)
    fresh = [lead for lead in leads if lead.id not in live]
    rows = []
    for lead in fresh:
        rows.append(
            Enrollment(
                company_id=sequence.company_id,
                sequence_id=sequence.id,
                lead_id=lead.id,
                stage_id=lead.stage_id,
                position=0,
                status=EnrollmentStatus.active.value,
                next_run_at=schedule(
                    session, step=first, company_id=lead.company_id, lead_id=lead.id, base=now
                ),
                replies_after=now,
                enrolled_at=now,
                updated_at=now,
            )
        )
    try:
        with session.begin_nested():
            session.add_all(rows)
            session.flush()
    except IntegrityError:
        # Another request enrolled one of these leads between our read and our insert (the
        # partial unique index decided): nothing of this one is kept.
        raise Conflict(
            "some of these leads were enrolled by another request at the same moment: "
            "send the request again (it answers them as already enrolled)"
        ) from None
    for row in rows:
        _event(session, row, "SequenceEnrolled", {"name": sequence.name}, actor=actor, now=now)
    return len(rows), len(leads) - len(rows)


def enroll(
    session: Session,
    *,
    company_id: uuid.UUID,
    sequence_id: uuid.UUID,
    lead_ids: list[uuid.UUID] | None,
    stage: str | None,
    actor: str,
    now: datetime,
) -> tuple[int, int]:
    sequence = get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    if lead_ids is not None:
        leads = leads_of(session, company_id=company_id, lead_ids=lead_ids)
    else:
        assert stage is not None
        found = crm.resolve_stage(session, company_id=company_id, ref=stage, pipeline_id=None)
        leads = list(
            session.scalars(
                select(Lead)
                .where(Lead.company_id == company_id, Lead.stage_id == found.id)
                .order_by(Lead.created_at, Lead.id)
            )
        )
    return enroll_leads(session, sequence=sequence, leads=leads, actor=actor, now=now)


def list_enrollments(
    session: Session, *, company_id: uuid.UUID, sequence_id: uuid.UUID, page: PageRequest
) -> tuple[list[Enrollment], int]:
    get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    rows, total = page_of(
        session,
        Enrollment,
        Enrollment.company_id == company_id,
        Enrollment.sequence_id == sequence_id,
        order_by=(Enrollment.enrolled_at, Enrollment.id),
        page=page,
    )
    return list(rows), total


def unenroll(
    session: Session,
    *,
    company_id: uuid.UUID,
    sequence_id: uuid.UUID,
    lead_id: uuid.UUID,
    actor: str,
    now: datetime,
) -> Enrollment:
    get_sequence(session, company_id=company_id, sequence_id=sequence_id)
    enrollment = session.scalars(
        select(Enrollment)
        .where(
            Enrollment.company_id == company_id,
            Enrollment.sequence_id == sequence_id,
            Enrollment.lead_id == lead_id,
        )
        .order_by(Enrollment.enrolled_at.desc(), Enrollment.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if enrollment is None:
        raise EnrollmentNotFound(
            f"lead {lead_id} is not enrolled in sequence {sequence_id}; "
            f"GET /sequences/{sequence_id}/enrollments lists who is"
        )
    if enrollment.status in LIVE_STATUSES:
        stop(session, enrollment, reason="unenrolled", actor=actor, now=now)
    return enrollment


# --- auto-enrolment --------------------------------------------------------------------------


def _auto_enroll(session: Session, lead: Lead, stage: Stage, actor: str, now: datetime) -> None:
    """A lead entering a stage that names a sequence is enrolled in it, in the transaction of
    the move (crm.move_stage). An inactive sequence enrols no one."""
    if stage.auto_enroll_sequence_id is None:
        return
    sequence = session.get(Sequence, stage.auto_enroll_sequence_id)
    if sequence is None or sequence.company_id != lead.company_id or not sequence.is_active:
        return
    enroll_leads(session, sequence=sequence, leads=[lead], actor=actor, now=now)


crm.on_stage_entered(_auto_enroll)


# --- conditions a step is checked against when it runs ---------------------------------------

_WHATSAPP = (Channel.wa_cloud, Channel.wa_web)


def step_channel(session: Session, lead: Lead, step: SequenceStep) -> Channel:
    """The channel a step goes on for this lead: `whatsapp` is the lead's WhatsApp contact,
    Cloud before Web."""
    if step.channel != "whatsapp":
        return Channel(step.channel)
    contacts = {
        c.channel for c in crm.lead_contacts(session, company_id=lead.company_id, lead_id=lead.id)
    }
    return next((c for c in _WHATSAPP if c.value in contacts), Channel.wa_cloud)


def _unsubscribed(session: Session, lead: Lead) -> str | None:
    for contact in crm.lead_contacts(session, company_id=lead.company_id, lead_id=lead.id):
        if crm.is_suppressed(
            session, company_id=lead.company_id, channel=contact.channel, address=contact.value
        ):
            return "unsubscribed"
        if contact.marketing_consent == channels.MARKETING_STOP:
            return "opted_out"
    return None


def standing_stop_reason(
    session: Session, *, stop_on: Iterable[str], lead: Lead, enrolled_stage_id: uuid.UUID | None
) -> str | None:
    """Why an enrolment ends now, apart from a reply: a person took over (`handoff`), the lead
    reached a stage the sequence names (`stage_reached`) or left its stage (`stage_change`),
    an address is suppressed or marketing stopped (`unsubscribed`, `opted_out`); each only
    when `stop_on` names it."""
    wanted = set(stop_on)
    if "handoff" in wanted and lead.ai_paused:
        return "handoff"
    if f"{STAGE_STOP}{lead.stage_id}" in wanted:
        return "stage_reached"
    if (
        "stage_change" in wanted
        and enrolled_stage_id is not None
        and lead.stage_id != enrolled_stage_id
    ):
        return "stage_change"
    if "unsubscribe" in wanted:
        return _unsubscribed(session, lead)
    return None


@dataclass(frozen=True)
class StepLimits:
    """The sending limits a step of this lead's on this channel counts against."""

    applied: limits.SendingLimits
    account_key: str  # the sending account: channel and account id ("-" for none)
    domain: str | None  # the recipient domain the per-domain limit counts, when it applies
    hold: limits.LimitHold | None  # over a limit now, counting the sends already made


def step_limits(
    session: Session, channel: Channel, lead: Lead, *, now: datetime
) -> StepLimits | None:
    """The company's own limits for the channel (else the defaults) and whether the sends
    already made hold the step now (docs/sequences-ooo-and-limits.md). None when the lead has
    no contact on the channel (the router refuses the step: no_contact)."""
    contact = crm.lead_contact(
        session, company_id=lead.company_id, lead_id=lead.id, channel=channel.value
    )
    if contact is None:
        return None
    company_settings = tenancy.get_company(session, company_id=lead.company_id).settings
    account = (
        tenancy.company_channel_account(session, company_id=lead.company_id, channel=channel.value)
        if channel in (Channel.wa_cloud, Channel.email, Channel.sms)
        else None
    )
    applied = limits.limits_for(channel.value, company_settings)
    domain = limits.recipient_domain(contact.value) if channel is Channel.email else None
    return StepLimits(
        applied=applied,
        account_key=f"{channel.value}:{account.id if account is not None else '-'}",
        domain=domain if domain not in applied.exempt_domains else None,
        hold=limits.limit_verdict(
            session,
            company_id=lead.company_id,
            channel_account_id=account.id if account is not None else None,
            channel=channel.value,
            recipient=contact.value,
            now=now,
            limits=applied,
        ),
    )


# --- the scheduler's source ------------------------------------------------------------------


def step_job_type(channel: str) -> str:
    return JobType.email_sequence.value if channel == "email" else JobType.sequence_step.value


def step_job_key(enrollment_id: uuid.UUID, position: int) -> str:
    return f"seq:{enrollment_id}:{position}"


def _due_steps(session: Session, *, now: datetime, limit: int) -> int:
    """Enqueue the step jobs of at most `limit` enrolments due at `now`, oldest due first, and
    take them out of "due" (next_run_at NULL, queued_at set) in the same transaction. On
    PostgreSQL the rows are claimed FOR UPDATE SKIP LOCKED, so two schedulers share the work;
    the job's idempotency key (seq:<enrolment>:<position>) makes a double run harmless. A
    batch is four statements whatever its size: the claim, the steps, one UPDATE and one
    multi-row INSERT of the jobs (bench/scheduler.py measures it)."""
    statement = (
        select(
            Enrollment.id,
            Enrollment.company_id,
            Enrollment.lead_id,
            Enrollment.sequence_id,
            Enrollment.position,
        )
        .where(
            Enrollment.next_run_at.is_not(None),
            Enrollment.next_run_at <= now,
            Enrollment.status.in_(LIVE_STATUSES),
        )
        .order_by(Enrollment.next_run_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    rows = session.execute(statement).all()
    if not rows:
        return 0
    channels_of = {
        (sequence_id, position): channel
        for sequence_id, position, channel in session.execute(
            select(SequenceStep.sequence_id, SequenceStep.position, SequenceStep.channel).where(
                SequenceStep.sequence_id.in_({r.sequence_id for r in rows})
            )
        )
    }
    queued = [r for r in rows if (r.sequence_id, r.position) in channels_of]
    if queued:
        session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_([r.id for r in queued]))
            .values(next_run_at=None, queued_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        enqueue_prepared(
            session,
            [
                prepare_job(
                    session,
                    step_job_type(channels_of[(r.sequence_id, r.position)]),
                    {"enrollment_id": str(r.id), "position": r.position},
                    company_id=r.company_id,
                    lead_id=r.lead_id,
                    idempotency_key=step_job_key(r.id, r.position),
                    now=now,
                    run_at=now,
                )
                for r in queued
            ],
        )
    finished = [r.id for r in rows if (r.sequence_id, r.position) not in channels_of]
    # The steps were replaced by fewer: nothing is left to send (rare; one row at a time).
    for enrollment in session.scalars(select(Enrollment).where(Enrollment.id.in_(finished))):
        enrollment.next_run_at = None
        enrollment.updated_at = now
        complete(session, enrollment, now=now)
    session.flush()
    return len(rows)


class _DueSteps:
    """The scheduler's due source for sequence steps (src/shvya/sequences/scheduler.py)."""

    name = "sequence_steps"

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int:
        return _due_steps(session, now=now, limit=limit)


due_steps = _DueSteps()


def complete(session: Session, enrollment: Enrollment, *, now: datetime) -> None:
    enrollment.status = EnrollmentStatus.completed.value
    enrollment.next_run_at = None
    enrollment.queued_at = None
    enrollment.hold_reason = None
    enrollment.updated_at = now
    _event(
        session,
        enrollment,
        "SequenceCompleted",
        {"steps": enrollment.position},
        actor="system",
        now=now,
    )


def advance(
    session: Session,
    enrollment: Enrollment,
    *,
    sent_at: datetime,
    message_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """The step at the enrolment's position went: move on to the next one (due from this
    send), or complete the enrolment. Called in the send's record phase."""
    sent_position = enrollment.position
    enrollment.position += 1
    enrollment.last_step_at = sent_at
    enrollment.queued_at = None
    enrollment.hold_reason = None
    enrollment.updated_at = now
    _event(
        session,
        enrollment,
        "SequenceStepSent",
        {"step": sent_position, "message_id": str(message_id) if message_id else None},
        actor="system",
        now=now,
    )
    if enrollment.status not in LIVE_STATUSES:
        return  # unenrolled while the step was being sent: it stays stopped
    following = step_at(session, sequence_id=enrollment.sequence_id, position=enrollment.position)
    if following is None:
        complete(session, enrollment, now=now)
        return
    enrollment.next_run_at = schedule(
        session,
        step=following,
        company_id=enrollment.company_id,
        lead_id=enrollment.lead_id,
        base=sent_at,
    )
    if enrollment.next_run_at is None:
        stop(session, enrollment, reason="window_never_opens", actor="system", now=now)
