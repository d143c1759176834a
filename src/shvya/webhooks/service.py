"""Signed outbound webhooks: subscriptions, the fan-out of events into deliveries, and each
delivery's attempts (docs/webhooks.md).

Nothing on the hot paths knows about webhooks. Events are read back from the event log by a
due source the scheduler calls (`due_deliveries`), which writes one delivery per (subscription,
event) and one `webhook.reminder` job per delivery; the job POSTs it (`shvya.webhooks.tasks`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session

from shvya.config import Environment, Settings
from shvya.crypto import SecretUnreadable, decrypt_secret, encrypt_secret
from shvya.db.base import table_of
from shvya.db.queries import get_for_company, page_of
from shvya.db.statements import insert_or_ignore
from shvya.errors import Conflict, NotFound
from shvya.events.models import Event
from shvya.events.service import append_company_event
from shvya.jobs.service import BACKOFF_SECONDS, JobType, enqueue_job
from shvya.schemas import PageRequest
from shvya.webhooks import safety
from shvya.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookSubscription

# docs/webhooks.md, "The fan-out": each scan looks this far behind its cursor again, because
# on PostgreSQL transactions commit in another order than their events' created_at.
FANOUT_LAG = timedelta(seconds=60)
# Subscriptions read (and locked) per batch of the fan-out.
SUBSCRIPTIONS_PER_BATCH = 100
# docs/webhooks.md, "Retries": 8 attempts over about 36 minutes (5 s, 20 s, 60 s, 3 min, then
# 10 min between the rest).
DELIVERY_MAX_ATTEMPTS = 8
ATTEMPT_LOG_SIZE = 10
ERROR_CHARS = 500
SIGNATURE_HEADER = "Shvya-Signature"
EVENT_ID_HEADER = "Shvya-Event-Id"
USER_AGENT = "SHVYA-Webhooks/1"


class WebhookSubscriptionNotFound(NotFound):
    code = "webhook_subscription_not_found"


class WebhookDeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class WebhookSubscriptionInactive(Conflict):
    code = "webhook_subscription_inactive"


# --- signing ----------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature_header(secret: str, body: bytes, *, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: Stripe's scheme."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def public_url(url: str) -> str:
    """What events and logs show of a URL: no query string (receivers put tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _check_url(url: str, settings: Settings) -> None:
    safety.check_url(
        url,
        allow_private=settings.webhook_allow_private,
        production=settings.env is Environment.production,
    )


# --- subscriptions ----------------------------------------------------------------------------


def create_subscription(
    session: Session,
    *,
    company_id: uuid.UUID,
    url: str,
    events: Sequence[str],
    settings: Settings,
    actor: str,
    now: datetime,
) -> tuple[WebhookSubscription, str]:
    """A new subscription and its signing secret (the only time the secret leaves SHVYA).
    Events from now on are delivered; earlier ones never are."""
    _check_url(url, settings)
    secret = new_secret()
    subscription = WebhookSubscription(
        company_id=company_id,
        url=url,
        events=list(events),
        secret_encrypted=encrypt_secret(secret, secret_key=settings.secret_key.get_secret_value()),
        active=True,
        consecutive_failures=0,
        scanned_until=now,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    session.flush()
    append_company_event(
        session,
        company_id=company_id,
        type="WebhookSubscriptionCreated",
        data={
            "subscription_id": str(subscription.id),
            "url": public_url(url),
            "events": list(events),
        },
        actor=actor,
        now=now,
    )
    return subscription, secret


def get_subscription(
    session: Session, *, company_id: uuid.UUID, subscription_id: uuid.UUID
) -> WebhookSubscription:
    return get_for_company(
        session,
        WebhookSubscription,
        subscription_id,
        company_id=company_id,
        missing=WebhookSubscriptionNotFound,
    )


def list_subscriptions(
    session: Session, *, company_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[WebhookSubscription], int]:
    return page_of(
        session,
        WebhookSubscription,
        WebhookSubscription.company_id == company_id,
        order_by=(WebhookSubscription.created_at, WebhookSubscription.id),
        page=page,
    )


def update_subscription(
    session: Session,
    *,
    company_id: uuid.UUID,
    subscription_id: uuid.UUID,
    url: str | None,
    events: Sequence[str] | None,
    active: bool | None,
    settings: Settings,
    actor: str,
    now: datetime,
) -> WebhookSubscription:
    """Change the URL, the events or whether it is active. Re-enabling clears the failure
    count and starts again from now: events of the time it was off are not delivered."""
    subscription = get_subscription(session, company_id=company_id, subscription_id=subscription_id)
    changes: dict[str, Any] = {}
    if url is not None and url != subscription.url:
        _check_url(url, settings)
        subscription.url = url
        changes["url"] = public_url(url)
    if events is not None and list(events) != subscription.events:
        subscription.events = list(events)
        changes["events"] = list(events)
    if active is not None and active != subscription.active:
        subscription.active = active
        changes["active"] = active
        if active:
            subscription.consecutive_failures = 0
            subscription.disabled_reason = None
            subscription.scanned_until = now
        else:
            subscription.disabled_reason = f"paused by {actor}"
    elif active:
        # Already active: re-enabling still clears the count, as asked.
        subscription.consecutive_failures = 0
    if changes:
        subscription.updated_at = now
        append_company_event(
            session,
            company_id=company_id,
            type="WebhookSubscriptionUpdated",
            data={"subscription_id": str(subscription.id), **changes},
            actor=actor,
            now=now,
        )
    return subscription


def delete_subscription(
    session: Session,
    *,
    company_id: uuid.UUID,
    subscription_id: uuid.UUID,
    actor: str,
    now: datetime,
) -> None:
    """Gone, with its deliveries; a delivery's job that runs later finds nothing to send."""
    subscription = get_subscription(session, company_id=company_id, subscription_id=subscription_id)
    session.execute(
        table_of(WebhookDelivery)
        .delete()
        .where(
            WebhookDelivery.company_id == company_id,
            WebhookDelivery.subscription_id == subscription.id,
        )
    )
    append_company_event(
        session,
        company_id=company_id,
        type="WebhookSubscriptionDeleted",
        data={"subscription_id": str(subscription.id), "url": public_url(subscription.url)},
        actor=actor,
        now=now,
    )
    session.delete(subscription)


# --- deliveries -------------------------------------------------------------------------------


def list_deliveries(
    session: Session, *, company_id: uuid.UUID, subscription_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[WebhookDelivery], int]:
    """The subscription's deliveries, newest first."""
    get_subscription(session, company_id=company_id, subscription_id=subscription_id)
    return page_of(
        session,
        WebhookDelivery,
        WebhookDelivery.company_id == company_id,
        WebhookDelivery.subscription_id == subscription_id,
        order_by=(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()),
        page=page,
    )


def get_delivery(
    session: Session, *, company_id: uuid.UUID, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    delivery = session.scalars(
        select(WebhookDelivery).filter_by(
            id=delivery_id, company_id=company_id, subscription_id=subscription_id
        )
    ).first()
    if delivery is None:
        raise WebhookDeliveryNotFound(f"webhook delivery {delivery_id} not found")
    return delivery


def _enqueue_delivery(
    session: Session, delivery: WebhookDelivery | dict[str, Any], *, now: datetime
) -> tuple[uuid.UUID, bool]:
    """The job that POSTs the delivery; keyed on (delivery, attempts so far), so a repeated
    fan-out or a double click on redeliver makes one job."""
    if isinstance(delivery, WebhookDelivery):
        delivery_id, company_id, attempts = delivery.id, delivery.company_id, delivery.attempts
    else:
        delivery_id, company_id, attempts = delivery["id"], delivery["company_id"], 0
    return enqueue_job(
        session,
        JobType.webhook_reminder,
        {"delivery_id": str(delivery_id)},
        company_id=company_id,
        now=now,
        idempotency_key=f"webhook:{delivery_id}:{attempts}",
        max_attempts=DELIVERY_MAX_ATTEMPTS,
    )


def redeliver(
    session: Session,
    *,
    company_id: uuid.UUID,
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
    actor: str,
    now: datetime,
) -> WebhookDelivery:
    """POST the delivery again (same event id, a fresh signature), whatever became of it."""
    subscription = get_subscription(session, company_id=company_id, subscription_id=subscription_id)
    delivery = get_delivery(
        session, company_id=company_id, subscription_id=subscription_id, delivery_id=delivery_id
    )
    if not subscription.active:
        raise WebhookSubscriptionInactive(
            "the subscription is not active: re-enable it first "
            f'(PATCH /webhook-subscriptions/{subscription.id} with {{"active": true}})'
        )
    job_id, created = _enqueue_delivery(session, delivery, now=now)
    delivery.status = DeliveryStatus.pending.value
    delivery.job_id = job_id
    delivery.next_attempt_at = now
    if created:
        append_company_event(
            session,
            company_id=company_id,
            type="WebhookRedeliveryRequested",
            data={
                "subscription_id": str(subscription.id),
                "delivery_id": str(delivery.id),
                "event_id": str(delivery.event_id),
            },
            actor=actor,
            now=now,
        )
    return delivery


# --- the fan-out: a due source of the scheduler -----------------------------------------------


class _DueDeliveries:
    """DueSource (shvya.sequences.scheduler): the deliveries owed for events since each active
    subscription's cursor, one `webhook.reminder` job each (docs/webhooks.md, "The fan-out")."""

    name = "webhook_deliveries"

    def __call__(self, session: Session, *, now: datetime, limit: int) -> int:
        return fan_out(session, now=now, limit=limit)


due_deliveries = _DueDeliveries()


def fan_out(session: Session, *, now: datetime, limit: int) -> int:
    """Write up to `limit` new deliveries (and their jobs) for events up to `now`; returns how
    many. Subscriptions are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL, so schedulers
    running at once take different ones; the unique (subscription, event) and the jobs'
    idempotency keys make a repeated scan write nothing twice."""
    enqueued = 0
    skip: set[uuid.UUID] = set()
    while enqueued < limit:
        batch = session.scalars(
            select(WebhookSubscription)
            .where(
                WebhookSubscription.active.is_(True),
                WebhookSubscription.scanned_until < now,
                *([WebhookSubscription.id.not_in(skip)] if skip else []),
            )
            .order_by(WebhookSubscription.scanned_until, WebhookSubscription.id)
            .limit(SUBSCRIPTIONS_PER_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not batch:
            break
        for subscription in batch:
            skip.add(subscription.id)
            enqueued += _scan(session, subscription, now=now, limit=limit - enqueued)
            if enqueued >= limit:
                break
    return enqueued


def _scan(session: Session, subscription: WebhookSubscription, *, now: datetime, limit: int) -> int:
    delivery = WebhookDelivery
    rows = session.execute(
        select(Event.id, Event.type, Event.created_at)
        .where(
            Event.company_id == subscription.company_id,
            Event.type.in_(subscription.events),
            Event.created_at > subscription.scanned_until - FANOUT_LAG,
            Event.created_at >= subscription.created_at,
            Event.created_at <= now,
            ~exists().where(
                and_(delivery.subscription_id == subscription.id, delivery.event_id == Event.id)
            ),
        )
        .order_by(Event.created_at, Event.id)
        .limit(limit)
    ).all()
    written = 0
    table = table_of(WebhookDelivery)
    for event_id, event_type, _ in rows:
        values = {
            "company_id": subscription.company_id,
            "subscription_id": subscription.id,
            "event_id": event_id,
            "event_type": event_type,
            "status": DeliveryStatus.pending.value,
            "attempts": 0,
            "attempt_log": [],
            "next_attempt_at": now,
            "created_at": now,
        }
        delivery_id = insert_or_ignore(
            session, table, values, conflict_on=("subscription_id", "event_id")
        )
        if delivery_id is None:
            continue  # another scan wrote it
        job_id, _ = _enqueue_delivery(
            session, {"id": delivery_id, "company_id": subscription.company_id}, now=now
        )
        session.execute(update(table).where(table.c.id == delivery_id).values(job_id=job_id))
        written += 1
    # Truncated: resume after the last event taken; else everything up to now is done.
    subscription.scanned_until = rows[-1][2] if len(rows) == limit and rows else now
    return written


# --- one delivery's attempt (the webhook.reminder job) ----------------------------------------


@dataclass(frozen=True)
class PreparedDelivery:
    delivery_id: uuid.UUID
    url: str
    body: bytes
    headers: dict[str, str]


def event_body(event: Event) -> bytes:
    """The delivery's body: {"id", "type", "created_at", "company_id", "data"}; `data` is the
    event's own, with `lead_id` when the event is on a lead's timeline."""
    data = dict(event.data or {})
    if event.entity_type == "lead":
        data.setdefault("lead_id", str(event.entity_id))
    document = {
        "id": str(event.id),
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "company_id": str(event.company_id),
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def prepare_delivery(
    session: Session,
    *,
    company_id: uuid.UUID,
    delivery_id: uuid.UUID,
    job_id: uuid.UUID,
    settings: Settings,
    now: datetime,
) -> PreparedDelivery | str:
    """The signed request for a delivery's next attempt, or why there is none to make."""
    delivery = session.scalars(
        select(WebhookDelivery).filter_by(id=delivery_id, company_id=company_id)
    ).first()
    if delivery is None:
        return "delivery_gone"  # its subscription was deleted
    if delivery.job_id is not None and delivery.job_id != job_id:
        return "superseded"  # a redelivery's job has taken over
    if delivery.status == DeliveryStatus.failed.value and delivery.job_id == job_id:
        # Its own dead job, put back by `shvya dlq replay`: a new round of attempts.
        delivery.status = DeliveryStatus.pending.value
    elif delivery.status != DeliveryStatus.pending.value:
        return f"already_{delivery.status}"
    subscription = session.get_one(WebhookSubscription, delivery.subscription_id)
    if not subscription.active:
        _settle(delivery, DeliveryStatus.failed, error="the subscription is not active", now=now)
        return "subscription_inactive"
    event = session.scalars(
        select(Event).filter_by(id=delivery.event_id, company_id=company_id)
    ).first()
    if event is None:
        _settle(delivery, DeliveryStatus.failed, error="the event no longer exists", now=now)
        return "event_gone"
    try:
        secret = decrypt_secret(
            subscription.secret_encrypted, secret_key=settings.secret_key.get_secret_value()
        )
    except SecretUnreadable as exc:
        _settle(delivery, DeliveryStatus.failed, error=str(exc), now=now)
        return "secret_unreadable"
    body = event_body(event)
    timestamp = int(now.timestamp())
    return PreparedDelivery(
        delivery_id=delivery.id,
        url=subscription.url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(secret, body, timestamp=timestamp),
            EVENT_ID_HEADER: str(event.id),
            "Shvya-Delivery-Id": str(delivery.id),
        },
    )


def _settle(
    delivery: WebhookDelivery, status: DeliveryStatus, *, error: str | None, now: datetime
) -> None:
    delivery.status = status.value
    delivery.next_attempt_at = None
    if error is not None:
        delivery.last_error = error[:ERROR_CHARS]
    if status is DeliveryStatus.delivered:
        delivery.delivered_at = now


@dataclass(frozen=True)
class AttemptRecord:
    status: DeliveryStatus
    subscription_disabled: bool


def record_attempt(
    session: Session,
    *,
    company_id: uuid.UUID,
    delivery_id: uuid.UUID,
    attempt: safety.Attempt,
    job_attempts: int,
    final: bool,
    settings: Settings,
    now: datetime,
) -> AttemptRecord | None:
    """What one POST came to, on the delivery and its subscription: delivered; pending again
    (the queue retries); or failed, counted against the subscription, which is disabled with a
    WebhookSubscriptionDisabled event at SHVYA_WEBHOOK_DISABLE_AFTER_FAILURES in a row.
    None: the delivery is gone (its subscription was deleted meanwhile)."""
    delivery = session.scalars(
        select(WebhookDelivery).filter_by(id=delivery_id, company_id=company_id)
    ).first()
    if delivery is None:
        return None
    delivery.attempts += 1
    delivery.last_response_code = attempt.response_code
    delivery.last_error = None if attempt.error is None else attempt.error[:ERROR_CHARS]
    entry = {
        "at": now.isoformat(),
        "response_code": attempt.response_code,
        "error": delivery.last_error,
        "duration_ms": attempt.duration_ms,
    }
    delivery.attempt_log = [*(delivery.attempt_log or []), entry][-ATTEMPT_LOG_SIZE:]
    subscriptions = table_of(WebhookSubscription)
    if attempt.delivered:
        _settle(delivery, DeliveryStatus.delivered, error=None, now=now)
        session.execute(
            update(subscriptions)
            .where(subscriptions.c.id == delivery.subscription_id)
            .values(consecutive_failures=0)
        )
        return AttemptRecord(DeliveryStatus.delivered, subscription_disabled=False)
    if not (final or attempt.refused):
        wait = BACKOFF_SECONDS[min(max(job_attempts, 1), len(BACKOFF_SECONDS)) - 1]
        delivery.next_attempt_at = now + timedelta(seconds=wait)
        return AttemptRecord(DeliveryStatus.pending, subscription_disabled=False)
    _settle(delivery, DeliveryStatus.failed, error=None, now=now)
    failures = session.execute(
        update(subscriptions)
        .where(subscriptions.c.id == delivery.subscription_id)
        .values(consecutive_failures=subscriptions.c.consecutive_failures + 1)
        .returning(subscriptions.c.consecutive_failures, subscriptions.c.active)
    ).one()
    disabled = False
    if failures.active and failures.consecutive_failures >= settings.webhook_disable_after_failures:
        disabled = _disable(
            session,
            company_id=company_id,
            subscription_id=delivery.subscription_id,
            failures=failures.consecutive_failures,
            last_error=delivery.last_error,
            now=now,
        )
    return AttemptRecord(DeliveryStatus.failed, subscription_disabled=disabled)


def _disable(
    session: Session,
    *,
    company_id: uuid.UUID,
    subscription_id: uuid.UUID,
    failures: int,
    last_error: str | None,
    now: datetime,
) -> bool:
    subscriptions = table_of(WebhookSubscription)
    reason = f"{failures} deliveries in a row failed"
    changed = session.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id, subscriptions.c.active.is_(True))
        .values(active=False, disabled_reason=reason, updated_at=now)
        .returning(subscriptions.c.url)
    ).first()
    if changed is None:
        return False  # another delivery's run disabled it first
    append_company_event(
        session,
        company_id=company_id,
        type="WebhookSubscriptionDisabled",
        data={
            "subscription_id": str(subscription_id),
            "url": public_url(changed.url),
            "consecutive_failures": failures,
            "reason": reason,
            "last_error": last_error,
        },
        now=now,
    )
    return True
