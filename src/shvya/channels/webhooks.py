"""WhatsApp Cloud API webhooks (docs/whatsapp.md 1.5 to 1.8).

The signature is checked on the raw bytes before anything else; a 200 is answered only
after the delivery's transaction has committed, so Meta redelivers anything we did not keep.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shvya.channels import service
from shvya.channels.whatsapp_cloud import verify_signature
from shvya.clock import Clock
from shvya.config import Settings
from shvya.db.session import unit_of_work
from shvya.deps import ClockDep, SettingsDep
from shvya.errors import Forbidden, ShvyaError, Unauthorized
from shvya.schemas import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class BadWebhookBody(ShvyaError):
    code = "bad_webhook_body"
    status = 400


class WebhookAck(BaseModel):
    ok: bool


@router.get(
    "/whatsapp",
    summary="Meta's verification handshake: answers hub.challenge when the token matches",
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The hub.challenge, as plain text",
        },
        **error_responses(400, 403, 422),
    },
)
def verify_whatsapp_webhook(
    settings: SettingsDep,
    mode: Annotated[str | None, Query(alias="hub.mode", max_length=32)] = None,
    verify_token: Annotated[str | None, Query(alias="hub.verify_token", max_length=512)] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=512)] = None,
) -> PlainTextResponse:
    expected = settings.meta_verify_token
    if expected is None:
        raise Forbidden("META_VERIFY_TOKEN is not configured on this server")
    if (
        mode != "subscribe"
        or verify_token is None
        or challenge is None
        or not hmac.compare_digest(verify_token.encode(), expected.get_secret_value().encode())
    ):
        raise Forbidden("the verify token does not match")
    return PlainTextResponse(challenge)


async def raw_body(request: Request) -> bytes:
    # The exact bytes Meta signed; a re-serialised body would not match (docs/whatsapp.md 1.7).
    return await request.body()


@router.post(
    "/whatsapp",
    summary="Meta's signed event deliveries: messages, statuses, preferences, templates",
    responses=error_responses(400, 401, 413, 422),
)
async def receive_whatsapp_webhook(
    body: Annotated[bytes, Depends(raw_body)],
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    signature: Annotated[str | None, Header(alias="X-Hub-Signature-256")] = None,
) -> WebhookAck:
    secret = settings.meta_app_secret
    if secret is None:
        logger.error("whatsapp.webhook_without_app_secret")
        raise Unauthorized("META_APP_SECRET is not configured: deliveries cannot be verified")
    if not verify_signature(body=body, header=signature, app_secret=secret.get_secret_value()):
        raise Unauthorized("missing or wrong X-Hub-Signature-256")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BadWebhookBody("the body is not JSON") from None
    # The whole unit of work, commit included, in one thread-pool call: a session that held
    # its connection (SQLite: the write lock) between two calls froze the server under a
    # burst, every thread waiting for a connection that waited for a thread to commit it
    # (bench/webhooks.py).
    summary = await run_in_threadpool(_process, request, payload, settings, clock)
    logger.info("whatsapp.webhook", extra=summary.__dict__)
    return WebhookAck(ok=True)


def _process(
    request: Request, payload: Any, settings: Settings, clock: Clock
) -> service.WebhookSummary:
    with unit_of_work(request.app.state.session_factory) as session:
        return service.process_whatsapp_webhook(
            session, payload=payload, settings=settings, now=clock.now()
        )
