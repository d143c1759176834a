"""A company's webhook subscriptions and the deliveries of its events to them
(docs/webhooks.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow

# A JSON list of strings (the subscribed event types); JSONB on PostgreSQL.
JSONList = JSON().with_variant(JSONB(), "postgresql")


class DeliveryStatus(StrEnum):
    pending = "pending"  # a job will (or will again) POST it
    delivered = "delivered"  # the receiver answered 2xx
    failed = "failed"  # every attempt failed, or the subscription was off when its turn came


class WebhookSubscription(IdMixin, Base):
    """A URL that is POSTed the company's events of the listed types, signed with `secret`."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index(None, "active", "scanned_until"),)

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    # Event.type values (shvya.webhooks.schemas.WEBHOOK_EVENT_TYPES).
    events: Mapped[list[str]] = mapped_column(JSONList, default=list)
    # The signing secret, encrypted with shvya.crypto.encrypt_secret; shown once, at creation.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    # Deliveries in a row that ended failed; a delivered one resets it, so does re-enabling.
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    # The fan-out's cursor: events up to here (less the lag window) have their deliveries.
    scanned_until: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(IdMixin, Base):
    """One event owed to one subscription, and how its attempts went."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index(None, "company_id", "subscription_id", "created_at"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    # HTTP attempts made so far (all its jobs together).
    attempts: Mapped[int] = mapped_column(default=0)
    last_response_code: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    # The last attempts, newest last: {"at", "response_code", "error", "duration_ms"}.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSONList, default=list)
    # When the queue will try again (an estimate: the queue's backoff has jitter).
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    # The job that delivers it now (the latest one, after a redelivery).
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
