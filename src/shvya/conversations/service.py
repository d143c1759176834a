from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.conversations.schemas import InboundMessageIn, ReceiveResultOut
from shvya.crm import service as crm
from shvya.db.statements import insert_or_ignore
from shvya.errors import InvalidInput
from shvya.events.service import append_event
from shvya.jobs.service import JobType, enqueue_job, find_job_id

# A provider clock a little ahead of ours is normal; a timestamp far ahead would stretch
# WhatsApp's 24-hour window, so it is refused.
MAX_CLOCK_SKEW = timedelta(minutes=10)


class DuplicateInbound(Exception):
    """The same provider message arrived twice at once; the first one's ids are kept."""

    def __init__(self, result: ReceiveResultOut) -> None:
        super().__init__(f"duplicate inbound message {result.message_id}")
        self.result = result


def engage_idempotency_key(message_id: uuid.UUID) -> str:
    return f"ai.engage:{message_id}"


def receive_inbound_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    message: InboundMessageIn,
    region: str,
    actor: str,
    now: datetime,
) -> ReceiveResultOut:
    """Record a lead's message and queue the AI's answer, all in the caller's transaction.

    Idempotent on (company, channel, external_id): a redelivery returns the first result
    with duplicate=true and writes nothing. When two copies race, the message's unique index
    decides and the loser raises DuplicateInbound so its unit of work rolls back whole.
    """
    channel = message.channel
    value = crm.normalise_contact(channel, message.from_, region=region, field="from")
    received_at = message.received_at or now
    if received_at - now > MAX_CLOCK_SKEW:
        raise InvalidInput(
            "received_at: is in the future; send the provider's timestamp with its offset",
            extra={"field": "received_at"},
        )
    if message.external_id is not None:
        first = _find_existing(session, company_id=company_id, message=message)
        if first is not None:
            return first

    found = crm.find_or_create_lead_for_contact(
        session,
        company_id=company_id,
        channel=channel,
        value=value,
        name=message.name,
        actor=actor,
        now=now,
    )
    lead, contact = found.lead, found.contact
    message_id = insert_or_ignore(
        session,
        Message.__table__,  # type: ignore[arg-type]
        {
            "company_id": company_id,
            "lead_id": lead.id,
            "contact_id": contact.id,
            "channel": channel.value,
            "direction": Direction.inbound.value,
            "text": message.text,
            "status": MessageStatus.received.value,
            "external_id": message.external_id,
            "meta": {},
            "created_at": now,
            "updated_at": now,
            "received_at": received_at,
        },
        conflict_on=("company_id", "channel", "external_id"),
    )
    if message_id is None:
        first = _find_existing(session, company_id=company_id, message=message)
        assert first is not None
        raise DuplicateInbound(first)

    if contact.last_inbound_at is None or received_at > contact.last_inbound_at:
        contact.last_inbound_at = received_at
    if lead.last_inbound_at is None or received_at > lead.last_inbound_at:
        lead.last_inbound_at = received_at
    lead.updated_at = now
    append_event(
        session,
        company_id=company_id,
        entity_type="lead",
        entity_id=lead.id,
        type="InboundMessageReceived",
        data={
            "message_id": str(message_id),
            "channel": channel.value,
            "external_id": message.external_id,
            "chars": len(message.text),
        },
        actor=actor,
        now=now,
    )
    job_id: uuid.UUID | None = None
    if not lead.ai_paused:
        job_id, _ = enqueue_job(
            session,
            JobType.ai_engage,
            {"lead_id": str(lead.id), "message_id": str(message_id)},
            company_id=company_id,
            lead_id=lead.id,
            idempotency_key=engage_idempotency_key(message_id),
            now=now,
        )
    session.flush()
    return ReceiveResultOut(
        lead_id=lead.id,
        message_id=message_id,
        job_id=job_id,
        lead_created=found.lead_created,
        duplicate=False,
    )


def _find_existing(
    session: Session, *, company_id: uuid.UUID, message: InboundMessageIn
) -> ReceiveResultOut | None:
    row = session.execute(
        select(Message.id, Message.lead_id).where(
            Message.company_id == company_id,
            Message.channel == message.channel.value,
            Message.external_id == message.external_id,
        )
    ).first()
    if row is None:
        return None
    message_id, lead_id = row
    job_id = find_job_id(
        session, company_id=company_id, idempotency_key=engage_idempotency_key(message_id)
    )
    return ReceiveResultOut(
        lead_id=lead_id, message_id=message_id, job_id=job_id, lead_created=False, duplicate=True
    )


def list_lead_messages(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[Message], int]:
    """A conversation, oldest first."""
    crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    where = (Message.company_id == company_id, Message.lead_id == lead_id)
    total = session.scalar(select(func.count()).select_from(Message).where(*where)) or 0
    rows = session.scalars(
        select(Message)
        .where(*where)
        .order_by(Message.created_at, Message.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total
