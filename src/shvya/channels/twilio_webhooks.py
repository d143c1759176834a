"""Twilio's webhooks (docs/sms.md 4, 5): inbound SMS and status callbacks.

The X-Twilio-Signature is checked, with the auth token of the account the delivery names,
before anything is stored; a wrong one is a 403. Both are idempotent: a redelivery changes
nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from shvya.channels import sms
from shvya.clock import Clock
from shvya.config import Settings
from shvya.crm.models import Channel
from shvya.db.session import unit_of_work
from shvya.deps import ClockDep, SettingsDep
from shvya.errors import Forbidden
from shvya.schemas import error_responses
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import ChannelAccount

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])

# Empty TwiML: Twilio sends nothing of its own in answer (docs/sms.md 4).
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_TWIML: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/xml": {"schema": {"type": "string"}}}, "description": "Empty TwiML"}
}


async def _form(request: Request) -> list[tuple[str, str]]:
    form = await request.form()
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


@router.post(
    "/sms",
    summary="Twilio's inbound SMS (signed): stored once per MessageSid; answers empty TwiML",
    response_class=Response,
    responses={**_TWIML, **error_responses(403)},
)
async def receive_twilio_sms(
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
) -> Response:
    params = await _form(request)
    url = sms.webhook_url(settings, request.url.path, request.url.query)
    stored = await run_in_threadpool(
        _receive, request, dict(params), params, url, signature, settings, clock
    )
    logger.info("twilio.sms", extra={"stored": stored})
    return Response(EMPTY_TWIML, media_type="text/xml")


def _receive(
    request: Request,
    form: dict[str, str],
    params: list[tuple[str, str]],
    url: str,
    signature: str | None,
    settings: Settings,
    clock: Clock,
) -> bool:
    with unit_of_work(request.app.state.session_factory) as session:
        # Routed by the number the lead texted: the company's SMS account, whose token signs.
        account = tenancy.find_channel_account(
            session, channel=Channel.sms.value, external_id=form.get("To", "")
        )
        checked = sms.checked_account(
            session, account, settings=settings, signature=signature, url=url, params=params
        )
        if checked is None:
            raise Forbidden("missing or wrong X-Twilio-Signature for this number")
        return sms.receive_sms(
            session, account=checked, form=form, settings=settings, now=clock.now()
        )


@router.post(
    "/status/{account_id}",
    summary="Twilio's status callbacks (signed): a message's status moves forward only",
    response_class=Response,
    responses={**_TWIML, **error_responses(403, 422)},
)
async def receive_twilio_status(
    account_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
) -> Response:
    params = await _form(request)
    url = sms.webhook_url(settings, request.url.path, request.url.query)
    await run_in_threadpool(
        _status, request, account_id, dict(params), params, url, signature, settings, clock
    )
    return Response(EMPTY_TWIML, media_type="text/xml")


def _status(
    request: Request,
    account_id: uuid.UUID,
    form: dict[str, str],
    params: list[tuple[str, str]],
    url: str,
    signature: str | None,
    settings: Settings,
    clock: Clock,
) -> None:
    with unit_of_work(request.app.state.session_factory) as session:
        account = session.get(ChannelAccount, account_id)
        checked = sms.checked_account(
            session, account, settings=settings, signature=signature, url=url, params=params
        )
        if checked is None:
            raise Forbidden("missing or wrong X-Twilio-Signature for this account")
        sms.apply_sms_status(session, account=checked, form=form, now=clock.now())
