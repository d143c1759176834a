"""SMS accounts, sends and webhooks over Twilio (docs/sms.md): what the router and the webhook
routes call. The HTTP and the signature are twilio_sms's."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.channels.schemas import SmsAccountIn
from shvya.channels.twilio_sms import (
    TWILIO_STATUS,
    UNSUBSCRIBED_RECIPIENT,
    TwilioSmsAdapter,
    error_code,
    signature_ok,
)
from shvya.config import Settings
from shvya.conversations import service as conversations
from shvya.crm import service as crm
from shvya.crm.models import Channel, SuppressionReason
from shvya.crypto import SecretUnreadable, decrypt_secret, encrypt_secret
from shvya.db.phases import Call, Phases
from shvya.errors import Conflict, InvalidInput, ShvyaError
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import ChannelAccount

logger = logging.getLogger(__name__)

_ADAPTERS: dict[tuple[Any, ...], TwilioSmsAdapter] = {}
_ADAPTERS_LOCK = threading.Lock()
_ADAPTERS_MAX = 512


class SmsNotConnected(Conflict):
    code = "channel_not_connected"


def status_callback_url(settings: Settings, account_id: uuid.UUID) -> str:
    return f"{settings.public_url.rstrip('/')}/webhooks/twilio/status/{account_id}"


def _auth_token(account: ChannelAccount, settings: Settings) -> str:
    if not account.credentials_encrypted:
        raise SmsNotConnected(f"SMS number {account.external_id} has no auth token")
    return decrypt_secret(
        account.credentials_encrypted, secret_key=settings.secret_key.get_secret_value()
    )


def sms_adapter(account: ChannelAccount, settings: Settings) -> TwilioSmsAdapter:
    """The account's adapter, made once per process (one kept-alive client per account); a
    new token makes a new one."""
    key = (
        account.id,
        account.external_id,
        account.credentials_encrypted,
        str(account.config.get("account_sid")),
        settings.twilio_base_url,
        settings.public_url,
    )
    with _ADAPTERS_LOCK:
        adapter = _ADAPTERS.get(key)
        if adapter is None:
            adapter = TwilioSmsAdapter(
                account_sid=str(account.config.get("account_sid") or ""),
                auth_token=_auth_token(account, settings),
                from_number=account.external_id,
                status_callback=status_callback_url(settings, account.id),
                base_url=settings.twilio_base_url,
            )
            if len(_ADAPTERS) >= _ADAPTERS_MAX:
                # Forgotten, not closed: another thread may be sending with it right now.
                _ADAPTERS.pop(next(iter(_ADAPTERS)))
            _ADAPTERS[key] = adapter
        return adapter


# --- connecting a number ----------------------------------------------------------------------


class SmsCheckFailed(InvalidInput):
    code = "twilio_credentials_refused"


class TwilioUnavailable(ShvyaError):
    code = "twilio_unavailable"
    status = 502


def verify_sms_account(data: SmsAccountIn, settings: Settings) -> Phases[None]:
    """Ask Twilio whether the SID and token are good (GET /Accounts/{sid}.json): a 422 naming
    the field when refused, a 502 when Twilio cannot be asked. Touches no database."""
    adapter = TwilioSmsAdapter(
        account_sid=data.account_sid,
        auth_token=data.auth_token,
        from_number=data.phone_number,
        status_callback=None,
        base_url=settings.twilio_base_url,
    )
    try:
        yield Call("verify:sms", adapter.verify)
    except ChannelSendError as exc:
        said = f"{exc.code}: {exc.message}"
        if exc.kind is FailureKind.auth or exc.code == "20404":
            raise SmsCheckFailed(
                f"Twilio refused the account SID and auth token ({said}): give the SID "
                "(AC...) and auth token of the account that owns the number",
                extra={"field": "auth_token"},
            ) from None
        raise TwilioUnavailable(
            f"Twilio did not answer the credentials check as expected ({said}); nothing was "
            "stored: try again"
        ) from None
    finally:
        adapter.close()


def connect_sms(
    session: Session,
    *,
    company_id: uuid.UUID,
    data: SmsAccountIn,
    settings: Settings,
    actor: str,
    now: datetime,
) -> Phases[ChannelAccount]:
    """Connect (or reconnect) a Twilio number, once Twilio accepts the credentials (unless
    `verify` is false); the auth token is stored encrypted. A number of another company is a
    409."""
    if data.verify:
        yield from verify_sms_account(data, settings)
    return tenancy.upsert_channel_account(
        session,
        company_id=company_id,
        channel=Channel.sms.value,
        external_id=data.phone_number,
        name=data.name,
        credentials_encrypted=encrypt_secret(
            data.auth_token, secret_key=settings.secret_key.get_secret_value()
        ),
        config={"provider": "twilio", "account_sid": data.account_sid},
        actor=actor,
        now=now,
    )


# --- webhooks (docs/sms.md 4, 5) --------------------------------------------------------------


def webhook_url(settings: Settings, path: str, query: str) -> str:
    """The URL Twilio called, as it signed it: SHVYA_PUBLIC_URL, the path and the query."""
    url = f"{settings.public_url.rstrip('/')}{path}"
    return f"{url}?{query}" if query else url


def checked_account(
    session: Session,
    account: ChannelAccount | None,
    *,
    settings: Settings,
    signature: str | None,
    url: str,
    params: Sequence[tuple[str, str]],
) -> ChannelAccount | None:
    """The account when the delivery is signed with its auth token, else None."""
    if account is None or account.channel != Channel.sms.value:
        return None
    try:
        token = _auth_token(account, settings)
    except (SmsNotConnected, SecretUnreadable):
        return None
    if not signature_ok(signature, auth_token=token, url=url, params=params):
        return None
    return account


@dataclass
class SmsStatusResult:
    changed: bool
    suppressed: bool


def apply_sms_status(
    session: Session, *, account: ChannelAccount, form: dict[str, str], now: datetime
) -> SmsStatusResult:
    """A status callback: the message moves forward only (a late `sent` after `delivered`
    changes nothing); error 21610 suppresses the number (docs/sms.md 5)."""
    state = TWILIO_STATUS.get(form.get("MessageStatus", "").lower())
    sid = form.get("MessageSid") or form.get("SmsSid")
    code = error_code(form.get("ErrorCode"))
    if state is None or not sid:
        return SmsStatusResult(changed=False, suppressed=False)
    changed = conversations.apply_delivery_status(
        session,
        company_id=account.company_id,
        channel=Channel.sms,
        status=conversations.DeliveryStatus(
            external_id=sid,
            status=state,
            at=now,
            error_code=str(code) if code else None,
            error=f"Twilio error {code}" if code else None,
        ),
        now=now,
    )
    suppressed = False
    if code == UNSUBSCRIBED_RECIPIENT:
        to = form.get("To")
        if to:
            _, suppressed = crm.add_suppression(
                session,
                company_id=account.company_id,
                channel=Channel.sms.value,
                address=to,
                reason=SuppressionReason.opt_out,
                source="provider",
                actor="twilio",
                now=now,
                lead_id=changed.lead_id if changed is not None else None,
            )
    return SmsStatusResult(changed=changed is not None, suppressed=suppressed)


def receive_sms(
    session: Session,
    *,
    account: ChannelAccount,
    form: dict[str, str],
    settings: Settings,
    now: datetime,
) -> bool:
    """An inbound SMS through the same receive() as every channel, idempotent on its
    MessageSid; opt-out keywords work as on every channel. False: a repeat, nothing written."""
    company = tenancy.get_company(session, company_id=account.company_id)
    media = [form[f"MediaUrl{i}"] for i in range(10) if form.get(f"MediaUrl{i}")]
    try:
        result = conversations.receive_inbound_message(
            session,
            company_id=account.company_id,
            message=conversations.InboundMessage(
                channel=Channel.sms,
                sender=form.get("From", ""),
                text=form.get("Body", "") or ("[media]" if media else ""),
                external_id=form.get("MessageSid") or form.get("SmsSid"),
                meta={"type": "media" if media else "text", **({"media": media} if media else {})},
                sender_from_provider=True,
            ),
            region=company.phone_region or settings.default_phone_region,
            actor="twilio",
            now=now,
            opt_out_keywords=company.settings.get("opt_out_keywords", []),
        )
    except conversations.DuplicateInbound:
        session.rollback()  # a copy raced this one: the first one's row stands
        return False
    return not result.duplicate
