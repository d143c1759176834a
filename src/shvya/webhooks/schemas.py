"""Shapes in and out of the webhook API (docs/webhooks.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from shvya.schemas import Page, RowOut, SafeStr, StrictInput, leave_out_or_set


class WebhookEvent(StrEnum):
    """The timeline's Event.type values a subscription may name (docs/webhooks.md, "Events")."""

    LeadCreated = "LeadCreated"
    LeadUpdated = "LeadUpdated"
    LeadAssigned = "LeadAssigned"
    StageChanged = "StageChanged"
    InboundMessageReceived = "InboundMessageReceived"
    OutboundMessageSent = "OutboundMessageSent"
    OutboundMessageFailed = "OutboundMessageFailed"
    OutboundMessageUnknown = "OutboundMessageUnknown"
    MessageStatusChanged = "MessageStatusChanged"
    SendRefused = "SendRefused"
    OptedOut = "OptedOut"
    OptedIn = "OptedIn"
    ContactSuppressed = "ContactSuppressed"
    MarketingConsentChanged = "MarketingConsentChanged"
    EmailBounced = "EmailBounced"
    EmailComplained = "EmailComplained"
    EmailUnsubscribed = "EmailUnsubscribed"
    HandoffRequested = "HandoffRequested"
    BANTUpdated = "BANTUpdated"
    SummaryUpdated = "SummaryUpdated"
    SequenceStopped = "SequenceStopped"
    WebhookSubscriptionDisabled = "WebhookSubscriptionDisabled"


WEBHOOK_EVENT_TYPES = tuple(e.value for e in WebhookEvent)

URL_DESCRIPTION = (
    "Where deliveries are POSTed: https, a public address (checked now and again after DNS "
    "resolution at every delivery). Redirects are not followed."
)
EVENTS_DESCRIPTION = "The event types to deliver (the timeline's Event.type names), at least one."


def _distinct(events: list[WebhookEvent]) -> list[WebhookEvent]:
    return list(dict.fromkeys(events))


class WebhookSubscriptionIn(StrictInput):
    url: SafeStr = Field(min_length=1, max_length=2048, description=URL_DESCRIPTION)
    events: list[WebhookEvent] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENT_TYPES) * 2, description=EVENTS_DESCRIPTION
    )

    _distinct_events = field_validator("events")(_distinct)


class WebhookSubscriptionPatchIn(StrictInput):
    url: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=URL_DESCRIPTION,
        json_schema_extra=leave_out_or_set,
    )
    events: list[WebhookEvent] | None = Field(
        default=None,
        min_length=1,
        max_length=len(WEBHOOK_EVENT_TYPES) * 2,
        description=EVENTS_DESCRIPTION,
        json_schema_extra=leave_out_or_set,
    )
    active: bool | None = Field(
        default=None,
        description="false pauses deliveries; true re-enables (and clears the failure count).",
        json_schema_extra=leave_out_or_set,
    )

    @field_validator("events")
    @classmethod
    def _distinct_events(cls, events: list[WebhookEvent] | None) -> list[WebhookEvent] | None:
        return None if events is None else _distinct(events)

    @field_validator("url", "events", "active", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class WebhookSubscriptionOut(RowOut):
    url: str
    events: list[str]
    active: bool = Field(description="false: paused by a person or disabled after failures")
    disabled_reason: str | None = Field(description="Why it was disabled, when it was")
    consecutive_failures: int = Field(description="Deliveries in a row that ended failed")
    created_at: datetime
    updated_at: datetime


class WebhookSubscriptionCreatedOut(WebhookSubscriptionOut):
    secret: str = Field(
        description="The signing secret. Shown only in this answer: keep it now; no other "
        "answer ever shows it again."
    )


class WebhookAttemptOut(BaseModel):
    at: datetime
    response_code: int | None = Field(description="The receiver's HTTP status; null: none")
    error: str | None
    duration_ms: int


class WebhookDeliveryOut(RowOut):
    subscription_id: uuid.UUID
    event_id: uuid.UUID = Field(description="Also the delivery body's id: receivers dedupe on it")
    event_type: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    last_response_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptOut] = Field(description="The last attempts, newest last")
    next_attempt_at: datetime | None
    job_id: uuid.UUID | None = Field(description="The job delivering it (GET /jobs/{id})")
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryPage(Page):
    items: list[WebhookDeliveryOut]


class WebhookSubscriptionPage(Page):
    items: list[WebhookSubscriptionOut]


class RedeliveryOut(RowOut):
    """The delivery, pending again, and the job that POSTs it."""

    job_id: uuid.UUID
    status: str
