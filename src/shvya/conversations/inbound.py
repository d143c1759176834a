"""A lead's message coming in: one operation, written twice, side by side.

`receive_inbound_message` takes one of two paths that must write the same rows (the lead, its
contact and LeadCreated for a new sender; the message, InboundMessageReceived, the last-inbound
times and the `ai.engage` job; or, for an opt-out or opt-in keyword, the suppression, its
events and the confirmation job):

- the ORM path, statement by statement: SQLite, and on PostgreSQL opt-out and opt-in keywords
  and companies without a pipeline;
- the PostgreSQL path: after the sender's look-up, one statement of data-modifying CTEs.

tests/conversations/test_inbound_dialects.py feeds both the same messages and compares the
rows they write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.conversations.schemas import MAX_TEXT_CHARS, InboundMessageIn, ReceiveResultOut
from shvya.crm import service as crm
from shvya.crm.models import Channel, SuppressionReason, SuppressionSource
from shvya.crm.schemas import StageAIConfig
from shvya.db.base import new_id, table_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import InvalidInput
from shvya.events.service import append_lead_event
from shvya.jobs.service import (
    JobType,
    PreparedJob,
    enqueue_job,
    find_job_id,
    job_inserted,
    prepare_job,
)
from shvya.schemas import storable_json, storable_text

# A provider clock a little ahead of ours is normal; a timestamp far ahead would stretch
# WhatsApp's 24-hour window, so the API refuses it and webhooks clamp it.
MAX_CLOCK_SKEW = timedelta(minutes=10)
# Whole-message keywords (docs/whatsapp.md section 2); companies add their own languages' words.
OPT_OUT_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "opt out"}
)
OPT_IN_KEYWORDS = frozenset({"start", "unstop", "subscribe"})


class DuplicateInbound(Exception):
    """The same provider message arrived twice at once; the first one's ids are kept."""

    def __init__(self, result: ReceiveResultOut) -> None:
        super().__init__(f"duplicate inbound message {result.message_id}")
        self.result = result


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
    # The sender is a number the channel itself reports (WhatsApp's wa_id), not one a person
    # typed: any possible number is kept (crm.normalise_provider_phone).
    sender_from_provider: bool = False

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


def engage_due_at(
    *, received_at: datetime | None, created_at: datetime, quiet_seconds: float
) -> datetime:
    """When the `ai.engage` job of an inbound message is due: the quiet period of the lead's
    stage (`StageAIConfig.quiet_seconds`) after the message, so that a burst of messages gets
    one answer.

    The message's time is when the lead sent it (`received_at`, the provider's timestamp), but
    never later than when it was stored (`created_at`): a provider clock ahead of ours does not
    delay the answer, and a message delivered late waits only what is left of its quiet period
    (nothing, if it came after it). `received_at` None means the message's own time is
    `created_at`. The inbound path enqueues the job due at this time and the engage handler
    waits until it, both through this function, so the two never disagree."""
    base = created_at if received_at is None or received_at > created_at else received_at
    return base + timedelta(seconds=quiet_seconds)


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


# A provider's message id is kept whole (messages.external_id is TEXT), but a unique index entry
# must fit in a PostgreSQL B-tree page (2,704 bytes with the company and channel): a longer id
# is stored as its SHA-256, and whole in the message's meta.
MAX_INDEXED_EXTERNAL_ID_BYTES = 2000
# Lead.name's column.
MAX_NAME_CHARS = 200


def storable_message(message: InboundMessage) -> InboundMessage:
    """The message as both databases store it, the same for both paths: a provider's text, name,
    ids and details with NUL characters removed and lone surrogates replaced, the name cut to
    its column, an id too long for the unique index replaced by its hash. The same message
    always becomes the same stored one, so a redelivery is still found (docs/reliability.md P1).
    What a person types through the API is refused instead (schemas.SafeStr)."""
    meta = storable_json(message.meta)
    external_id = message.external_id
    if external_id is not None:
        external_id = storable_text(external_id)
        encoded = external_id.encode()
        if len(encoded) > MAX_INDEXED_EXTERNAL_ID_BYTES:
            meta = {**meta, "external_id": external_id}
            external_id = f"sha256:{hashlib.sha256(encoded).hexdigest()}"
    name = storable_text(message.name)[:MAX_NAME_CHARS] if message.name else None
    user_id = message.external_user_id
    return dataclasses.replace(
        message,
        sender=storable_text(message.sender),
        text=storable_text(message.text),
        name=name or None,
        external_id=external_id,
        meta=meta,
        external_user_id=storable_text(user_id) if user_id is not None else None,
    )


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
    An opt-out keyword suppresses the contact and queues one confirmation, never an AI reply;
    any other message queues an `ai.engage` job due at `engage_due_at`, unless the AI is
    paused for the lead.
    """
    message = storable_message(message)
    channel = message.channel
    if message.sender.startswith("bsuid:"):
        value = message.sender  # WhatsApp users with a username and no phone number
    elif message.sender_from_provider:
        value = crm.normalise_provider_phone(message.sender, field="from")
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
    arrival = _Arrival(
        company_id=company_id,
        message=message,
        value=value,
        text=text,
        received_at=received_at,
        event_data={
            "channel": channel.value,
            "external_id": message.external_id,
            "kind": message.meta.get("type", "text"),
            "chars": len(text),
        },
        actor=actor,
        now=now,
    )
    if keyword is None and session.get_bind().dialect.name == "postgresql":
        return _receive_postgres(session, arrival)
    return _receive_orm(session, arrival, keyword=keyword)


@dataclass(frozen=True)
class _Arrival:
    """A message on its way in, normalised: what both paths write."""

    company_id: uuid.UUID
    message: InboundMessage
    value: str  # the contact as stored: E.164, lower-case email, or bsuid:...
    text: str
    received_at: datetime
    event_data: dict[str, Any]
    actor: str
    now: datetime

    def engage_run_at(self, stage_config: StageAIConfig) -> datetime:
        return engage_due_at(
            received_at=self.received_at,
            created_at=self.now,
            quiet_seconds=float(stage_config.quiet_seconds),
        )


# --- the ORM path (SQLite; keywords and companies without a pipeline on PostgreSQL) -----------


def _receive_orm(session: Session, arrival: _Arrival, *, keyword: str | None) -> ReceiveResultOut:
    message = arrival.message
    company_id = arrival.company_id
    # No look-up for a repeat first: the message's unique index finds it (DuplicateInbound),
    # and the rare redelivery costs a rolled-back transaction instead of every message an
    # extra query.
    sender = crm.find_or_create_sender(
        session,
        company_id=company_id,
        channel=message.channel,
        value=arrival.value,
        name=message.name,
        actor=arrival.actor,
        now=arrival.now,
        external_user_id=message.external_user_id,
    )
    message_id = insert_or_ignore(
        session,
        table_of(Message),
        {
            "company_id": company_id,
            "lead_id": sender.lead_id,
            "contact_id": sender.contact_id,
            "channel": message.channel.value,
            "direction": Direction.inbound.value,
            "text": arrival.text,
            "status": MessageStatus.received.value,
            "external_id": message.external_id,
            # An opt-out or opt-in keyword is a command, not a question for the AI.
            "meta": message.meta if keyword is None else {**message.meta, "opt_keyword": keyword},
            "created_at": arrival.now,
            "updated_at": arrival.now,
            "received_at": arrival.received_at,
        },
        conflict_on=("company_id", "channel", "external_id"),
    )
    if message_id is None:
        raise _duplicate(session, arrival)

    crm.note_inbound(
        session,
        contact_id=sender.contact_id,
        lead_id=sender.lead_id,
        received_at=arrival.received_at,
        now=arrival.now,
    )
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=sender.lead_id,
        type="InboundMessageReceived",
        data={"message_id": str(message_id), **arrival.event_data},
        actor=arrival.actor,
        now=arrival.now,
    )
    if keyword is not None:
        _apply_opt_keyword(
            session,
            keyword=keyword,
            company_id=company_id,
            lead_id=sender.lead_id,
            channel=message.channel,
            address=arrival.value,
            message_id=message_id,
            actor=arrival.actor,
            now=arrival.now,
        )
        return ReceiveResultOut(
            lead_id=sender.lead_id,
            message_id=message_id,
            job_id=None,
            lead_created=sender.lead_created,
            duplicate=False,
        )
    job_id: uuid.UUID | None = None
    if not sender.ai_paused:
        job_id, _ = enqueue_job(
            session,
            JobType.ai_engage,
            {"lead_id": str(sender.lead_id), "message_id": str(message_id)},
            company_id=company_id,
            lead_id=sender.lead_id,
            idempotency_key=engage_idempotency_key(message_id),
            now=arrival.now,
            run_at=arrival.engage_run_at(sender.stage_config),
        )
    return ReceiveResultOut(
        lead_id=sender.lead_id,
        message_id=message_id,
        job_id=job_id,
        lead_created=sender.lead_created,
        duplicate=False,
    )


# --- the PostgreSQL path: one statement after the sender's look-up ----------------------------

# On PostgreSQL a message is one statement with data-modifying CTEs (SQLite has none and takes
# the ORM path above): after the sender's look-up, either _RECORD_POSTGRES (a known contact) or
# _CREATE_POSTGRES (a new one: its lead, contact and LeadCreated event too). Every CTE after
# `m` runs only if the message went in, so a repeat of a provider's message id writes nothing.
# Both share the message, event and job parts.
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
    """Two round trips for any message: the sender's look-up, then one statement."""
    message = arrival.message
    sender = crm.find_sender(
        session,
        company_id=arrival.company_id,
        channel=message.channel,
        value=arrival.value,
        name=message.name,
        external_user_id=message.external_user_id,
    )
    if isinstance(sender, crm.NewSender):
        if sender.entry_stage_config is not None:
            created = _create_postgres(session, arrival, sender.entry_stage_config)
            if created is not None:
                return created
        # Another message from this number won the race, or the company has no pipeline yet.
        sender = crm.find_or_create_sender(
            session,
            company_id=arrival.company_id,
            channel=message.channel,
            value=arrival.value,
            name=message.name,
            actor=arrival.actor,
            now=arrival.now,
            external_user_id=message.external_user_id,
        )
    return _record_postgres(session, arrival, sender)


def _statement_parameters(
    session: Session,
    arrival: _Arrival,
    *,
    lead_id: uuid.UUID,
    contact_id: uuid.UUID,
    engage: bool,
    stage_config: StageAIConfig,
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
        run_at=arrival.engage_run_at(stage_config),
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


def _create_postgres(
    session: Session, arrival: _Arrival, entry_stage_config: StageAIConfig
) -> ReceiveResultOut | None:
    """A new contact's lead and first message in one statement; None when nothing was written
    (the number's contact was made by a concurrent message, or there is no pipeline)."""
    # Ids are time-ordered and a timeline sorts by them within one instant: LeadCreated first.
    lead_id, contact_id, created_event_id = new_id(), new_id(), new_id()
    parameters, job = _statement_parameters(
        session,
        arrival,
        lead_id=lead_id,
        contact_id=contact_id,
        engage=True,
        stage_config=entry_stage_config,
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


def _record_postgres(session: Session, arrival: _Arrival, sender: crm.Sender) -> ReceiveResultOut:
    parameters, job = _statement_parameters(
        session,
        arrival,
        lead_id=sender.lead_id,
        contact_id=sender.contact_id,
        engage=not sender.ai_paused,
        stage_config=sender.stage_config,
    )
    row = session.connection().execute(_RECORD_POSTGRES, parameters).one()
    if row.message_id is None:
        raise _duplicate(session, arrival)
    if row.job_id is not None:
        job_inserted(session, job)
    return ReceiveResultOut(
        lead_id=sender.lead_id,
        message_id=row.message_id,
        job_id=row.job_id,
        lead_created=sender.lead_created,
        duplicate=False,
    )


# --- both paths: a repeat of a provider's message id ------------------------------------------


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


# --- opt-out and opt-in keywords --------------------------------------------------------------


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
            source=SuppressionSource.keyword,
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
        append_lead_event(
            session,
            company_id=company_id,
            lead_id=lead_id,
            type="OptedIn",
            data={"channel": channel.value, "message_id": str(message_id)},
            actor=actor,
            now=now,
        )


def record_opt_out(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID | None,
    channel: Channel,
    address: str,
    message_id: uuid.UUID | None,
    source: str,
    actor: str,
    now: datetime,
    confirm: bool = True,
) -> bool:
    """Suppress the contact (an opt-out keyword, or a lead the AI understood asking to stop,
    or an unsubscribe link: no message, perhaps no lead) and queue the one confirmation it is
    owed when `confirm`. False: it had opted out already. An OptedOut event is appended for
    the lead when there is one, only for a new opt-out when there is no message behind it."""
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
    if lead_id is not None and (message_id is not None or created):
        append_lead_event(
            session,
            company_id=company_id,
            lead_id=lead_id,
            type="OptedOut",
            data={
                "channel": channel.value,
                **({"message_id": str(message_id)} if message_id is not None else {}),
                "first": created,
                "source": source,
            },
            actor=actor,
            now=now,
        )
    if created and confirm and lead_id is not None:
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
