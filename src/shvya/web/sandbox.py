"""The sandbox channel's page: chat with SHVYA as a lead, from the browser.

Each browser is its own lead, named by a signed cookie, so one visitor can never read
another's chat. Messages go through the same receive(), jobs and router as every channel;
outbound sandbox messages are stored and shown, never sent anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Cookie, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from shvya.config import Settings
from shvya.conversations import service as conversations
from shvya.conversations.schemas import MessageText
from shvya.crm import service as crm
from shvya.crm.models import Channel
from shvya.db.session import DbSession
from shvya.deps import ClockDep, SettingsDep, client_address
from shvya.errors import NotFound
from shvya.ratelimit import SlidingWindowLimiter
from shvya.schemas import NOT_BLANK, PageRequest, StrictInput, error_responses
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Company

router = APIRouter(tags=["sandbox"])

COOKIE = "shvya_sandbox"
COOKIE_MAX_AGE = 30 * 24 * 3600


class SandboxOff(NotFound):
    code = "sandbox_off"


class SandboxMessageIn(StrictInput):
    text: MessageText = Field(
        min_length=1, max_length=conversations.MAX_TEXT_CHARS, pattern=NOT_BLANK
    )


class SandboxMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    direction: str
    text: str
    status: str
    created_at: datetime


class SandboxChatOut(BaseModel):
    company: str
    messages: list[SandboxMessageOut]


def _sign(visitor: str, settings: Settings) -> str:
    key = settings.secret_key.get_secret_value().encode()
    mac = hmac.new(key, f"sandbox:{visitor}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{visitor}.{mac}"


def _visitor_from(cookie: str | None, settings: Settings) -> str | None:
    # compare_digest raises TypeError on non-ASCII text: a forged cookie would answer 500.
    if not cookie or not cookie.isascii() or cookie.count(".") != 1:
        return None
    visitor = cookie.split(".", 1)[0]
    return visitor if hmac.compare_digest(_sign(visitor, settings), cookie) else None


def _company(session: DbSession, settings: Settings) -> Company:
    if settings.sandbox_company is None:
        company = tenancy.find_default_company(session)
    else:
        company = tenancy.find_company(session, ref=settings.sandbox_company)
    if company is None:
        raise SandboxOff("the sandbox page has no company to chat with")
    if not (settings.sandbox_enabled or company.settings.get("sandbox_page") is True):
        raise SandboxOff("the sandbox page is off on this server")
    return company


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def sandbox_page(session: DbSession, settings: SettingsDep) -> HTMLResponse:
    _company(session, settings)
    page = resources.files("shvya.web").joinpath("static/sandbox.html").read_text("utf-8")
    return HTMLResponse(
        page,
        headers={
            # No inline script or style at all: an injected one would not run.
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post(
    "/sandbox/messages",
    status_code=201,
    summary="Send a message as the sandbox lead of this browser",
    responses=error_responses(400, 404, 413, 422, 429),
)
def post_sandbox_message(
    body: SandboxMessageIn,
    request: Request,
    response: Response,
    session: DbSession,
    settings: SettingsDep,
    clock: ClockDep,
    shvya_sandbox: Annotated[str | None, Cookie()] = None,
) -> SandboxMessageOut:
    company = _company(session, settings)
    # Each message may start AI work: a visitor (or a script) gets a bounded number.
    limiter: SlidingWindowLimiter = request.app.state.sandbox_limiter
    address = client_address(request)
    limiter.refuse_when_over(address, "too many sandbox messages from this address; wait a little")
    limiter.record(address)
    visitor = _visitor_from(shvya_sandbox, settings)
    if visitor is None:
        visitor = f"visitor-{secrets.token_hex(12)}"
        response.set_cookie(
            COOKIE,
            _sign(visitor, settings),
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=settings.env.value == "production",
        )
    result = conversations.receive_inbound_message(
        session,
        company_id=company.id,
        message=conversations.InboundMessage(
            channel=Channel.sandbox, sender=visitor, text=body.text, name="Sandbox visitor"
        ),
        region=company.phone_region or settings.default_phone_region,
        actor="sandbox",
        now=clock.now(),
        opt_out_keywords=company.settings.get("opt_out_keywords", []),
    )
    return SandboxMessageOut(
        id=result.message_id,
        direction="in",
        text=body.text,
        status="received",
        created_at=clock.now(),
    )


@router.get(
    "/sandbox/messages",
    summary="This browser's sandbox chat, oldest first",
    responses=error_responses(400, 404, 422),
)
def get_sandbox_messages(
    session: DbSession,
    settings: SettingsDep,
    shvya_sandbox: Annotated[str | None, Cookie()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> SandboxChatOut:
    company = _company(session, settings)
    visitor = _visitor_from(shvya_sandbox, settings)
    contact = (
        None
        if visitor is None
        else crm.find_contact(
            session, company_id=company.id, channel=Channel.sandbox.value, value=visitor
        )
    )
    if contact is None:
        return SandboxChatOut(company=company.name, messages=[])
    rows, total = conversations.list_lead_messages(
        session,
        company_id=company.id,
        lead_id=contact.lead_id,
        page=PageRequest(limit=limit, offset=0),
    )
    if total > limit:
        rows, _ = conversations.list_lead_messages(
            session,
            company_id=company.id,
            lead_id=contact.lead_id,
            page=PageRequest(limit=limit, offset=total - limit),
        )
    return SandboxChatOut(
        company=company.name,
        messages=[SandboxMessageOut.model_validate(m) for m in rows],
    )
