"""SMS over Twilio's Programmable Messaging REST API (docs/sms.md).

The adapter sends with one kept-alive httpx client per account; Twilio's error codes become
our failure kinds (docs/sms.md 3); webhooks are checked with Twilio's X-Twilio-Signature
(docs/sms.md 4) before anything is read from them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import httpx

from shvya.channels.adapters import ChannelSendError, FailureKind, SendResult
from shvya.channels.schemas import OutboundContent
from shvya.conversations.models import MessageStatus

DEFAULT_TWILIO_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"

# Twilio error codes (docs/sms.md 3).
UNSUBSCRIBED_RECIPIENT = 21610  # the number texted STOP to this sender
INVALID_TO = frozenset({21211, 21614})  # not a phone number / not able to receive SMS
AUTH_ERROR = 20003
TOO_MANY_REQUESTS = 20429

# MessageStatus values Twilio reports, as ours (docs/sms.md 5); the rest change nothing.
TWILIO_STATUS: dict[str, MessageStatus] = {
    "sent": MessageStatus.sent,
    "delivered": MessageStatus.delivered,
    "read": MessageStatus.read,
    "undelivered": MessageStatus.failed,
    "failed": MessageStatus.failed,
}


def failure_kind(code: int | None, http_status: int) -> FailureKind:
    """How a refused send fails, from Twilio's error code first, else its HTTP status."""
    if code == AUTH_ERROR or http_status == 401:
        return FailureKind.auth
    if code == TOO_MANY_REQUESTS or http_status == 429 or http_status >= 500:
        return FailureKind.retry
    return FailureKind.permanent


def _error(response: httpx.Response) -> ChannelSendError:
    code: int | None = None
    message = f"Twilio answered HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        if isinstance(body.get("message"), str):
            message = str(body["message"])[:500]
    return ChannelSendError(
        failure_kind(code, response.status_code), str(code or response.status_code), message
    )


class TwilioSmsAdapter:
    """One Twilio number of one account (ChannelAccount: channel "sms", external_id the
    E.164 number, the auth token encrypted, config {"account_sid": ...})."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        status_callback: str | None,
        base_url: str = DEFAULT_TWILIO_BASE_URL,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.account_sid = account_sid
        self.from_number = from_number
        self.status_callback = status_callback
        self._client = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/{API_VERSION}",
            auth=(account_sid, auth_token),
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            trust_env=False,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, data: list[tuple[str, str]] | None) -> httpx.Response:
        try:
            if data is None:
                return self._client.request(method, path)
            # A list, not a dict: MediaUrl may repeat.
            return self._client.request(
                method,
                path,
                content=urlencode(data),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached Twilio: safe to try again.
            raise ChannelSendError(
                FailureKind.retry, "connect", str(exc) or "connect failed"
            ) from None
        except httpx.HTTPError as exc:
            # Sent, no answer: Twilio may have taken it, and a resend could double it.
            raise ChannelSendError(
                FailureKind.unknown, "no_response", f"{type(exc).__name__}: {exc}"
            ) from None

    def verify(self) -> None:
        """Raises ChannelSendError(auth) when Twilio refuses the SID and token."""
        response = self._call("GET", f"/Accounts/{self.account_sid}.json", None)
        if response.status_code != 200:
            raise _error(response)

    def send(self, *, to: str, content: OutboundContent) -> SendResult:
        form = [("From", self.from_number), ("To", to)]
        if content.text is not None:
            form.append(("Body", content.text))
        elif content.media is not None and content.media.link is not None:
            if content.media.caption:
                form.append(("Body", content.media.caption))
            form.append(("MediaUrl", str(content.media.link)))
        else:
            raise ChannelSendError(
                FailureKind.permanent,
                "not_sms",
                "SMS carries text or media by link only (templates, interactive messages and "
                "uploaded media ids are WhatsApp's)",
            )
        if self.status_callback:
            form.append(("StatusCallback", self.status_callback))
        response = self._call("POST", f"/Accounts/{self.account_sid}/Messages.json", form)
        if response.status_code not in (200, 201):
            raise _error(response)
        try:
            sid = response.json()["sid"]
        except (ValueError, KeyError, TypeError):
            raise ChannelSendError(
                FailureKind.unknown, "bad_response", "Twilio answered 201 without a message sid"
            ) from None
        return SendResult(external_id=str(sid))


# --- webhooks (docs/sms.md 4) -----------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1, keyed by the auth token, over the full URL Twilio
    called followed by each POST parameter's name and value, sorted by name."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_ok(
    header: str | None, *, auth_token: str, url: str, params: Iterable[tuple[str, str]]
) -> bool:
    if not header:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def error_code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
