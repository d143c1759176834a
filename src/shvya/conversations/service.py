from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

# The inbound path lives in inbound.py; other domains reach it through this module.
from shvya.conversations.inbound import MAX_CLOCK_SKEW as MAX_CLOCK_SKEW
from shvya.conversations.inbound import DuplicateInbound as DuplicateInbound
from shvya.conversations.inbound import InboundMessage as InboundMessage
from shvya.conversations.inbound import engage_due_at as engage_due_at
from shvya.conversations.inbound import engage_idempotency_key as engage_idempotency_key
from shvya.conversations.inbound import opt_out_keyword as opt_out_keyword
from shvya.conversations.inbound import receive_inbound_message as receive_inbound_message
from shvya.conversations.inbound import record_opt_out as record_opt_out
from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.conversations.schemas import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from shvya.conversations.schemas import HistoryIn, HistoryOut
from shvya.crm import service as crm
from shvya.crm.models import Channel
from shvya.db.base import table_of
from shvya.db.queries import count_rows, get_for_company, page_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import InvalidInput, NotFound
from shvya.events.service import append_lead_event
from shvya.jobs.service import JobType, enqueue_job
from shvya.schemas import PageRequest

# Delivery statuses only move forward; `failed` is final (docs/whatsapp.md 1.6).
STATUS_RANK = {
    MessageStatus.queued: 0,
    MessageStatus.sending: 1,
    MessageStatus.unknown: 2,
    MessageStatus.sent: 3,
    MessageStatus.delivered: 4,
    MessageStatus.read: 5,
}


class MessageNotFound(NotFound):
    code = "message_not_found"


def list_lead_messages(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[Message], int]:
    """A conversation, oldest first."""
    crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    return page_of(
        session,
        Message,
        *_of_lead(company_id, lead_id),
        order_by=(Message.created_at, Message.id),
        page=page,
    )


def get_message(session: Session, *, company_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    return get_for_company(
        session, Message, message_id, company_id=company_id, missing=MessageNotFound
    )


def _of_lead(
    company_id: uuid.UUID, lead_id: uuid.UUID, direction: Direction | None = None
) -> list[Any]:
    """The conditions that pick a lead's messages, or only those in one direction."""
    where = [Message.company_id == company_id, Message.lead_id == lead_id]
    if direction is not None:
        where.append(Message.direction == direction.value)
    return where


# What we send that does not answer the lead's messages.
NOT_AN_ANSWER = frozenset({"bumpup", "opt_out_confirmation"})


def _answerable(meta: dict[str, Any] | None) -> bool:
    """Whether an inbound message is one an AI reply answers: not imported history, not an
    opt-in or opt-out keyword, not an automatic reply (docs/email-inbound.md)."""
    meta = meta or {}
    return not (meta.get("imported") or meta.get("opt_keyword") or meta.get("auto_submitted"))


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
            *_of_lead(company_id, lead_id, Direction.outbound),
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
    statement = select(Message).where(*_of_lead(company_id, lead_id, Direction.inbound))
    answered: set[str] = set()
    if last_out is not None:
        # At or after our last message (clocks tick coarsely), less what it answered.
        statement = statement.where(Message.created_at >= last_out.created_at)
        answered = {str(i) for i in (last_out.meta or {}).get("answers", [])}
    rows = session.scalars(
        statement.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    ).all()
    return [m for m in reversed(rows) if str(m.id) not in answered and _answerable(m.meta)]


def newest_answerable_inbound(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID
) -> uuid.UUID | None:
    """The id of the lead's newest message an AI reply would answer (imported history and
    opt-in or opt-out keywords are not), or None: the cheap check, just before a reply is
    sent, that no newer message arrived while it was written."""
    rows = session.execute(
        select(Message.id, Message.meta)
        .where(*_of_lead(company_id, lead_id, Direction.inbound))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(20)
    ).all()
    return next((row.id for row in rows if _answerable(row.meta)), None)


@dataclass(frozen=True)
class Resumed:
    """What resuming the AI for a lead queued: the messages one AI reply answers, its job."""

    pending: int
    job_id: uuid.UUID | None


def resume_ai(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, actor: str, now: datetime
) -> Resumed:
    """Let the AI answer the lead again, starting with what no one has answered yet.

    The lead's messages since our last answer (`unanswered_inbound`: not imported history, not
    opt-in/out keywords) get one `ai.engage` run, keyed on the newest of them: ai.engage
    answers all pending messages as one turn, and a burst's job for an older message would end
    as "coalesced". The key differs from the inbound path's (whose job for that message
    already ended as "ai_paused") and is the same on every resume, so resuming twice queues
    one job, and once the reply is sent nothing is pending: nothing is answered twice
    (docs/ai.md 5.5)."""
    lead = crm.get_lead(session, company_id=company_id, lead_id=lead_id)
    crm.lock_lead(session, lead)  # two resumes at once: one AIResumed
    crm.set_ai_paused(session, lead=lead, paused=False, reason="resumed", actor=actor, now=now)
    pending = unanswered_inbound(session, company_id=company_id, lead_id=lead_id)
    if not pending:
        return Resumed(pending=0, job_id=None)
    newest = pending[-1]
    job_id, _ = enqueue_job(
        session,
        JobType.ai_engage,
        {"lead_id": str(lead_id), "message_id": str(newest.id)},
        company_id=company_id,
        lead_id=lead_id,
        idempotency_key=f"ai.engage:resume:{newest.id}",
        now=now,
    )
    return Resumed(pending=len(pending), job_id=job_id)


def recent_messages(
    session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID, limit: int
) -> list[Message]:
    """The lead's last `limit` messages, imported history included, oldest first."""
    rows = session.scalars(
        select(Message)
        .where(*_of_lead(company_id, lead_id), Message.status != MessageStatus.failed.value)
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
        .where(*_of_lead(company_id, lead_id, Direction.outbound))
        .order_by(Message.created_at, Message.id)
    ).all()
    return [m for m in rows if m.meta.get("purpose") == purpose]


def count_inbound(session: Session, *, company_id: uuid.UUID, lead_id: uuid.UUID) -> int:
    return count_rows(session, Message, *_of_lead(company_id, lead_id, Direction.inbound))


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
        contact = crm.lead_contact(session, company_id=company_id, lead_id=lead_id, channel=channel)
    else:
        contact = crm.lead_contact(session, company_id=company_id, lead_id=lead_id)
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
        crm.record_lead_change(
            session,
            lead,
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
    """Our last message to this lead on this channel that may have reached them: not a
    failed one, nor one still queued (a person's message waiting for its send job); when it
    was sent, or written if it was never marked sent."""
    last: datetime | None = session.scalar(
        select(func.max(func.coalesce(Message.sent_at, Message.created_at))).where(
            Message.company_id == company_id,
            Message.lead_id == lead_id,
            Message.channel == channel,
            Message.direction == Direction.outbound.value,
            Message.status.not_in((MessageStatus.failed.value, MessageStatus.queued.value)),
        )
    )
    return last


def outbound_count_since(
    session: Session, *, channel_account_id: uuid.UUID, since: datetime
) -> int:
    return count_rows(
        session,
        Message,
        Message.channel_account_id == channel_account_id,
        Message.direction == Direction.outbound.value,
        Message.created_at >= since,
        Message.status != MessageStatus.queued.value,
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
    append_lead_event(
        session,
        company_id=company_id,
        lead_id=message.lead_id,
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
    status: MessageStatus = MessageStatus.sending,
    message_id: uuid.UUID | None = None,
) -> Message:
    """An outbound row: `sending` when the send is under way (made durable before the
    provider call), `queued` when it is written ahead of its send job (a person's message)."""
    message = Message(
        **({"id": message_id} if message_id is not None else {}),
        company_id=company_id,
        lead_id=lead_id,
        contact_id=contact_id,
        channel=channel,
        channel_account_id=channel_account_id,
        direction=Direction.outbound.value,
        text=text,
        template_id=template_id,
        status=status.value,
        send_key=send_key,
        meta=meta,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    return message


def resend_outbound_message(
    session: Session,
    *,
    message_id: uuid.UUID,
    text: str,
    template_id: uuid.UUID | None,
    meta: dict[str, Any],
    now: datetime,
) -> None:
    """A message whose send failed in a way worth retrying goes again: `sending` once more,
    with the content of this attempt, and the last attempt's error cleared."""
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(
            status=MessageStatus.sending.value,
            text=text,
            template_id=template_id,
            meta=meta,
            error=None,
            updated_at=now,
        )
    )


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
