"""Webhook subscriptions and their deliveries (docs/webhooks.md). Admin keys only: a URL may
carry a receiver's token, and a subscription can send the company's data anywhere."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging, SettingsDep
from shvya.schemas import AUTH_ERRORS, error_responses
from shvya.tenancy.auth import AdminKey
from shvya.webhooks import service
from shvya.webhooks.schemas import (
    RedeliveryOut,
    WebhookDeliveryPage,
    WebhookSubscriptionCreatedOut,
    WebhookSubscriptionIn,
    WebhookSubscriptionOut,
    WebhookSubscriptionPage,
    WebhookSubscriptionPatchIn,
)

router = APIRouter(tags=["webhooks"], responses=error_responses(*AUTH_ERRORS, 403))


@router.post(
    "/webhook-subscriptions",
    status_code=201,
    summary="Subscribe a URL to event types (admin); the answer holds the signing secret, "
    "shown this once",
)
def create_subscription(
    body: WebhookSubscriptionIn,
    session: DbSession,
    key: AdminKey,
    clock: ClockDep,
    settings: SettingsDep,
) -> WebhookSubscriptionCreatedOut:
    subscription, secret = service.create_subscription(
        session,
        company_id=key.company.id,
        url=body.url,
        events=[e.value for e in body.events],
        settings=settings,
        actor=key.actor,
        now=clock.now(),
    )
    shown = WebhookSubscriptionOut.model_validate(subscription).model_dump()
    return WebhookSubscriptionCreatedOut(**shown, secret=secret)


@router.get("/webhook-subscriptions", summary="The company's webhook subscriptions (admin)")
def list_subscriptions(session: DbSession, key: AdminKey, page: Paging) -> WebhookSubscriptionPage:
    rows, total = service.list_subscriptions(session, company_id=key.company.id, page=page)
    return WebhookSubscriptionPage.of(rows, total, page)


@router.get(
    "/webhook-subscriptions/{subscription_id}",
    summary="One webhook subscription (admin); never its secret",
    responses=error_responses(404),
)
def get_subscription(
    subscription_id: uuid.UUID, session: DbSession, key: AdminKey
) -> WebhookSubscriptionOut:
    return WebhookSubscriptionOut.model_validate(
        service.get_subscription(
            session, company_id=key.company.id, subscription_id=subscription_id
        )
    )


@router.patch(
    "/webhook-subscriptions/{subscription_id}",
    summary="Change a subscription's URL or events, pause it, or re-enable it (admin); "
    "re-enabling clears its failure count",
    responses=error_responses(404),
)
def update_subscription(
    subscription_id: uuid.UUID,
    body: WebhookSubscriptionPatchIn,
    session: DbSession,
    key: AdminKey,
    clock: ClockDep,
    settings: SettingsDep,
) -> WebhookSubscriptionOut:
    subscription = service.update_subscription(
        session,
        company_id=key.company.id,
        subscription_id=subscription_id,
        url=body.url,
        events=None if body.events is None else [e.value for e in body.events],
        active=body.active,
        settings=settings,
        actor=key.actor,
        now=clock.now(),
    )
    return WebhookSubscriptionOut.model_validate(subscription)


@router.delete(
    "/webhook-subscriptions/{subscription_id}",
    summary="Delete a subscription and its deliveries (admin); answers what was deleted",
    responses=error_responses(404),
)
def delete_subscription(
    subscription_id: uuid.UUID, session: DbSession, key: AdminKey, clock: ClockDep
) -> WebhookSubscriptionOut:
    subscription = service.get_subscription(
        session, company_id=key.company.id, subscription_id=subscription_id
    )
    shown = WebhookSubscriptionOut.model_validate(subscription)
    service.delete_subscription(
        session,
        company_id=key.company.id,
        subscription_id=subscription_id,
        actor=key.actor,
        now=clock.now(),
    )
    return shown


@router.get(
    "/webhook-subscriptions/{subscription_id}/deliveries",
    summary="A subscription's deliveries, newest first, with their attempts and response "
    "codes (admin)",
    responses=error_responses(404),
)
def list_deliveries(
    subscription_id: uuid.UUID, session: DbSession, key: AdminKey, page: Paging
) -> WebhookDeliveryPage:
    rows, total = service.list_deliveries(
        session, company_id=key.company.id, subscription_id=subscription_id, page=page
    )
    return WebhookDeliveryPage.of(rows, total, page)


@router.post(
    "/webhook-subscriptions/{subscription_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    summary="POST a delivery again, same event id, freshly signed (admin); done by a job. "
    "409 while the subscription is not active",
    responses=error_responses(404, 409),
)
def redeliver(
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: DbSession,
    key: AdminKey,
    clock: ClockDep,
) -> RedeliveryOut:
    delivery = service.redeliver(
        session,
        company_id=key.company.id,
        subscription_id=subscription_id,
        delivery_id=delivery_id,
        actor=key.actor,
        now=clock.now(),
    )
    assert delivery.job_id is not None
    return RedeliveryOut(id=delivery.id, job_id=delivery.job_id, status=delivery.status)
