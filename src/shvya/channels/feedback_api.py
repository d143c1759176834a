"""Email feedback webhooks (POST /webhooks/ses, POST /webhooks/sendgrid) and each sending
domain's health (docs/email-feedback.md).

Signatures are checked on the delivery before anything is read into the database; a 200 is
answered only after the delivery's transaction committed, so the provider redelivers what we
did not keep, and a redelivery is a no-op (unique provider event ids).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from email.utils import parseaddr
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shvya.channels import feedback
from shvya.clock import Clock
from shvya.config import Settings
from shvya.db.session import DbSession, unit_of_work
from shvya.deps import ClockDep, SettingsDep
from shvya.errors import Forbidden
from shvya.schemas import AUTH_ERRORS, error_responses
from shvya.tenancy.auth import AdminKey, CurrentKey
from shvya.tenancy.models import Role

logger = logging.getLogger(__name__)

webhooks_router = APIRouter(prefix="/webhooks", tags=["webhooks"])
router = APIRouter(tags=["channels"], responses=error_responses(*AUTH_ERRORS))


class FeedbackAck(BaseModel):
    ok: bool
    # Events kept by this delivery (0 for a redelivery or a subscription message).
    recorded: int


async def raw_body(request: Request) -> bytes:
    return await request.body()


@webhooks_router.post(
    "/ses",
    summary="Amazon SES bounces, complaints and deliveries, delivered by SNS (signed)",
    responses=error_responses(400, 403, 404, 409, 413),
)
async def receive_ses_webhook(
    body: Annotated[bytes, Depends(raw_body)],
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
) -> FeedbackAck:
    envelope = feedback.parse_sns_envelope(body)
    # Fetches the certificate (cached per URL) and visits SubscribeURL: blocking, so in a thread.
    recorded = await run_in_threadpool(_process_sns, request, envelope, settings, clock)
    logger.info("ses.webhook", extra={"type": envelope["Type"], "recorded": recorded})
    return FeedbackAck(ok=True, recorded=recorded)


def _process_sns(
    request: Request, envelope: dict[str, Any], settings: Settings, clock: Clock
) -> int:
    feedback.verify_sns(envelope, settings)
    factory = request.app.state.session_factory
    with factory() as session:
        known = bool(feedback.accounts_for_topic(session, envelope["TopicArn"]))
    if not known:
        raise feedback.UnknownTopic(
            'no email account lists this TopicArn: add it to the account\'s config "sns_topic_arns"'
        )
    if envelope["Type"] == "SubscriptionConfirmation":
        feedback.confirm_subscription(envelope, settings)
        return 0
    if envelope["Type"] == "UnsubscribeConfirmation":
        return 0
    try:
        event = json.loads(envelope["Message"])
    except (ValueError, RecursionError):
        raise feedback.BadFeedback("the notification's Message is not SES event JSON") from None
    if not isinstance(event, dict):
        raise feedback.BadFeedback("the notification's Message is not an SES event object")
    now = clock.now()
    items = feedback.ses_feedback(envelope["MessageId"], event, now)
    with unit_of_work(factory) as session:
        company_id = _company_for(session, envelope["TopicArn"], event)
        if company_id is None:
            return 0
        return sum(
            feedback.record(session, company_id=company_id, item=item, settings=settings, now=now)
            for item in items
        )


def _company_for(session: DbSession, topic_arn: str, event: dict[str, Any]) -> uuid.UUID | None:
    """The company of the account that sent the mail, among those listing the topic; a topic
    listed by more than one company's accounts is only trusted for a matching sender."""
    accounts = feedback.accounts_for_topic(session, topic_arn)
    mail = event.get("mail") if isinstance(event.get("mail"), dict) else {}
    source = parseaddr(str((mail or {}).get("source") or ""))[1].lower()
    for account in accounts:
        if source and account.external_id.lower() == source:
            return account.company_id
    companies = {a.company_id for a in accounts}
    return companies.pop() if len(companies) == 1 else None


@webhooks_router.post(
    "/sendgrid",
    summary="SendGrid's signed Event Webhook: bounces, drops, spam reports, unsubscribes",
    responses=error_responses(400, 403, 404, 413, 422),
)
async def receive_sendgrid_webhook(
    body: Annotated[bytes, Depends(raw_body)],
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    account_id: Annotated[uuid.UUID, Query(description="The email ChannelAccount's id")],
    signature: Annotated[str | None, Header(alias="X-Twilio-Email-Event-Webhook-Signature")] = None,
    timestamp: Annotated[str | None, Header(alias="X-Twilio-Email-Event-Webhook-Timestamp")] = None,
) -> FeedbackAck:
    recorded = await run_in_threadpool(
        _process_sendgrid, request, body, account_id, signature, timestamp, settings, clock
    )
    logger.info("sendgrid.webhook", extra={"recorded": recorded})
    return FeedbackAck(ok=True, recorded=recorded)


def _process_sendgrid(
    request: Request,
    body: bytes,
    account_id: uuid.UUID,
    signature: str | None,
    timestamp: str | None,
    settings: Settings,
    clock: Clock,
) -> int:
    now = clock.now()
    with unit_of_work(request.app.state.session_factory) as session:
        account = feedback.email_account(session, account_id)
        feedback.verify_sendgrid(
            body=body,
            signature=signature,
            timestamp=timestamp,
            public_key_b64=account.config.get("sendgrid_webhook_public_key"),
            settings=settings,
            now=now,
        )
        try:
            events = json.loads(body)
        except (ValueError, RecursionError):
            raise feedback.BadFeedback("the body is not JSON") from None
        items = feedback.sendgrid_feedback(
            events, sending_domain=account.external_id.rpartition("@")[2].lower(), now=now
        )
        return sum(
            feedback.record(
                session, company_id=account.company_id, item=item, settings=settings, now=now
            )
            for item in items
        )


class DomainHealthOut(BaseModel):
    sending_domain: str
    sends: int
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    # ok, alerted or paused.
    state: str
    reason: str | None
    since: datetime | None
    window_start: datetime


class EmailHealthOut(BaseModel):
    window_days: int
    min_sends: int
    domains: list[DomainHealthOut]


@router.get(
    "/channels/email/health",
    summary="Bounce and complaint rates and state per sending domain (admin, supervisor)",
    responses=error_responses(403),
)
def email_health(
    session: DbSession, key: CurrentKey, settings: SettingsDep, clock: ClockDep
) -> EmailHealthOut:
    if key.role not in (Role.admin, Role.supervisor):
        raise Forbidden(f"this needs an admin or supervisor key; yours is {key.role.value}")
    now = clock.now()
    company_id = key.company.id
    return EmailHealthOut(
        window_days=settings.email_reputation_window_days,
        min_sends=settings.email_reputation_min_sends,
        domains=[
            DomainHealthOut(
                **feedback.health(
                    session, company_id=company_id, domain=d, settings=settings, now=now
                ).__dict__
            )
            for d in feedback.company_domains(session, company_id=company_id)
        ],
    )


@router.post(
    "/channels/email/{domain}/resume",
    summary="Lift a sending domain's pause (admin): sequence email from it may go again",
    responses=error_responses(403, 409),
)
def resume_email_domain(
    domain: str, session: DbSession, key: AdminKey, settings: SettingsDep, clock: ClockDep
) -> DomainHealthOut:
    now = clock.now()
    feedback.resume(session, company_id=key.company.id, domain=domain, actor=key.actor, now=now)
    session.commit()
    return DomainHealthOut(
        **feedback.health(
            session, company_id=key.company.id, domain=domain.lower(), settings=settings, now=now
        ).__dict__
    )
