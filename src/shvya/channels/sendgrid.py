"""SendGrid's v3 Mail Send API as an email transport, over httpx (docs/email-providers.md
section 2).

SendGrid composes the MIME itself from JSON fields, so it gets the parts (text/plain first,
then text/html) and SHVYA's extra headers, not the signed bytes: SHVYA's DKIM signature
applies only to raw-MIME providers (SMTP, SES); SendGrid signs with its own key (d= its
domain unless the sending domain is authenticated in SendGrid). One httpx client per
transport, kept alive across sends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from shvya.channels.adapters import ChannelSendError, FailureKind, SendResult
from shvya.channels.email_message import EmailTransport, OutgoingEmail
from shvya.config import Settings

# Headers SendGrid refuses in `headers` (it sets them from the JSON fields itself).
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
# The custom_args key carrying SHVYA's Message-ID, echoed back in every event webhook.
SHVYA_MESSAGE_ARG = "shvya_message_id"


def mail_payload(email: OutgoingEmail) -> dict[str, Any]:
    """The POST /v3/mail/send body for one composed email."""
    sender: dict[str, str] = {"email": email.from_address}
    if email.from_name:
        sender["name"] = email.from_name
    content = [{"type": "text/plain", "value": email.text}]
    if email.html is not None:
        content.append({"type": "text/html", "value": email.html})
    headers = {"Message-ID": f"<{email.message_id}>"}
    for name, value in email.headers:
        if name.lower() not in RESERVED_HEADERS:
            headers[name] = value
    return {
        "personalizations": [{"to": [{"email": email.to}]}],
        "from": sender,
        "subject": email.subject,
        "content": content,
        "headers": headers,
        "custom_args": {SHVYA_MESSAGE_ARG: email.message_id},
        # SendGrid's own subscription tracking would add its List-Unsubscribe and footer, and
        # click tracking would rewrite the signed unsubscribe link: SHVYA brings its own.
        "tracking_settings": {
            "subscription_tracking": {"enable": False},
            "click_tracking": {"enable": False, "enable_text": False},
        },
    }


def _errors_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or f"HTTP {response.status_code}"
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return f"HTTP {response.status_code}"
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = str(error.get("message") or "")
        field = error.get("field")
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or f"HTTP {response.status_code}"


def _reset_at(response: httpx.Response) -> datetime | None:
    value = response.headers.get("X-RateLimit-Reset")
    try:
        return datetime.fromtimestamp(int(value), tz=UTC) if value else None
    except (ValueError, OverflowError, OSError):
        return None


def raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    text = _errors_text(response)
    if status in (401, 403):
        raise ChannelSendError(FailureKind.auth, str(status), text)
    if status == 429:
        raise ChannelSendError(FailureKind.retry, "429", text, retry_at=_reset_at(response))
    if status >= 500:
        raise ChannelSendError(FailureKind.retry, str(status), text)
    raise ChannelSendError(FailureKind.permanent, str(status), text)


class SendGridTransport:
    """Delivers composed email through SendGrid's v3 Mail Send endpoint."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
        timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached SendGrid: safe to try again.
            raise ChannelSendError(
                FailureKind.retry, "connect", str(exc) or "connect failed"
            ) from None
        except httpx.HTTPError as exc:
            # Sent, but no answer: SendGrid may have taken it. Resending could double it.
            raise ChannelSendError(
                FailureKind.unknown, "no_response", f"{type(exc).__name__}: {exc}"
            ) from None

    def send_email(self, email: OutgoingEmail) -> SendResult:
        response = self._request("POST", "/v3/mail/send", json=mail_payload(email))
        raise_for_status(response)
        message_id = response.headers.get("X-Message-Id")
        if not message_id:
            raise ChannelSendError(
                FailureKind.unknown,
                "bad_response",
                f"SendGrid answered {response.status_code} without X-Message-Id",
            )
        return SendResult(external_id=message_id)

    def verify(self) -> None:
        """GET /v3/scopes: a refused key raises ChannelSendError(FailureKind.auth)."""
        response = self._request("GET", "/v3/scopes")
        raise_for_status(response)
        try:
            scopes = response.json().get("scopes")
        except (ValueError, AttributeError):
            scopes = None
        if isinstance(scopes, list) and "mail.send" not in scopes:
            raise ChannelSendError(
                FailureKind.auth,
                "scope",
                "the SendGrid API key lacks the mail.send permission",
            )

    def close(self) -> None:
        self._client.close()


def sendgrid_transport(
    config: dict[str, Any], secret: str | None, settings: Settings
) -> EmailTransport:
    """The TransportFactory for {"provider": "sendgrid"} accounts: the secret is the API key."""
    if not secret:
        raise ChannelSendError(FailureKind.auth, "config", "the SendGrid account has no API key")
    return SendGridTransport(
        api_key=secret,
        base_url=settings.sendgrid_base_url,
        timeout_seconds=settings.email_timeout_seconds,
    )
