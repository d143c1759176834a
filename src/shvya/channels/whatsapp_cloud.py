"""WhatsApp Business Cloud API over httpx (docs/whatsapp.md section 1).

No SDK: the Graph base URL and version come from settings, so a local fake server plugs in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from shvya.channels.adapters import ChannelSendError, FailureKind, SendResult
from shvya.channels.schemas import (
    GRAPH_CREDENTIAL_RULE,
    Interactive,
    Media,
    OutboundContent,
    TemplateSend,
    is_graph_token,
)
from shvya.schemas import storable_text

logger = logging.getLogger(__name__)

DEFAULT_GRAPH_BASE_URL = "https://graph.facebook.com"
DEFAULT_GRAPH_VERSION = "v25.0"

# Branch on Graph's error `code` (docs/whatsapp.md 1.4), never on titles or HTTP status.
RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056, 131057})
OUTSIDE_WINDOW_CODES = frozenset({131047})
AUTH_CODES = frozenset({0, 190})
# The channel itself cannot send (locked, blocked for policy, missing permission).
CHANNEL_BLOCKED_CODES = frozenset({10, 368, 131031})
PERMANENT_CODES = frozenset(
    {100, 130497, 131026, 131049, 131050, 131051, 132000, 132001, 132012, 132015, 132016}
)
MARKETING_OPT_OUT_CODE = 131050
# Meta's media files are served from its own hosts; nothing else is fetched with our token.
MEDIA_HOST_SUFFIXES = (".fbcdn.net", ".fbsbx.com", ".whatsapp.net", ".facebook.com")
# What SHVYA reads of a business phone number when it is connected (docs/whatsapp.md 1.14).
PHONE_NUMBER_FIELDS = "id,display_phone_number,verified_name"


def failure_kind(code: int | None, http_status: int) -> FailureKind:
    if code in RETRY_CODES:
        return FailureKind.retry
    if code in OUTSIDE_WINDOW_CODES:
        return FailureKind.outside_window
    if code in AUTH_CODES:
        return FailureKind.auth
    if code in CHANNEL_BLOCKED_CODES or (200 <= (code or 0) <= 299):
        return FailureKind.channel_blocked
    if code in PERMANENT_CODES:
        return FailureKind.permanent
    if http_status >= 500 or http_status == 429:
        return FailureKind.retry
    return FailureKind.permanent


def verify_signature(*, body: bytes, header: str | None, app_secret: str) -> bool:
    """X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body
    (docs/whatsapp.md 1.7)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest().encode()
    # Bytes, not str: compare_digest refuses non-ASCII strings, and a forged header must be a
    # 401, never a 500 that Meta would retry.
    return hmac.compare_digest(expected, header.removeprefix("sha256=").encode("utf-8", "replace"))


def recipient_fields(to: str) -> dict[str, str]:
    """`to` takes digits only; a business-scoped user id (stored as bsuid:...) goes as
    `recipient`."""
    if to.startswith("bsuid:"):
        return {"recipient": to.removeprefix("bsuid:")}
    return {"to": to.lstrip("+")}


def _media_object(media: Media) -> dict[str, Any]:
    body: dict[str, Any] = {"link": str(media.link)} if media.link else {"id": media.media_id}
    if media.caption:
        body["caption"] = media.caption
    if media.filename:
        body["filename"] = media.filename
    return body


def _interactive_object(interactive: Interactive) -> dict[str, Any]:
    body: dict[str, Any] = {"body": {"text": interactive.body}}
    if interactive.header:
        body["header"] = {"type": "text", "text": interactive.header}
    if interactive.footer:
        body["footer"] = {"text": interactive.footer}
    if interactive.kind == "buttons":
        body["type"] = "button"
        body["action"] = {
            "buttons": [
                {"type": "reply", "reply": {"id": b.id, "title": b.title}}
                for b in interactive.buttons
            ]
        }
    else:
        body["type"] = "list"
        body["action"] = {
            "button": interactive.list_button,
            "sections": [
                {
                    **({"title": s.title} if s.title else {}),
                    "rows": [
                        {
                            "id": r.id,
                            "title": r.title,
                            **({"description": r.description} if r.description else {}),
                        }
                        for r in s.rows
                    ],
                }
                for s in interactive.sections
            ],
        }
    return body


def _template_object(template: TemplateSend) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    if template.header_media is not None:
        kind = template.header_media.kind.value
        components.append(
            {
                "type": "header",
                "parameters": [{"type": kind, kind: _media_object(template.header_media)}],
            }
        )
    elif template.header_text is not None:
        components.append(
            {"type": "header", "parameters": [{"type": "text", "text": template.header_text}]}
        )
    if template.body_params:
        components.append(
            {
                "type": "body",
                "parameters": [{"type": "text", "text": value} for value in template.body_params],
            }
        )
    # Meta's index is the button's position among all the template's buttons, quick replies
    # included; the router fills url_button_indexes from the stored template.
    positions = template.url_button_indexes or list(range(len(template.button_url_params)))
    for position, value in zip(positions, template.button_url_params, strict=False):
        components.append(
            {
                "type": "button",
                "sub_type": "url",
                "index": str(position),
                "parameters": [{"type": "text", "text": value}],
            }
        )
    body: dict[str, Any] = {
        "name": template.name,
        "language": {"policy": "deterministic", "code": template.language},
    }
    if components:
        body["components"] = components
    return body


def message_payload(to: str, content: OutboundContent) -> dict[str, Any]:
    """The JSON body of POST /{version}/{phone-number-id}/messages (docs/whatsapp.md 1.2)."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **recipient_fields(to),
    }
    if content.text is not None:
        payload["type"] = "text"
        payload["text"] = {"preview_url": False, "body": content.text}
    elif content.media is not None:
        kind = content.media.kind.value
        payload["type"] = kind
        payload[kind] = _media_object(content.media)
    elif content.interactive is not None:
        payload["type"] = "interactive"
        payload["interactive"] = _interactive_object(content.interactive)
    else:
        assert content.template is not None
        payload["type"] = "template"
        payload["template"] = _template_object(content.template)
    if content.reply_to and content.template is None:
        payload["context"] = {"message_id": content.reply_to}
    return payload


@dataclass(frozen=True)
class GraphError:
    code: int | None
    message: str
    details: str


def _graph_error(response: httpx.Response) -> GraphError:
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    code = error.get("code")
    return GraphError(
        code=code if isinstance(code, int) else None,
        message=str(error.get("message") or response.reason_phrase)[:500],
        details=str((error.get("error_data") or {}).get("details") or "")[:500],
    )


class WhatsAppCloudAdapter:
    def __init__(
        self,
        *,
        phone_number_id: str,
        access_token: str,
        base_url: str = DEFAULT_GRAPH_BASE_URL,
        version: str = DEFAULT_GRAPH_VERSION,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.base_url = base_url.rstrip("/")
        self.version = version
        # A token stored before tokens were checked at the door may not fit in a header:
        # every call then fails as Meta's refusal of a token would (an `auth` failure, the
        # channel needs a person), not with a UnicodeEncodeError retried to the dead letters.
        self._token_usable = is_graph_token(access_token)
        self._client = httpx.Client(
            base_url=f"{self.base_url}/{version}",
            headers={"Authorization": f"Bearer {access_token}"} if self._token_usable else {},
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def _check_token(self) -> None:
        if not self._token_usable:
            raise ChannelSendError(
                FailureKind.auth,
                "token_unusable",
                f"the stored access token is not usable ({GRAPH_CREDENTIAL_RULE}); "
                "connect the number again with a valid token",
            )

    def _post_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._check_token()
        try:
            response = self._client.post(f"/{self.phone_number_id}/messages", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached Meta: safe to try again.
            raise ChannelSendError(
                FailureKind.retry, "connect", str(exc) or "connect failed"
            ) from None
        except httpx.HTTPError as exc:
            # Sent, but no answer: Meta may have accepted it. Resending could double it.
            raise ChannelSendError(
                FailureKind.unknown, "no_response", f"{type(exc).__name__}: {exc}"
            ) from None
        if response.status_code == 200:
            try:
                body: dict[str, Any] = response.json()
            except ValueError:
                # Meta answered 200, so it may have taken the message: never resend.
                raise ChannelSendError(
                    FailureKind.unknown, "bad_response", "Meta answered 200 without JSON"
                ) from None
            return body
        error = _graph_error(response)
        kind = failure_kind(error.code, response.status_code)
        detail = f"{error.message}" + (f" ({error.details})" if error.details else "")
        raise ChannelSendError(kind, str(error.code or response.status_code), detail)

    def send(self, *, to: str, content: OutboundContent) -> SendResult:
        body = self._post_message(message_payload(to, content))
        try:
            return SendResult(external_id=str(body["messages"][0]["id"]))
        except (KeyError, IndexError, TypeError):
            raise ChannelSendError(
                FailureKind.unknown, "bad_response", "Meta answered 200 without a message id"
            ) from None

    def mark_read(self, message_id: str, *, typing: bool = False) -> None:
        """Blue ticks on the lead's message, and optionally the typing indicator (<= 25 s)."""
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        self._post_message(payload)

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """An account-level Graph call (not a send): JSON in, JSON out, errors mapped."""
        self._check_token()
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ChannelSendError(
                FailureKind.retry, "transport", f"{type(exc).__name__}: {exc}"
            ) from None
        if response.status_code != 200:
            error = _graph_error(response)
            raise ChannelSendError(
                failure_kind(error.code, response.status_code),
                str(error.code or response.status_code),
                error.message + (f" ({error.details})" if error.details else ""),
            )
        try:
            body = response.json()
        except ValueError:
            raise ChannelSendError(FailureKind.retry, "bad_response", "not JSON") from None
        if not isinstance(body, dict):
            raise ChannelSendError(FailureKind.retry, "bad_response", "not a JSON object")
        return body

    def fetch_media(
        self, media_id: str, *, max_bytes: int = 100 * 1024 * 1024
    ) -> tuple[bytes, str]:
        """A lead's media: its URL from the Graph API, then the bytes with our token."""
        info = self._request("GET", f"/{quote(media_id, safe='')}")
        url = str(info.get("url", ""))
        if not self._is_own_or_meta_host(url, meta_hosts=True):
            raise ChannelSendError(
                FailureKind.permanent, "media_url", "the media URL is not on a Meta host"
            )
        try:
            with self._client.stream("GET", url) as download:
                if download.status_code != 200:
                    kind = (
                        FailureKind.retry if download.status_code >= 500 else FailureKind.permanent
                    )
                    raise ChannelSendError(
                        kind, str(download.status_code), "the media download was refused"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in download.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ChannelSendError(
                            FailureKind.permanent, "too_large", "media too large"
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ChannelSendError(
                FailureKind.retry, "transport", f"{type(exc).__name__}: {exc}"
            ) from None
        return b"".join(chunks), str(info.get("mime_type") or "application/octet-stream")

    def _is_own_or_meta_host(self, url: str, *, meta_hosts: bool) -> bool:
        """Our token goes only to the Graph API's own origin (scheme, host and port) or, for
        media, to Meta's CDN hosts over https."""
        parsed = urlparse(url)
        if parsed.scheme not in {"https", "http"} or parsed.username or parsed.password:
            return False
        own = urlparse(self.base_url)
        try:
            same_origin = (parsed.scheme, (parsed.hostname or "").lower(), parsed.port) == (
                own.scheme,
                (own.hostname or "").lower(),
                own.port,
            )
        except ValueError:  # a port that is not a number
            return False
        if same_origin:
            return True
        host = (parsed.hostname or "").lower()
        return meta_hosts and parsed.scheme == "https" and host.endswith(MEDIA_HOST_SUFFIXES)

    def _pages(self, url: str, *, what: str, max_pages: int) -> Iterator[dict[str, Any]]:
        """Every item of a Graph list, following `paging.next` on the Graph API's own host."""
        next_page: str | None = url
        for _ in range(max_pages):
            if next_page is None:
                return
            body = self._request("GET", next_page)
            data = body.get("data", [])
            yield from (item for item in data if isinstance(item, dict))
            next_url = (body.get("paging") or {}).get("next")
            if isinstance(next_url, str) and not self._is_own_or_meta_host(
                next_url, meta_hosts=False
            ):
                raise ChannelSendError(
                    FailureKind.permanent, "paging", "paging.next leaves the Graph API's host"
                )
            next_page = next_url if isinstance(next_url, str) else None
        if next_page is not None:
            raise ChannelSendError(
                FailureKind.permanent, "too_many_pages", f"more than {max_pages} pages of {what}"
            )

    def list_templates(self, waba_id: str, *, max_pages: int = 200) -> Iterator[dict[str, Any]]:
        """Every template of the account, following `paging.next`."""
        return self._pages(
            f"/{quote(waba_id, safe='')}/message_templates?limit=100",
            what="templates",
            max_pages=max_pages,
        )

    def phone_number(self) -> dict[str, Any]:
        """This business number as Meta knows it (`GET /{phone-number-id}`): proof that the
        number exists and that the token may use it (docs/whatsapp.md 1.14)."""
        return self._request(
            "GET",
            f"/{quote(self.phone_number_id, safe='')}",
            params={"fields": PHONE_NUMBER_FIELDS},
        )

    def waba_phone_numbers(self, waba_id: str, *, max_pages: int = 20) -> list[dict[str, Any]]:
        """The business numbers of a WhatsApp Business Account (`GET /{waba-id}/phone_numbers`),
        as the token sees them (docs/whatsapp.md 1.14)."""
        return list(
            self._pages(
                f"/{quote(waba_id, safe='')}/phone_numbers?fields={PHONE_NUMBER_FIELDS}&limit=100",
                what="phone numbers",
                max_pages=max_pages,
            )
        )

    def submit_template(self, waba_id: str, definition: dict[str, Any]) -> dict[str, Any]:
        return self._request(
            "POST", f"/{quote(waba_id, safe='')}/message_templates", json=definition
        )


# --- webhook payloads (docs/whatsapp.md 1.6) ---------------------------------------------------


@dataclass(frozen=True)
class WaInbound:
    phone_number_id: str
    wamid: str
    wa_id: str | None
    user_id: str | None
    name: str | None
    timestamp: datetime | None
    type: str
    text: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class WaStatus:
    phone_number_id: str
    wamid: str
    status: str
    timestamp: datetime | None
    error_code: int | None
    error: str | None


@dataclass(frozen=True)
class WaPreference:
    phone_number_id: str | None
    waba_id: str
    wa_id: str
    value: str
    timestamp: datetime | None


@dataclass(frozen=True)
class WaTemplateUpdate:
    waba_id: str
    event: str
    template_id: str | None
    name: str
    language: str
    reason: str | None


@dataclass
class WebhookBatch:
    inbound: list[WaInbound] = field(default_factory=list)
    statuses: list[WaStatus] = field(default_factory=list)
    preferences: list[WaPreference] = field(default_factory=list)
    template_updates: list[WaTemplateUpdate] = field(default_factory=list)
    ignored: int = 0


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds as a string; anything else is treated as unknown (the caller uses now)."""
    try:
        seconds = int(str(value))
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    """A non-empty string as the database can store it (NUL removed, lone surrogates replaced:
    docs/reliability.md P1), else None."""
    return (storable_text(value) or None) if isinstance(value, str) else None


def _describe(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text a person reads in the inbox, and the details worth keeping, per type."""
    kind = str(message.get("type") or "unknown")
    meta: dict[str, Any] = {"type": kind}
    context = _dict(message.get("context"))
    if context.get("id"):
        meta["reply_to"] = context["id"]
    if message.get("referral"):
        meta["referral"] = {
            k: v for k, v in _dict(message["referral"]).items() if isinstance(v, str | int)
        }
    body = _dict(message.get(kind))
    if kind == "text":
        return str(body.get("body") or ""), meta
    if kind == "button":
        meta["payload"] = body.get("payload")
        return str(body.get("text") or body.get("payload") or "[button]"), meta
    if kind == "interactive":
        reply_kind = str(body.get("type") or "")
        reply = _dict(body.get(reply_kind))
        meta.update(
            {"reply_type": reply_kind, "reply_id": reply.get("id"), "title": reply.get("title")}
        )
        if reply.get("description"):
            meta["description"] = reply["description"]
        return str(reply.get("title") or reply.get("id") or "[interactive reply]"), meta
    if kind in {"image", "document", "audio", "video", "sticker"}:
        meta["media"] = {
            key: body[key]
            for key in ("id", "mime_type", "sha256", "caption", "filename")
            if isinstance(body.get(key), str)
        }
        caption = body.get("caption") or body.get("filename")
        return (f"[{kind}] {caption}" if caption else f"[{kind}]"), meta
    if kind == "location":
        meta["location"] = {
            k: body[k] for k in ("latitude", "longitude", "name", "address") if k in body
        }
        place = " ".join(str(body[k]) for k in ("name", "address") if body.get(k))
        where = f"{body.get('latitude')}, {body.get('longitude')}"
        return f"[location] {place} ({where})".replace("  ", " "), meta
    if kind == "contacts":
        cards = []
        for card in _list(message.get("contacts")):
            name = _dict(_dict(card).get("name")).get("formatted_name", "")
            phones = ", ".join(
                str(_dict(p).get("phone", "")) for p in _list(_dict(card).get("phones"))
            )
            cards.append(f"{name} {phones}".strip())
        meta["contacts"] = cards
        return "[contact] " + "; ".join(cards) if cards else "[contact]", meta
    if kind == "reaction":
        meta["emoji"] = body.get("emoji")
        meta["reacted_to"] = body.get("message_id")
        return f"[reaction] {body.get('emoji') or ''}".strip(), meta
    if kind == "unsupported":
        errors = _list(message.get("errors"))
        meta["errors"] = [_dict(e).get("code") for e in errors]
        return "[unsupported message]", meta
    return f"[{kind}]", meta


def parse_webhook(payload: Any) -> WebhookBatch:
    """Every entry, change, message and status of a delivery; malformed parts are counted
    and skipped, never fatal (Meta would redeliver a failed delivery for days)."""
    batch = WebhookBatch()
    for entry in _list(_dict(payload).get("entry")):
        entry = _dict(entry)
        waba_id = str(entry.get("id") or "")
        for change in _list(entry.get("changes")):
            change = _dict(change)
            field_name, value = change.get("field"), _dict(change.get("value"))
            phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
            if field_name == "messages":
                if phone_number_id is None:
                    batch.ignored += 1
                    continue
                _parse_messages(batch, phone_number_id, value)
            elif field_name == "user_preferences":
                for pref in _list(value.get("user_preferences")):
                    pref = _dict(pref)
                    wa_id, choice = _str(pref.get("wa_id")), _str(pref.get("value"))
                    if wa_id is None or choice not in {"stop", "resume"}:
                        batch.ignored += 1
                        continue
                    batch.preferences.append(
                        WaPreference(
                            phone_number_id=phone_number_id,
                            waba_id=waba_id,
                            wa_id=wa_id,
                            value=choice,
                            timestamp=_timestamp(pref.get("timestamp")),
                        )
                    )
            elif field_name == "message_template_status_update":
                name = _str(value.get("message_template_name"))
                language = _str(value.get("message_template_language"))
                event = _str(value.get("event"))
                if not (name and language and event):
                    batch.ignored += 1
                    continue
                batch.template_updates.append(
                    WaTemplateUpdate(
                        waba_id=waba_id,
                        event=event,
                        template_id=str(value.get("message_template_id") or "") or None,
                        name=name,
                        language=language,
                        reason=_str(value.get("reason")),
                    )
                )
            else:
                batch.ignored += 1
    return batch


def _parse_messages(batch: WebhookBatch, phone_number_id: str, value: dict[str, Any]) -> None:
    contacts = [_dict(c) for c in _list(value.get("contacts"))]
    for raw in _list(value.get("messages")):
        message = _dict(raw)
        wamid = _str(message.get("id"))
        sender = _str(message.get("from"))
        contact = next(
            (c for c in contacts if sender and c.get("wa_id") == sender),
            contacts[0] if len(contacts) == 1 else {},
        )
        user_id = _str(message.get("from_user_id")) or _str(contact.get("user_id"))
        if wamid is None or (sender is None and user_id is None):
            batch.ignored += 1
            continue
        text, meta = _describe(message)
        text = storable_text(text)  # a text of NUL characters alone reads as its type
        batch.inbound.append(
            WaInbound(
                phone_number_id=phone_number_id,
                wamid=wamid,
                wa_id=sender,
                user_id=user_id,
                name=_str(_dict(contact.get("profile")).get("name")),
                timestamp=_timestamp(message.get("timestamp")),
                type=str(meta["type"]),
                text=text or f"[{meta['type']}]",
                meta=meta,
            )
        )
    for raw in _list(value.get("statuses")):
        status = _dict(raw)
        wamid, state = _str(status.get("id")), _str(status.get("status"))
        if wamid is None or state is None:
            batch.ignored += 1
            continue
        error = _dict(next(iter(_list(status.get("errors"))), {}))
        code = error.get("code")
        details = _dict(error.get("error_data")).get("details")
        batch.statuses.append(
            WaStatus(
                phone_number_id=phone_number_id,
                wamid=wamid,
                status=state,
                timestamp=_timestamp(status.get("timestamp")),
                error_code=code if isinstance(code, int) else None,
                error=_str(details) or _str(error.get("title")) or _str(error.get("message")),
            )
        )
    if value.get("errors") and not value.get("messages") and not value.get("statuses"):
        batch.ignored += 1  # value-level async API errors: logged by the caller
