from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import quiet_hours, service, sms
from shvya.channels.adapters import ChannelSendError
from shvya.channels.policies import Defer
from shvya.channels.schemas import (
    ChannelAccountOut,
    EmailAccountIn,
    PersonMessageIn,
    PersonMessageOut,
    QuietHoursOut,
    QuietHoursPatchIn,
    SmsAccountIn,
    VerdictOut,
    WhatsAppAccountIn,
)
from shvya.conversations import service as conversations
from shvya.crm import service as crm
from shvya.crm.export import SUPPRESSION_CSV_HEADER, csv_line
from shvya.crm.models import Channel, SuppressionReason, SuppressionSource
from shvya.crm.schemas import SuppressionIn, SuppressionOut
from shvya.crypto import SecretUnreadable, decrypt_secret, mask_secret
from shvya.db.phases import commit_between_phases, run_phases
from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging, SettingsDep
from shvya.errors import InvalidInput, NotFound, ShvyaError
from shvya.events.service import append_company_event
from shvya.schemas import (
    AUTH_ERRORS,
    Page,
    error_responses,
)
from shvya.tenancy import service as tenancy
from shvya.tenancy.auth import AdminKey, CurrentKey, PhoneRegion
from shvya.tenancy.models import ChannelAccount

router = APIRouter(tags=["channels"], responses=error_responses(*AUTH_ERRORS))


class MediaUnavailable(ShvyaError):
    code = "media_unavailable"
    status = 502


class SuppressionPage(Page):
    items: list[SuppressionOut]


def _account_out(account: ChannelAccount, secret_key: str) -> ChannelAccountOut:
    hint = None
    if account.credentials_encrypted:
        try:
            hint = mask_secret(decrypt_secret(account.credentials_encrypted, secret_key=secret_key))
        except SecretUnreadable:
            hint = "unreadable: reconnect with a new token"
    return ChannelAccountOut(
        id=account.id,
        channel=account.channel,
        name=account.name,
        external_id=account.external_id,
        config=account.config,
        token_hint=hint,
        is_active=account.is_active,
        needs_attention=account.needs_attention,
        needs_attention_since=account.needs_attention_since,
        created_at=account.created_at,
    )


@router.get(
    "/channels/accounts",
    summary="The company's connected numbers and mailboxes (tokens never shown)",
    responses=error_responses(403),
)
def list_channel_accounts(
    session: DbSession, key: AdminKey, settings: SettingsDep
) -> list[ChannelAccountOut]:
    secret = settings.secret_key.get_secret_value()
    return [
        _account_out(a, secret)
        for a in tenancy.list_channel_accounts(session, company_id=key.company.id)
    ]


@router.post(
    "/channels/whatsapp",
    status_code=201,
    summary=(
        "Connect a WhatsApp Cloud API number (admin), once Meta confirms with the token that "
        "the number is usable and belongs to the WABA; the token is stored encrypted"
    ),
    responses=error_responses(403, 409, 502),
)
def connect_whatsapp(
    body: WhatsAppAccountIn,
    session: DbSession,
    key: AdminKey,
    settings: SettingsDep,
    clock: ClockDep,
) -> ChannelAccountOut:
    # Meta is asked before anything is written, with no transaction open while it answers
    # (docs/architecture.md rule 1; docs/whatsapp.md 1.14).
    account = run_phases(
        service.connect_whatsapp(
            session,
            company_id=key.company.id,
            data=body,
            settings=settings,
            actor=key.actor,
            now=clock.now(),
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return _account_out(account, settings.secret_key.get_secret_value())


@router.post(
    "/channels/email",
    status_code=201,
    summary=(
        "Connect the company's email account (admin): provider (smtp), from_email, from_name "
        "and the provider's fields (SMTP host, port, security, username, password). The "
        "connection and login are checked first unless verify is false; a 422 names the wrong "
        "field. The secret is stored encrypted; connecting again replaces the account"
    ),
    responses=error_responses(403, 409),
)
def connect_email(
    body: EmailAccountIn,
    session: DbSession,
    key: AdminKey,
    settings: SettingsDep,
    clock: ClockDep,
) -> ChannelAccountOut:
    # The server is asked before anything is written, with no transaction open meanwhile.
    account = run_phases(
        service.connect_email(
            session,
            company_id=key.company.id,
            data=body,
            settings=settings,
            actor=key.actor,
            now=clock.now(),
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return _account_out(account, settings.secret_key.get_secret_value())


@router.get(
    "/messages/{message_id}/media",
    summary="A lead's media (image, document, audio, video), fetched from WhatsApp on demand",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file"},
        **error_responses(404, 502),
    },
)
def get_message_media(
    message_id: uuid.UUID, session: DbSession, key: CurrentKey, settings: SettingsDep
) -> Response:
    # A read-only proxy, the one provider call made inside a request: the lead's file is
    # needed now, by a person looking at it, and nothing is changed or sent.
    message = conversations.get_message(session, company_id=key.company.id, message_id=message_id)
    media = message.meta.get("media") if isinstance(message.meta, dict) else None
    if (
        message.channel != Channel.wa_cloud.value
        or not isinstance(media, dict)
        or not media.get("id")
    ):
        raise NotFound(f"message {message_id} has no WhatsApp media")
    account = tenancy.company_channel_account(
        session, company_id=key.company.id, channel=Channel.wa_cloud.value
    )
    if account is None:
        raise NotFound("no WhatsApp Cloud number is connected to this company")
    adapter = service.whatsapp_adapter(account, settings)
    # The request's reads end here: no transaction stays open while WhatsApp answers.
    session.commit()
    try:
        content, mime_type = adapter.fetch_media(str(media["id"]))
    except ChannelSendError as exc:
        raise MediaUnavailable(
            f"WhatsApp did not give the file: {exc.code}: {exc.message}"
        ) from None
    return Response(
        content,
        media_type=mime_type,
        headers={"X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"},
    )


SourceFilter = Annotated[
    SuppressionSource | None,
    Query(description="Only suppressions from this source (docs/email-providers.md section 3)"),
]
ChannelFilter = Annotated[Channel | None, Query(description="Only suppressions on this channel")]


@router.get(
    "/suppressions",
    summary="Addresses nothing is sent to (admin); filter by source and channel",
    responses=error_responses(403),
)
def list_suppressions(
    session: DbSession,
    key: AdminKey,
    page: Paging,
    source: SourceFilter = None,
    channel: ChannelFilter = None,
) -> SuppressionPage:
    rows, total = crm.list_suppressions(
        session, company_id=key.company.id, page=page, source=source, channel=channel
    )
    return SuppressionPage.of(rows, total, page)


@router.get(
    "/suppressions.csv",
    summary="Export the suppressions as CSV (admin), streamed; same filters as the list",
    response_class=StreamingResponse,
    responses={
        **error_responses(403),
        200: {
            "content": {"text/csv": {}},
            "description": "address,channel,reason,source,"
            "created_at, a header row then one row per suppression, newest first",
        },
    },
)
def export_suppressions(
    request: Request,
    key: AdminKey,
    source: SourceFilter = None,
    channel: ChannelFilter = None,
) -> StreamingResponse:
    factory: sessionmaker[Session] = request.app.state.session_factory
    company_id = key.company.id

    def lines() -> Iterator[str]:
        # Its own session: the request's is closed before a streamed body is sent.
        with factory() as session:
            yield csv_line(SUPPRESSION_CSV_HEADER)
            for row in crm.iter_suppressions(
                session, company_id=company_id, source=source, channel=channel
            ):
                yield csv_line(
                    (
                        row.address,
                        row.channel,
                        row.reason,
                        row.source,
                        row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    )
                )

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


@router.post(
    "/suppressions",
    status_code=201,
    summary="Suppress an address on a channel (admin); adding it again changes nothing",
    responses=error_responses(403),
)
def add_suppression(
    body: SuppressionIn,
    response: Response,
    session: DbSession,
    key: AdminKey,
    region: PhoneRegion,
    clock: ClockDep,
) -> SuppressionOut:
    channel = Channel(body.channel)
    address = crm.normalise_contact(channel, body.address, region=region, field="address")
    contact = crm.find_contact(
        session, company_id=key.company.id, channel=channel.value, value=address
    )
    row, created = crm.add_suppression(
        session,
        company_id=key.company.id,
        channel=channel.value,
        address=address,
        reason=SuppressionReason(body.reason),
        source=SuppressionSource.manual,
        actor=key.actor,
        now=clock.now(),
        lead_id=contact.lead_id if contact else None,
    )
    if not created:
        response.status_code = 200
    return SuppressionOut.model_validate(row)


@router.delete(
    "/suppressions/{suppression_id}",
    summary="Lift a suppression (admin)",
    responses=error_responses(403, 404),
)
def delete_suppression(
    suppression_id: uuid.UUID, session: DbSession, key: AdminKey, clock: ClockDep
) -> SuppressionOut:
    row = crm.get_suppression(session, company_id=key.company.id, suppression_id=suppression_id)
    out = SuppressionOut.model_validate(row)
    contact = crm.find_contact(
        session, company_id=key.company.id, channel=row.channel, value=row.address
    )
    crm.remove_suppression(
        session,
        company_id=key.company.id,
        suppression=row,
        actor=key.actor,
        now=clock.now(),
        lead_id=contact.lead_id if contact else None,
    )
    return out


@router.post(
    "/leads/{lead_id}/messages",
    status_code=202,
    summary="Send a person's message to a lead (agent, supervisor, admin): text, an approved "
    "template, or media by link. The router is asked first: 202 with the message, its "
    "agent.reply job and the verdict (send now, or wait until a time and why); a refusal "
    "(outside WhatsApp's 24-hour window, opted out, no marketing consent, template not "
    "approved, channel not connected) is a 409 or 422 that says what to do, and nothing is "
    "written. The AI stays paused for the lead until POST /leads/{id}/ai/resume",
    responses=error_responses(404, 409),
)
def post_person_message(
    lead_id: uuid.UUID,
    body: PersonMessageIn,
    session: DbSession,
    key: CurrentKey,
    clock: ClockDep,
    settings: SettingsDep,
) -> PersonMessageOut:
    # Every role may write to a lead (docs/architecture.md rule 5 scopes it to the company).
    queued = service.queue_person_message(
        session,
        company_id=key.company.id,
        lead_id=lead_id,
        channel=body.channel,
        content=body.content(),
        actor=key.actor,
        settings=settings,
        now=clock.now(),
    )
    verdict = queued.verdict
    if isinstance(verdict, Defer):
        out = VerdictOut(
            decision="wait",
            until=verdict.until,
            reason=verdict.reason,
            detail=f"will wait until {verdict.until.isoformat()}: {verdict.reason}",
        )
    else:
        out = VerdictOut(decision="send_now", detail="sends now")
    return PersonMessageOut(
        message_id=queued.message.id,
        job_id=queued.job_id,
        lead_id=lead_id,
        channel=queued.message.channel,
        status=queued.message.status,
        verdict=out,
    )


# --- quiet hours (docs/quiet-hours.md) --------------------------------------------------------


def _quiet_hours_out(settings: dict[str, Any]) -> QuietHoursOut:
    windows = quiet_hours.company_windows(settings)
    return QuietHoursOut.model_validate({c.value: w.as_json() for c, w in windows.items()})


@router.get(
    "/channels/quiet-hours",
    summary="The local hours email and SMS may reach a lead in (the defaults where unset)",
    responses=error_responses(403),
)
def get_quiet_hours(session: DbSession, key: AdminKey) -> QuietHoursOut:
    company = tenancy.get_company(session, company_id=key.company.id)
    return _quiet_hours_out(company.settings)


@router.patch(
    "/channels/quiet-hours",
    summary="Change the local hours email or SMS may reach a lead in; null restores a default",
    description='Body: {"email": {"start": "08:00", "end": "22:00"}, "sms": {...}}; HH:MM, '
    "start before end, or an overnight window (start after end). Sends outside the window "
    "wait for its next minute in the lead's time zone.",
    responses=error_responses(403, 422),
)
def patch_quiet_hours(
    body: QuietHoursPatchIn, session: DbSession, key: AdminKey, clock: ClockDep
) -> QuietHoursOut:
    company = tenancy.get_company(session, company_id=key.company.id)
    try:
        settings = quiet_hours.patched_settings(company.settings, body.as_patch())
    except quiet_hours.QuietHoursInvalid as exc:
        raise InvalidInput(str(exc), extra={"field": exc.field}) from exc
    if settings != company.settings:
        company.settings = settings
        company.updated_at = clock.now()
        append_company_event(
            session,
            company_id=company.id,
            type="CompanyUpdated",
            data={"changed": ["channels.quiet_hours"]},
            actor=key.actor,
            now=clock.now(),
        )
    return _quiet_hours_out(company.settings)


# --- SMS over Twilio (docs/sms.md) ------------------------------------------------------------


@router.post(
    "/channels/sms",
    status_code=201,
    summary=(
        "Connect a Twilio SMS number (admin), once Twilio accepts the account SID and auth "
        'token (unless "verify": false); the token is stored encrypted'
    ),
    responses=error_responses(403, 409, 422, 502),
)
def connect_sms(
    body: SmsAccountIn,
    session: DbSession,
    key: AdminKey,
    settings: SettingsDep,
    clock: ClockDep,
) -> ChannelAccountOut:
    # Twilio is asked before anything is written, with no transaction open while it answers
    # (docs/architecture.md rule 1).
    account = run_phases(
        sms.connect_sms(
            session,
            company_id=key.company.id,
            data=body,
            settings=settings,
            actor=key.actor,
            now=clock.now(),
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return _account_out(account, settings.secret_key.get_secret_value())
