"""Automatic bump-ups: the scheduler's source of `followup.bumpup` jobs (docs/scheduler.md).

A lead is due a bump-up when the last message is ours (the lead wrote to us before, and we
answered after), it has been silent for its stage's idle time since our last message, it has
had fewer than the stage's maximum bump-ups since it last wrote, the AI is on for it and its
company, and it can be reached on a bump-up channel (WhatsApp or the sandbox: never email,
docs/quiet-hours.md) at an address that is not suppressed and did not stop marketing. The
`followup.bumpup` handler (shvya.ai.followups) and the router check all of it again when the
job runs; this source only keeps the jobs it makes to the ones that should go.

Cost: the source reads only leads whose `next_bumpup_at` has come (a partial index over leads
that have one and whose AI is not paused), so a tick's work follows the number of due leads,
not of all leads. Every lead it reads leaves that set in the same transaction: its bump-up is
enqueued (and the time cleared), or its exact due time is written, or it is cleared because
none is due until we send again (crm.service.touch_last_outbound sets it then).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from shvya.ai.followups import BUMPUP_CHANNELS
from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.crm.models import (
    DEFAULT_BUMPUP_IDLE_MINUTES,
    DEFAULT_BUMPUP_MAX,
    Channel,
    Lead,
    LeadContact,
    Stage,
    Suppression,
)
from shvya.events.service import append_lead_events
from shvya.jobs.service import JobType, PreparedJob, enqueue_prepared, prepare_job
from shvya.tenancy.models import Company

EXAMINED_PER_CALL = 10


def idle_minutes(stage: Stage, channel: Channel) -> int:
    """How long a lead in `stage` reached on `channel` stays silent before a bump-up."""
    if stage.bumpup_idle_minutes is not None:
        return stage.bumpup_idle_minutes
    return DEFAULT_BUMPUP_IDLE_MINUTES[channel]


def max_bumpups(stage: Stage) -> int:
    return DEFAULT_BUMPUP_MAX if stage.bumpup_max is None else stage.bumpup_max


def bumpup_key(lead_id: uuid.UUID, number: int, last_outbound_at: datetime) -> str:
    """The job's idempotency key: the n-th bump-up after our message at that time, so a
    second tick (or a second scheduler) over the same lead enqueues nothing more."""
    return f"bumpup:{lead_id}:{number}:{last_outbound_at.isoformat()}"


def _claim(session: Session, *, now: datetime, limit: int) -> list[Lead]:
    query = (
        select(Lead)
        .where(Lead.next_bumpup_at.is_not(None), Lead.next_bumpup_at <= now, ~Lead.ai_paused)
        .order_by(Lead.next_bumpup_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Another scheduler's claimed rows are skipped, not waited for; each row it took is out
        # of the due set when its transaction commits (docs/scheduler.md, "Race safety").
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def _bumpup_contacts(session: Session, leads: list[Lead]) -> dict[uuid.UUID, LeadContact]:
    """Each lead's contact a bump-up would go to (the handler's choice: the first of
    BUMPUP_CHANNELS the lead has); leads with none (email or SMS only) are left out."""
    rows = session.scalars(
        select(LeadContact).where(
            LeadContact.lead_id.in_([lead.id for lead in leads]),
            LeadContact.channel.in_([c.value for c in BUMPUP_CHANNELS]),
        )
    ).all()
    rank = {c.value: index for index, c in enumerate(BUMPUP_CHANNELS)}
    chosen: dict[uuid.UUID, LeadContact] = {}
    for contact in sorted(rows, key=lambda c: (rank[c.channel], c.created_at)):
        chosen.setdefault(contact.lead_id, contact)
    return chosen


def _suppressed(session: Session, contacts: list[LeadContact]) -> set[uuid.UUID]:
    """Contacts (by id) whose address is suppressed on their channel."""
    if not contacts:
        return set()
    keys = {(c.company_id, c.channel, c.value): c.id for c in contacts}
    rows = session.execute(
        select(Suppression.company_id, Suppression.channel, Suppression.address).where(
            tuple_(Suppression.company_id, Suppression.channel, Suppression.address).in_(list(keys))
        )
    ).all()
    return {keys[(row[0], row[1], row[2])] for row in rows}


def _bumpups_since_inbound(session: Session, leads: list[Lead]) -> Counter[uuid.UUID]:
    """Bump-ups each lead got since it last wrote (any that may have reached it: not failed;
    imported ones too). Reads only our messages after the lead's last one."""
    rows = session.execute(
        select(Message.lead_id, Message.meta)
        .join(Lead, Lead.id == Message.lead_id)
        .where(
            Message.lead_id.in_([lead.id for lead in leads]),
            Message.direction == Direction.outbound.value,
            Message.created_at > Lead.last_inbound_at,
            Message.status != MessageStatus.failed.value,
        )
    ).all()
    return Counter(lead_id for lead_id, meta in rows if (meta or {}).get("purpose") == "bumpup")


def _enqueue_due(session: Session, leads: list[Lead], *, now: datetime) -> int:
    """Enqueue the bump-ups due among `leads`; move every other one out of the due set."""
    waiting = [
        lead
        for lead in leads
        if lead.last_inbound_at is not None
        and lead.last_outbound_at is not None
        and lead.last_outbound_at > lead.last_inbound_at
    ]
    for lead in leads:
        lead.next_bumpup_at = None  # until the checks below say when, or we send again
    if not waiting:
        return 0
    ai_on = set(
        session.scalars(
            select(Company.id).where(
                Company.id.in_({lead.company_id for lead in waiting}), Company.ai_enabled
            )
        )
    )
    waiting = [lead for lead in waiting if lead.company_id in ai_on]
    contacts = _bumpup_contacts(session, waiting) if waiting else {}
    waiting = [lead for lead in waiting if lead.id in contacts]
    if not waiting:
        return 0
    blocked = _suppressed(session, [contacts[lead.id] for lead in waiting])
    waiting = [
        lead
        for lead in waiting
        if contacts[lead.id].id not in blocked
        and contacts[lead.id].marketing_consent != "stop"  # a bump-up is marketing (rule 9)
    ]
    if not waiting:
        return 0
    stages = {
        stage.id: stage
        for stage in session.scalars(
            select(Stage).where(Stage.id.in_({lead.stage_id for lead in waiting}))
        )
    }
    sent = _bumpups_since_inbound(session, waiting)
    jobs: list[PreparedJob] = []
    events: list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]] = []
    for lead in waiting:
        stage = stages[lead.stage_id]
        channel = Channel(contacts[lead.id].channel)
        limit = max_bumpups(stage)
        if sent[lead.id] >= limit:
            continue  # the lead has had its bump-ups; its next message starts a new count
        last_outbound_at = lead.last_outbound_at
        assert last_outbound_at is not None
        idle = idle_minutes(stage, channel)
        due = last_outbound_at + timedelta(minutes=idle)
        if due > now:
            lead.next_bumpup_at = due
            continue
        number = sent[lead.id] + 1
        job = prepare_job(
            session,
            JobType.followup_bumpup,
            {"lead_id": str(lead.id)},  # as POST /leads/{id}/bumpup enqueues it
            company_id=lead.company_id,
            lead_id=lead.id,
            now=now,
            idempotency_key=bumpup_key(lead.id, number, last_outbound_at),
        )
        jobs.append(job)
        data = {
            "job_id": str(job.values["id"]),
            "bumpup": number,
            "of": limit,
            "channel": channel.value,
            "idle_minutes": idle,
            "silent_since": last_outbound_at.isoformat(),
        }
        events.append((lead.company_id, lead.id, data))
    # One statement for the jobs and one for their events, not two per lead.
    inserted = enqueue_prepared(session, jobs)
    append_lead_events(
        session,
        type="BumpupScheduled",
        events=[e for e, job in zip(events, jobs, strict=True) if job.values["id"] in inserted],
        actor="scheduler",
        now=now,
    )
    return len(inserted)


class DueBumpups:
    """The scheduler's bump-up source (sequences.scheduler.DueSource)."""

    name = "bumpups"

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int:
        """Reads due leads until `limit` bump-ups are enqueued or none is left; but no more
        than EXAMINED_PER_CALL times `limit` of them in one transaction (a stage's new timing
        wakes all its quiet leads at once): the rest wait for the next tick."""
        enqueued = examined = 0
        while enqueued < limit and examined < EXAMINED_PER_CALL * limit:
            want = limit - enqueued
            leads = _claim(session, now=now, limit=want)
            examined += len(leads)
            if leads:
                enqueued += _enqueue_due(session, leads, now=now)
                session.flush()
            if len(leads) < want:
                break
        return enqueued


due_bumpups = DueBumpups()
