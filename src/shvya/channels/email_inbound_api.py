"""POST /webhooks/email/inbound/{token}: a lead's email reply (docs/email-inbound.md).

SendGrid Inbound Parse signs nothing, so the secret is in the URL the company configures at
SendGrid (SHVYA_EMAIL_INBOUND_TOKEN), compared in constant time. Inbound Parse retries any
delivery not answered 2xx for up to three days, so mail to an address no company owns is
answered 200 and recorded nowhere; a redelivery of a stored Message-ID changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from shvya.channels.email_inbound import (
    InboundEmail,
    parse_json_form,
    parse_sendgrid_form,
    receive_email,
)
from shvya.clock import Clock
from shvya.config import Settings
from shvya.conversations.inbound import DuplicateInbound
from shvya.db.session import unit_of_work
from shvya.deps import ClockDep, SettingsDep
from shvya.errors import Forbidden, ShvyaError
from shvya.schemas import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/email", tags=["webhooks"])


class BadInboundEmail(ShvyaError):
    code = "bad_inbound_email"
    status = 400


class EmailInboundAck(BaseModel):
    ok: bool
    # "received", "duplicate" or "ignored" (no company owns the recipient address)
    status: str
    lead_id: str | None = None
    message_id: str | None = None


@router.post(
    "/inbound",
    summary="Refused: the inbound email URL carries its secret token",
    responses=error_responses(403),
)
def inbound_without_token(settings: SettingsDep) -> EmailInboundAck:
    if settings.email_inbound_token is None:
        raise Forbidden(
            "inbound email is not configured: set SHVYA_EMAIL_INBOUND_TOKEN to a random secret "
            "and point the provider at /webhooks/email/inbound/<that token>"
        )
    raise Forbidden("post to /webhooks/email/inbound/<SHVYA_EMAIL_INBOUND_TOKEN>")


@router.post(
    "/inbound/{token}",
    summary="A lead's email reply: SendGrid Inbound Parse (multipart, parsed or raw) or JSON",
    responses=error_responses(400, 403, 413, 422),
)
async def receive_inbound_email(
    token: str, request: Request, settings: SettingsDep, clock: ClockDep
) -> EmailInboundAck:
    expected = settings.email_inbound_token
    if expected is None:
        raise Forbidden(
            "inbound email is not configured: set SHVYA_EMAIL_INBOUND_TOKEN on this server"
        )
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise Forbidden("the token in the inbound email URL does not match")
    mail = await _read(request)
    return await run_in_threadpool(_process, request, mail, settings, clock)


async def _read(request: Request) -> InboundEmail:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise BadInboundEmail("the body is not JSON") from None
        if not isinstance(body, dict):
            raise BadInboundEmail("the body must be a JSON object with from, to, subject, text")
        return parse_json_form(body)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=100, max_fields=1000) as form:
            fields: dict[str, str] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key == "email":  # the raw MIME message sent as a file part
                        fields[key] = (await value.read()).decode("utf-8", "surrogateescape")
                    continue  # attachments are not kept (docs/email-inbound.md)
                fields.setdefault(key, value)
        if not fields.get("email") and not fields.get("from") and not fields.get("headers"):
            raise BadInboundEmail(
                "no email in the form: Inbound Parse sends from, to, subject, text, headers "
                "(or the raw message in `email`)"
            )
        return parse_sendgrid_form(fields)
    raise BadInboundEmail("send multipart/form-data (SendGrid Inbound Parse) or application/json")


def _process(
    request: Request, mail: InboundEmail, settings: Settings, clock: Clock
) -> EmailInboundAck:
    try:
        with unit_of_work(request.app.state.session_factory) as session:
            received = receive_email(
                session, mail=mail, settings_region=settings.default_phone_region, now=clock.now()
            )
    except DuplicateInbound as exc:
        logger.info("email.inbound_duplicate", extra={"message_id": str(exc.result.message_id)})
        return EmailInboundAck(
            ok=True,
            status="duplicate",
            lead_id=str(exc.result.lead_id),
            message_id=str(exc.result.message_id),
        )
    if received.result is None:
        logger.info("email.inbound_ignored", extra={"recipients": len(mail.recipients)})
        return EmailInboundAck(ok=True, status="ignored")
    return EmailInboundAck(
        ok=True,
        status="received",
        lead_id=str(received.result.lead_id),
        message_id=str(received.result.message_id),
    )
