from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.conversations.schemas import HistoryIn, HistoryOut, InboundMessageIn, ReceiveResultOut
from shvya.crm import service as crm
from shvya.crm.models import Channel, SuppressionReason
from shvya.db.base import new_id, table_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import InvalidInput, NotFound
from shvya.events.service import append_event
from shvya.jobs.service import (
    JobType,
    PreparedJob,
    enqueue_job,
    find_job_id,
    job_inserted,
    prepare_job,
)

# A provider clock a little ahead of ours is normal; a timestamp far ahead would stretch
# WhatsApp's 24-hour window, so the API refuses it and webhooks clamp it.
MAX_CLOCK_SKEW = timedelta(minutes=10)
MAX_TEXT_CHARS = 4096
# Whole-message keywords (PROTOCOLS.md 5.2); companies add their own languages' words.
OPT_OUT_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "opt out"}
)
OPT_IN_KEYWORDS = frozenset({"start", "unstop", "subscribe"})
# Delivery statuses only move forward; `failed` is final (PROTOCOLS.md 1.6).
STATUS_RANK = {
    MessageStatus.queued: 0,
    MessageStatus.sending: 1,
    MessageStatus.unknown: 2,
    MessageStatus.sent: 3,
    MessageStatus.delivered: 4,
    MessageStatus.read: 5,
}


class DuplicateInbound(Exception):
    """The same provider message arrived twice at once; the first one's ids are kept."""

    def __init__(self, result: ReceiveResultOut) -> None:
        super().__init__(f"duplicate inbound message {result.message_id}")
        self.result = result


class MessageNotFound(NotFound):
    code = "message_not_found"


@dataclass(frozen=True)
class InboundMessage:
    """A lead's message from any door: the API, a channel webhook, the sandbox page."""

    channel: Channel
    sender: str
    text: str
    name: str | None = None
    external_id: str | None = None
    received_at: datetime | None = None
    # Provider details worth keeping: message type, media id and mime type, button ids...
    meta: dict[str, Any] = field(default_factory=dict)
    # WhatsApp's business-scoped user id; found before the phone number when present.
    external_user_id: str | None = None

    @classmethod
    def from_api(cls, body: InboundMessageIn) -> InboundMessage:
        return cls(
            channel=body.channel,
            sender=body.from_,
            text=body.text,
            name=body.name,
            external_id=body.external_id,
            received_at=body.received_at,
        )


def engage_idempotency_key(message_id: uuid.UUID) -> str:
    return f"ai.engage:{message_id}"


def _keyword(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    folded = re.sub(r"\s+", " ", folded)
    return folded.strip(" .!¡?¿'\"")


def opt_out_keyword(text: str, *, company_keywords: Sequence[str] = ()) -> str | None:
    """ "out" when the whole message is an opt-out keyword, "in" for START, else None."""
    word = _keyword(text)
    if word in OPT_OUT_KEYWORDS or word in {_keyword(k) for k in company_keywords}:
        return "out"
    if word in OPT_IN_KEYWORDS:
        return "in"
    return None


def receive_inbound_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    message: InboundMessage,
    region: str,
    actor: str,
    now: datetime,
    opt_out_keywords: Sequence[str] = (),
    clamp_future: bool = False,
) -> ReceiveResultOut:
    """Record a lead's message and queue what follows, all in the caller's transaction.

    Idempotent on (company, channel, external_id): a redelivery returns the first result
    with duplicate=true and writes nothing. When two copies race, the message's unique index
    decides and the loser raises DuplicateInbound so its unit of work rolls back whole.
    An opt-out keyword suppresses the contact and queues one confirmation, never an AI reply.
    """
    channel = message.channel
    if message.sender.startswith("bsuid:"):
        value = message.sender  # WhatsApp users with a username and no phone number
    else:
        value = crm.normalise_contact(channel, message.sender, region=region, field="from")
    received_at = message.received_at or now
    if received_at - now > MAX_CLOCK_SKEW:
        if not clamp_future:
            raise InvalidInput(
                "received_at: is in the future; send the provider's timestamp with its offset",
                extra={"field": "received_at"},
            )
        received_at = now
    text = message.text[:MAX_TEXT_CHARS]
    keyword = opt_out_keyword(text, company_keywords=opt_out_keywords)
    event_data = {
        "channel": channel.value,
        "external_id": message.external_id,
        "kind": message.meta.get("type", "text"),
        "chars": len(text),
    }
    arrival = _Arrival(
        company_id=company_id,
        message=message,
        value=value,
        text=text,
        received_at=received_at,
        event_data=event_data,
        actor=actor,
        now=now,
    )
    if keyword is None and session.get_bind().dialect.name == "postgresql":
        return _receive_postgres(session, arrival)
    # No look-up for a repeat first: the message's unique index finds it (DuplicateInbound),
    # and the rare redelivery costs a rolled-back transaction instead of every message an
    # extra query.
    contact = crm.resolve_inbound_contact(
        session,
        company_id=company_id,
        channel=channel,
        value=value,
        name=message.name,
        actor=actor,
        now=now,
        external_user_id=message.external_user_id,
    )
    message_id = insert_or_ignore(
        session,
        table_of(Message),
        {
            "company_id": company_id,
            "lead_id": contact.lead_id,
            "contact_id": contact.contact_id,
            "channel": channel.value,
            "direction": Direction.inbound.value,
            "text": text,
            "status": MessageStatus.received.value,
            "external_id": message.external_id,
            # An opt-out or opt-in keyword is a command, not a question for the AI.
            "meta": message.meta if keyword is None else {**message.meta, "opt_keyword": keyword},
            "created_at": now,
            "updated_at": now,
            "received_at": received_at,
        },
        conflict_on=("company_id", "channel", "external_id"),
    )
    if message_id is None:
        assert message.external_id is not None
        first = _find_existing(
            session, company_id=company_id, channel=channel, external_id=message.external_id
        )
        assert first is not None
        raise DuplicateInbound(first)

    crm.note_inbound(
        session,
        contact_id=contact.contact_id,
        lead_id=contact.lead_id,
        received_at=received_at,
        now=now,
    )
    append_event(
        session,
        company_id=company_id,
        entity_type="lead",
        entity_id=contact.lead_id,
        type="InboundMessageReceived",
        data={"message_id": str(message_id), **event_data},
        actor=actor,
        now=now,
    )
    if keyword is not None:
        _apply_opt_keyword(
            session,
            keyword=keyword,
            company_id=company_id,
            lead_id=contact.lead_id,
            channel=channel,
            address=value,
            message_id=message_id,
            actor=actor,
            now=now,
        )
        return ReceiveResultOut(
            lead_id=contact.lead_id,
            message_id=message_id,
            job_id=None,
            lead_created=contact.lead_created,
            duplicate=False,
        )
    job_id: uuid.UUID | None = None
    if not contact.ai_paused:
        job_id, _ = enqueue_job(
            session,
            JobType.ai_engage,
            {"lead_id": str(contact.lead_id), "message_id": str(message_id)},
            company_id=company_id,
            lead_id=contact.lead_id,
            idempotency_key=engage_idempotency_key(message_id),
            now=now,
        )
    return ReceiveResultOut(
        lead_id=contact.lead_id,
        message_id=message_id,
        job_id=job_id,
        lead_created=contact.lead_created,
        duplicate=False,
    )


@dataclass(frozen=True)
class _Arrival:
    """A message on its way in, normalised: what the PostgreSQL statements below bind."""

    company_id: uuid.UUID
    message: InboundMessage
    value: str  # the contact as stored: E.164, lower-case email, or bsuid:...
    text: str
    received_at: datetime
    event_data: dict[str, Any]
    actor: str
    now: datetime


# On PostgreSQL a message is one statement with data-modifying CTEs (SQLite has none and takes
# the statements one by one in receive_inbound_message): after the contact's look-up, either
# _RECORD_POSTGRES (a known contact) or _CREATE_POSTGRES (a new one: its lead, contact and
# LeadCreated event too). Every CTE after `m` runs only if the message went in, so a repeat
# of a provider's message id writes nothing. Both share the message, event and job parts.
_MESSAGE_CTE = """
    m AS (
        INSERT INTO messages (id, company_id, lead_id, contact_id, channel, direction, text,
                              status, external_id, meta, created_at, updated_at, received_at)
        SELECT :message_id, :company_id, :lead_id, :contact_id, :channel, 'in', :text,
               'received', :external_id, CAST(:meta AS jsonb), :now, :now, :received_at
        {source}
        ON CONFLICT (company_id, channel, external_id) DO NOTHING
        RETURNING id
    )"""
_EVENT_JOB_CTES = """
    event AS (
        INSERT INTO events (id, company_id, entity_type, entity_id, type, data, actor, created_at)
        SELECT :event_id, :company_id, 'lead', :lead_id, 'InboundMessageReceived',
               CAST(:event_data AS jsonb), :actor, :now
        FROM m
    ), job AS (
        INSERT INTO jobs (id, company_id, lead_id, type, priority, payload, status, attempts,
                          max_attempts, run_at, idempotency_key, created_at, published_at)
        SELECT :job_id, :company_id, :lead_id, :job_type, :priority, CAST(:payload AS jsonb),
               'queued', 0, :max_attempts, :run_at, :idempotency_key, :now,
               CAST(:published_at AS timestamptz)
        FROM m WHERE :engage
        ON CONFLICT (company_id, idempotency_key) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT id FROM m) AS message_id, (SELECT id FROM job) AS job_id"""

_RECORD_POSTGRES = text(
    "".join(
        (
            "WITH",
            _MESSAGE_CTE.format(source=""),
            """, contact AS (
        UPDATE lead_contacts SET last_inbound_at = GREATEST(last_inbound_at, :received_at)
        WHERE id = :contact_id AND EXISTS (SELECT 1 FROM m)
    ), lead AS (
        UPDATE leads SET last_inbound_at = GREATEST(last_inbound_at, :received_at),
                         updated_at = :now
        WHERE id = :lead_id AND EXISTS (SELECT 1 FROM m)
    ),""",
            _EVENT_JOB_CTES,
        )
    )
)

# A new contact: the lead goes into the first stage of the company's default pipeline. The
# contact is inserted first, ON CONFLICT DO NOTHING: when another message from the same new
# number commits first (either unique key), nothing at all is written and the caller takes
# the known-contact path. The contact's foreign key to its lead, inserted beside it, is
# checked at the end of the statement. A company without a pipeline writes nothing either
# (no `stage` row) and is served by the ORM path, which makes the pipeline.
_CREATE_POSTGRES = text(
    "".join(
        (
            """WITH stage AS (
        SELECT s.id, s.pipeline_id, s.name FROM stages s
        JOIN pipelines p ON p.id = s.pipeline_id
        WHERE p.company_id = :company_id AND p.is_default
        ORDER BY s.position LIMIT 1
    ), new_contact AS (
        INSERT INTO lead_contacts (id, company_id, lead_id, channel, value, external_user_id,
                                   last_inbound_at, created_at)
        SELECT :contact_id, :company_id, :lead_id, :channel, :value, :external_user_id,
               :received_at, :now
        FROM stage
        ON CONFLICT DO NOTHING
        RETURNING id
    ), new_lead AS (
        INSERT INTO leads (id, company_id, pipeline_id, stage_id, name, attributes, priority,
                           ai_paused, created_at, updated_at, last_inbound_at)
        SELECT :lead_id, :company_id, stage.pipeline_id, stage.id, :name, '{}'::jsonb, 0,
               false, :now, :now, :received_at
        FROM stage, new_contact
    ), created AS (
        INSERT INTO events (id, company_id, entity_type, entity_id, type, data, actor, created_at)
        SELECT :created_event_id, :company_id, 'lead', :lead_id, 'LeadCreated',
               CAST(:created_data AS jsonb)
                   || jsonb_build_object('stage_id', stage.id::text, 'stage', stage.name),
               :actor, :now
        FROM stage, new_contact
    ),""",
            _MESSAGE_CTE.format(source="FROM new_contact"),
            ",",
            _EVENT_JOB_CTES,
            ", (SELECT id FROM new_contact) AS new_contact_id",
        )
    )
)


def _receive_postgres(session: Session, arrival: _Arrival) -> ReceiveResultOut:
    """Two round trips for any message: the contact's look-up, then one statement."""
    message = arrival.message
    contact = crm.find_inbound_contact(
        session,
        company_id=arrival.company_id,
        channel=message.channel,
        value=arrival.value,
        name=message.name,
        external_user_id=message.external_user_id,
    )
    if contact is None:
        created = _create_postgres(session, arrival)
        if created is not None:
            return created
        # Another message from this number won the race, or the company has no pipeline yet.
        contact = crm.resolve_inbound_contact(
            session,
            company_id=arrival.company_id,
            channel=message.channel,
            value=arrival.value,
            name=message.name,
            actor=arrival.actor,
            now=arrival.now,
            external_user_id=message.external_user_id,
        )
    return _record_postgres(session, arrival, contact)


def _statement_parameters(
    session: Session,
    arrival: _Arrival,
    *,
    lead_id: uuid.UUID,
    contact_id: uuid.UUID,
    engage: bool,
) -> tuple[dict[str, Any], PreparedJob]:
    message_id = new_id()
    job = prepare_job(
        session,
        JobType.ai_engage,
        {"lead_id": str(lead_id), "message_id": str(message_id)},
        company_id=arrival.company_id,
        lead_id=lead_id,
        idempotency_key=engage_idempotency_key(message_id),
        now=arrival.now,
    )
    return {
        "message_id": message_id,
        "company_id": arrival.company_id,
        "lead_id": lead_id,
        "contact_id": contact_id,
        "channel": arrival.message.channel.value,
        "text": arrival.text,
        "external_id": arrival.message.external_id,
        "meta": json.dumps(arrival.message.meta),
        "now": arrival.now,
        "received_at": arrival.received_at,
        "event_id": new_id(),
        "event_data": json.dumps({"message_id": str(message_id), **arrival.event_data}),
        "actor": arrival.actor,
        "job_id": job.values["id"],
        "job_type": job.values["type"],
        "priority": job.values["priority"],
        "payload": json.dumps(job.values["payload"]),
        "max_attempts": job.values["max_attempts"],
        "run_at": job.values["run_at"],
        "idempotency_key": job.values["idempotency_key"],
        "published_at": job.values["published_at"],
        "engage": engage,
    }, job


def _duplicate(session: Session, arrival: _Arrival) -> DuplicateInbound:
    external_id = arrival.message.external_id
    assert external_id is not None
    first = _find_existing(
        session,
        company_id=arrival.company_id,
        channel=arrival.message.channel,
        external_id=external_id,
    )
    assert first is not None
    return DuplicateInbound(first)


def _create_postgres(session: Session, arrival: _Arrival) -> ReceiveResultOut | None:
    """A new contact's lead and first message in one statement; None when nothing was written
    (the number's contact was made by a concurrent message, or there is no pipeline)."""
    # Ids are time-ordered and a timeline sorts by them within one instant: LeadCreated first.
    lead_id, contact_id, created_event_id = new_id(), new_id(), new_id()
    parameters, job = _statement_parameters(
        session, arrival, lead_id=lead_id, contact_id=contact_id, engage=True
    )
    parameters.update(
        value=arrival.value,
        external_user_id=arrival.message.external_user_id,
        name=arrival.message.name,
        created_event_id=created_event_id,
        created_data=json.dumps(
            {"contact": {"channel": arrival.message.channel.value, "value": arrival.value}}
        ),
    )
    row = session.connection().execute(_CREATE_POSTGRES, parameters).one()
    if row.new_contact_id is None:
        return None  # the number's contact was made meanwhile, or there is no pipeline
    if row.message_id is None:
        # The provider's message id is stored already, under another contact: a repeat. The
        # caller's unit of work (or savepoint) rolls back the lead just made.
        raise _duplicate(session, arrival)
    if row.job_id is not None:
        job_inserted(session, job)
    return ReceiveResultOut(
        lead_id=lead_id,
        message_id=row.message_id,
        job_id=row.job_id,
        lead_created=True,
        duplicate=False,
    )


def _record_postgres(
    session: Session, arrival: _Arrival, contact: crm.InboundContact
) -> ReceiveResultOut:
    parameters, job = _statement_parameters(
        session,
        arrival,
        lead_id=contact.lead_id,
        contact_id=contact.contact_id,
        engage=not contact.ai_paused,
    )
    row = session.connection().execute(_RECORD_POSTGRES, parameters).one()
    if row.message_id is None:
        raise _duplicate(session, arrival)
    if row.job_id is not None:
        job_inserted(session, job)
    return ReceiveResultOut(
        lead_id=contact.lead_id,
        message_id=row.message_id,
        job_id=row.job_id,
        lead_created=contact.lead_created,
        duplicate=False,
    )


def _apply_opt_keyword(
    session: Session,
    *,
    keyword: str,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    address: str,
    message_id: uuid.UUID,
    actor: str,
    now: datetime,
) -> None:
    if keyword == "out":
        record_opt_out(
            session,
            company_id=company_id,
            lead_id=lead_id,
            channel=channel,
            address=address,
            message_id=message_id,
            source="keyword",
            actor=actor,
            now=now,
        )
        return
    existing = crm.find_suppression(
        session, company_id=company_id, channel=channel.value, address=address
    )
    if existing is not None and existing.reason == SuppressionReason.opt_out.value:
        crm.remove_suppression(
            session,
            company_id=company_id,
            suppression=existing,
            actor=actor,
            now=now,
            lead_id=lead_id,
        )
        append_event(
            session,
            company_id=company_id,
            entity_type="lead",
            entity_id=lead_id,
            type="OptedIn",
            data={"channel": channel.value, "message_id": str(message_id)},
            actor=actor,
            now=now,
        )


def record_opt_out(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    channel: Channel,
    address: str,
    message_id: uuid.UUID,
    source: str,
    actor: str,
    now: datetime,
) -> bool:
    """Suppress the contact (an opt-out keyword, or a lead the AI understood asking to stop)
    and queue the one confirmation it is owed. False: it had opted out already."""
    suppression, created = crm.add_suppression(
        session,
        company_id=company_id,
        channel=channel.value,
        address=address,
        reason=SuppressionReason.opt_out,
        source=source,
        actor=actor,
        now=now,
        lead_id=lead_id,
    )
    append_event(
        session,
        company_id=company_id,
        entity_type="lead",
        entity_id=lead_id,
        type="OptedOut",
        data={
            "channel": channel.value,
            "message_id": str(message_id),
            "first": created,
            "source": source,
        },
        actor=actor,
        now=now,
    )
    if created:
        # One confirmation per opt-out, keyed on the suppression: never a sales reply.
        enqueue_job(
            session,
            JobType.channel_notice,
            {
                "lead_id": str(lead_id),
                "channel": channel.value,
                "notice": "opt_out_confirmation",
                "suppression_id": str(suppression.id),
            },
            company_id=company_id,
            lead_id=lead_id,
            idempotency_key=f"optout:{suppression.id}",
            now=now,
        )
    return created


def _find_existing(
    session: Session, *, company_id: uuid.UUID, channel: Channel, external_id: str
) -> ReceiveResultOut | None:
    row = session.execute(
        select(Message.id, Message.lead_id).where(
            Message.company_id == company_id,
            Message.channel == channel.value,
            Message.external_id == external_id,
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


def get_message(session: Session, *, company_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    row = session.scalars(
        select(Message).where(Message.id == message_id, Message.company_id == company_id)
    ).first()
    if row is None:
        raise MessageNotFound(f"message {message_id} not found")
    return row


# What we send that does not answer the lead's messages.
NOT_AN_ANSWER = frozenset({"bumpup", "opt_out_confirmation"})


def unanswered_inbound(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, limit: int = 20
) -> list[Message]:
    """The lead's messages since our last answer, oldest first: what the next AI reply
    answers. Our last answer is the last message we sent that answers (an AI reply, a handoff
    message, a person's message), not a bump-up or an opt-out confirmation, and never an
    imported one (its time came from another tool). Imported history and opt-in/out keywords
    are left out of the result."""
    recent_out = session.execute(
        select(Message.created_at, Message.meta)
        .where(
            Message.company_id == company_id,
            Message.lead_id == lead_id,
            Message.direction == Direction.outbound.value,
            Message.status != MessageStatus.failed.value,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    last_out = next(
        (
            row
            for row in recent_out
            if not (row.meta or {}).get("imported")
            and (row.meta or {}).get("purpose") not in NOT_AN_ANSWER
        ),
        None,
    )
    statement = select(Message).where(
        Message.company_id == company_id,
        Message.lead_id == lead_id,
        Message.direction == Direction.inbound.value,
    )
    answered: set[str] = set()
    if last_out is not None:
        # At or after our last message (clocks tick coarsely), less what it answered.
        statement = statement.where(Message.created_at >= last_out.created_at)
        answered = {str(i) for i in (last_out.meta or {}).get("answers", [])}
    rows = session.scalars(
        statement.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    ).all()
    return [
        m
        for m in reversed(rows)
        if str(m.id) not in answered
        and not m.meta.get("imported")
        and not m.meta.get("opt_keyword")
    ]


def recent_messages(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, limit: int
) -> list[Message]:
    """The lead's last `limit` messages, imported history included, oldest first."""
    rows = session.scalars(
        select(Message)
        .where(
            Message.company_id == company_id,
            Message.lead_id == lead_id,
            Message.status != MessageStatus.failed.value,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def outbound_for(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, purpose: str
) -> list[Message]:
    """Every message we sent this lead for one purpose (e.g. bumpup), imported ones included,
    oldest first."""
    rows = session.scalars(
        select(Message)
        .where(
            Message.company_id == company_id,
            Message.lead_id == lead_id,
            Message.direction == Direction.outbound.value,
        )
        .order_by(Message.created_at, Message.id)
    ).all()
    return [m for m in rows if m.meta.get("purpose") == purpose]


def count_inbound(session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.company_id == company_id,
                Message.lead_id == lead_id,
                Message.direction == Direction.inbound.value,
            )
        )
        or 0
    )


# --- history import ---------------------------------------------------------------------------


def import_history(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    history: HistoryIn,
    actor: str,
    now: datetime,
) -> HistoryOut:
    """Store a conversation held in another tool. Idempotent per message (the same message
    imported twice is stored once); enqueues nothing: the AI reads it as memory only."""
    lead = crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    for index, item in enumerate(history.messages):
        if item.sent_at - now > MAX_CLOCK_SKEW:
            raise InvalidInput(
                f"messages[{index}].sent_at: is in the future",
                extra={"field": f"messages.{index}.sent_at"},
            )
    if history.channel is not None:
        channel = history.channel
        contact = crm.lead_contact(
            session, company_id=company_id, lead_id=lead_id, channel=channel.value
        )
    else:
        contact = crm.first_contact(session, company_id=company_id, lead_id=lead_id)
        if contact is None:
            raise InvalidInput(
                "channel: the lead has no contact, so say which channel the conversation was on",
                extra={"field": "channel"},
            )
        channel = Channel(contact.channel)
    messages = table_of(Message)
    ids: list[uuid.UUID] = []
    imported = 0
    for item in history.messages:
        at = item.sent_at.astimezone(UTC)
        digest = hashlib.sha256(
            f"{lead_id}|{item.direction}|{at.isoformat()}|{item.text}".encode()
        ).hexdigest()
        external_id = f"import:{digest[:48]}"
        inbound = item.direction == Direction.inbound.value
        message_id = insert_or_ignore(
            session,
            messages,
            {
                "company_id": company_id,
                "lead_id": lead_id,
                "contact_id": contact.id if contact is not None else None,
                "channel": channel.value,
                "direction": item.direction,
                "text": item.text,
                "status": (MessageStatus.received if inbound else MessageStatus.sent).value,
                "external_id": external_id,
                "meta": {"imported": True, "purpose": item.kind},
                "created_at": at,
                "updated_at": now,
                "received_at": at if inbound else None,
                "sent_at": None if inbound else at,
            },
            conflict_on=("company_id", "channel", "external_id"),
        )
        if message_id is None:
            message_id = session.scalar(
                select(Message.id).where(
                    Message.company_id == company_id,
                    Message.channel == channel.value,
                    Message.external_id == external_id,
                )
            )
            assert message_id is not None
        else:
            imported += 1
        ids.append(message_id)
    times_in = [m.sent_at for m in history.messages if m.direction == Direction.inbound.value]
    times_out = [m.sent_at for m in history.messages if m.direction == Direction.outbound.value]
    if times_in and (lead.last_inbound_at is None or max(times_in) > lead.last_inbound_at):
        lead.last_inbound_at = max(times_in).astimezone(UTC)
    if times_out and (lead.last_outbound_at is None or max(times_out) > lead.last_outbound_at):
        lead.last_outbound_at = max(times_out).astimezone(UTC)
    if imported:
        lead.updated_at = now
        append_event(
            session,
            company_id=company_id,
            entity_type="lead",
            entity_id=lead_id,
            type="HistoryImported",
            data={
                "channel": channel.value,
                "imported": imported,
                "already_imported": len(ids) - imported,
                "first_sent_at": min(m.sent_at for m in history.messages).isoformat(),
                "last_sent_at": max(m.sent_at for m in history.messages).isoformat(),
            },
            actor=actor,
            now=now,
        )
    session.flush()
    return HistoryOut(imported=imported, already_imported=len(ids) - imported, message_ids=ids)


# --- outbound messages ------------------------------------------------------------------------


def find_outbound_by_send_key(
    session: Session, *, company_id: uuid.UUID, send_key: str
) -> Message | None:
    return session.scalars(
        select(Message).where(Message.company_id == company_id, Message.send_key == send_key)
    ).first()


def last_outbound_at(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, channel: str
) -> datetime | None:
    """Our last message to this lead on this channel that may have reached them."""
    last: datetime | None = session.scalar(
        select(func.max(Message.created_at)).where(
            Message.company_id == company_id,
            Message.lead_id == lead_id,
            Message.channel == channel,
            Message.direction == Direction.outbound.value,
            Message.status != MessageStatus.failed.value,
        )
    )
    return last


def outbound_count_since(
    session: Session, *, channel_account_id: uuid.UUID, since: datetime
) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.channel_account_id == channel_account_id,
                Message.direction == Direction.outbound.value,
                Message.created_at >= since,
            )
        )
        or 0
    )


@dataclass(frozen=True)
class DeliveryStatus:
    """A provider's status for one of our messages (sent, delivered, read, failed)."""

    external_id: str
    status: MessageStatus
    at: datetime
    error_code: str | None = None
    error: str | None = None


def apply_delivery_status(
    session: Session,
    *,
    company_id: uuid.UUID,
    channel: Channel,
    status: DeliveryStatus,
    now: datetime,
) -> Message | None:
    """Move an outbound message's status forward. A status that would move it back (delivered
    after read), repeats the current one, or follows `failed` changes nothing. Returns the
    message when it changed."""
    # Locked: a `delivered` and a `read` for one message can arrive in two webhooks at once,
    # and the later writer must see what the earlier one wrote (never read -> delivered).
    message = session.scalars(
        select(Message)
        .where(
            Message.company_id == company_id,
            Message.channel == channel.value,
            Message.external_id == status.external_id,
            Message.direction == Direction.outbound.value,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if message is None or message.status == MessageStatus.failed.value:
        return None
    current = MessageStatus(message.status)
    if status.status is MessageStatus.failed:
        if current is MessageStatus.read:
            return None  # read is proof of delivery: a late failure cannot undo it
        message.status = MessageStatus.failed.value
        message.error = (
            f"{status.error_code}: {status.error}" if status.error_code else status.error
        )
    else:
        if STATUS_RANK.get(status.status, -1) <= STATUS_RANK.get(current, -1):
            return None
        message.status = status.status.value
        if status.status is MessageStatus.sent and message.sent_at is None:
            message.sent_at = status.at
        if status.status in (MessageStatus.delivered, MessageStatus.read):
            message.delivered_at = message.delivered_at or status.at
        if status.status is MessageStatus.read:
            message.read_at = status.at
    message.updated_at = now
    append_event(
        session,
        company_id=company_id,
        entity_type="lead",
        entity_id=message.lead_id,
        type="MessageStatusChanged",
        data={
            "message_id": str(message.id),
            "from": current.value,
            "to": message.status,
            **({"error": message.error} if status.status is MessageStatus.failed else {}),
        },
        now=now,
    )
    return message


def create_outbound_message(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID,
    contact_id: uuid.UUID | None,
    channel: str,
    channel_account_id: uuid.UUID | None,
    text: str,
    send_key: str,
    template_id: uuid.UUID | None,
    meta: dict[str, Any],
    now: datetime,
) -> Message:
    message = Message(
        company_id=company_id,
        lead_id=lead_id,
        contact_id=contact_id,
        channel=channel,
        channel_account_id=channel_account_id,
        direction=Direction.outbound.value,
        text=text,
        template_id=template_id,
        status=MessageStatus.sending.value,
        send_key=send_key,
        meta=meta,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    return message


def set_outbound_status(
    session: Session,
    *,
    message_id: uuid.UUID,
    status: MessageStatus,
    now: datetime,
    external_id: str | None = None,
    error: str | None = None,
    meta_update: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"status": status.value, "updated_at": now}
    if external_id is not None:
        values["external_id"] = external_id
    if status is MessageStatus.sent:
        values["sent_at"] = now
    if error is not None:
        values["error"] = error
    session.execute(update(Message).where(Message.id == message_id).values(**values))
    if meta_update:
        message = session.get_one(Message, message_id)
        message.meta = {**message.meta, **meta_update}
