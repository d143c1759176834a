"""One-click unsubscribe from email (RFC 8058; docs/email.md 2).

`GET /unsubscribe/{token}` shows a page with one button; `POST /unsubscribe/{token}` is what
mail clients send for `List-Unsubscribe-Post: List-Unsubscribe=One-Click`: no login, no
cookies, no page in between. The address is suppressed for the company at once. A forged or
altered token is a 404, as is any token when nothing it names exists.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.channels.email import UnsubscribeTarget, read_unsubscribe_token
from shvya.conversations.inbound import record_opt_out
from shvya.crm import service as crm
from shvya.crm.models import Channel, LeadContact
from shvya.db.session import DbSession
from shvya.deps import ClockDep, SettingsDep
from shvya.errors import NotFound
from shvya.events.service import append_lead_event
from shvya.schemas import error_responses
from shvya.tenancy.models import Company

router = APIRouter(tags=["unsubscribe"])

SOURCE = "unsubscribe_link"
Token = Annotated[str, Path(min_length=10, max_length=1024)]
_HTML = 'text/html; charset="utf-8"'


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
        'content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">'
        f'<title>{html.escape(title)}</title></head><body style="font-family:sans-serif;'
        f'max-width:32em;margin:3em auto;padding:0 1em">{body}</body></html>'
    )


def _target(session: Session, settings: SettingsDep, token: str) -> UnsubscribeTarget:
    target = read_unsubscribe_token(settings, token)
    if target is None or session.get(Company, target.company_id) is None:
        raise NotFound("no such unsubscribe link")
    return target


def unsubscribe(session: Session, *, target: UnsubscribeTarget, now: datetime) -> bool:
    """Suppress the address for the company (reason opt_out, source unsubscribe_link) and
    append OptedOut to each lead with that email contact. False: it was suppressed already,
    and nothing changed."""
    if crm.is_suppressed(
        session, company_id=target.company_id, channel=Channel.email.value, address=target.address
    ):
        return False
    lead_ids = list(
        session.scalars(
            select(LeadContact.lead_id)
            .where(
                LeadContact.company_id == target.company_id,
                LeadContact.channel == Channel.email.value,
                LeadContact.value == target.address,
            )
            .order_by(LeadContact.created_at, LeadContact.id)
        )
    )
    created = record_opt_out(
        session,
        company_id=target.company_id,
        lead_id=lead_ids[0] if lead_ids else None,
        channel=Channel.email,
        address=target.address,
        message_id=None,
        source=SOURCE,
        actor="unsubscribe_link",
        now=now,
        # No email goes to an address that asked for none (docs/email.md 2).
        confirm=False,
    )
    for lead_id in lead_ids[1:] if created else []:
        append_lead_event(
            session,
            company_id=target.company_id,
            lead_id=lead_id,
            type="OptedOut",
            data={"channel": Channel.email.value, "first": True, "source": SOURCE},
            actor="unsubscribe_link",
            now=now,
        )
    return created


@router.get(
    "/unsubscribe/{token}",
    summary="The page an unsubscribe link opens: one button that unsubscribes (no login)",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "A page"},
        **error_responses(404, 422),
    },
)
def unsubscribe_page(token: Token, session: DbSession, settings: SettingsDep) -> HTMLResponse:
    target = _target(session, settings, token)
    action = html.escape(f"/unsubscribe/{token}", quote=True)
    body = (
        "<h1>Unsubscribe</h1>"
        f"<p>Stop emails to <strong>{html.escape(target.address)}</strong>?</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_page("Unsubscribe", body), media_type=_HTML)


@router.post(
    "/unsubscribe/{token}",
    summary="One-click unsubscribe (RFC 8058): suppresses the address for the company at "
    "once; a second POST changes nothing",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "A page"},
        **error_responses(404, 422),
    },
)
def unsubscribe_now(
    token: Token, session: DbSession, settings: SettingsDep, clock: ClockDep
) -> HTMLResponse:
    target = _target(session, settings, token)
    unsubscribe(session, target=target, now=clock.now())
    body = (
        "<h1>Unsubscribed</h1>"
        f"<p>{html.escape(target.address)} will get no more emails from us.</p>"
    )
    return HTMLResponse(_page("Unsubscribed", body), media_type=_HTML)
