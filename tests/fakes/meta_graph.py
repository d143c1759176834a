"""A fake Meta Graph API (WhatsApp Business Cloud API) for SHVYA's tests.

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread, so the adapter goes
through sockets, timeouts and dropped connections exactly as against graph.facebook.com.
Beyond handing out wamids it enforces what makes WhatsApp unlike a plain HTTP API
(docs/whatsapp.md section 1): the 24-hour window (1.11), throughput and pair rate limits (1.9), the
template catalog and its statuses (1.12), failures that only arrive later as `failed`
statuses (1.3), and webhooks signed over Meta's exact bytes (1.6-1.8).

Where Meta's behaviour is unconfirmed (the [?] marks in docs/whatsapp.md 1.4 and section 3) the
fake picks one plausible answer; SHVYA should branch on error codes, never on HTTP statuses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import secrets
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

DEFAULT_VERSION = "v25.0"
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
MAX_WEBHOOK_ITEMS = 1000  # Graph's batching cap (docs/whatsapp.md 1.8)
MEDIA_URL_TTL = timedelta(minutes=5)  # Meta's media URLs expire after five minutes
ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
VERSION_RE = re.compile(r"v\d+\.\d+")
PHONE_RE = re.compile(r"\d{6,15}")
BSUID_RE = re.compile(r"[A-Z]{2}\.[0-9A-Za-z]+")
TEMPLATE_NAME_RE = re.compile(r"[a-z0-9_]{1,512}")
PLACEHOLDER_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
MESSAGE_TYPES = MEDIA_TYPES | {
    "text",
    "interactive",
    "template",
    "location",
    "contacts",
    "reaction",
}
HEADER_MEDIA_FORMATS = frozenset({"IMAGE", "VIDEO", "DOCUMENT"})
TEMPLATE_CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
BODY_PARAMETER_TYPES = frozenset({"text", "currency", "date_time"})

# code -> (title, details). Titles are Meta's; details as quoted in docs/whatsapp.md 1.4 and 1.6.
ERRORS: dict[int, tuple[str, str]] = {
    0: ("AuthException", "We were unable to authenticate the app user."),
    1: ("API Unknown", "Invalid request or possible server error."),
    2: ("API Service", "Temporary due to downtime or due to being overloaded."),
    4: ("Application request limit reached", "The app has reached its API call rate limit."),
    10: ("Permission Denied", "Permission is either not granted or has been removed."),
    100: ("Invalid parameter", "Invalid parameter."),
    190: ("Invalid OAuth access token - Cannot parse access token", ""),
    368: (
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account is restricted from messaging users.",
    ),
    2500: ("Unknown path components", ""),
    80007: ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    130429: (
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number in a short period of time",
    ),
    130472: (
        "User's number is part of an experiment",
        "Failed to send message because this user's phone number is part of an experiment",
    ),
    130497: (
        "Business account is restricted from messaging users in this country",
        "The business is restricted from messaging users in this country.",
    ),
    131000: ("Something went wrong", "Message failed to send due to an unknown error."),
    131008: ("Required parameter is missing", "A required parameter is missing."),
    131009: ("Parameter value is not valid", "One or more parameter values are invalid."),
    131016: ("Service unavailable", "A service is temporarily unavailable."),
    131026: ("Message undeliverable", "Message Undeliverable."),
    131031: ("Account has been locked", "The business account is locked."),
    131047: (
        "Re-engagement message",
        "More than 24 hours have passed since the recipient last replied to the sender number.",
    ),
    131048: (
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be "
        "sent from this phone number.",
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving "
        "marketing messages on WhatsApp from your business.",
        "This recipient has chosen to stop receiving marketing messages from your business.",
    ),
    131051: ("Message type unknown", "Message type is currently not supported."),
    131052: ("Media download error", "Unable to download the media sent by the user."),
    131053: ("Media upload error", "Unable to upload the media used in the message."),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    131057: ("Account in maintenance mode", "Business Account is in maintenance mode."),
    131062: (
        "Business-scoped user ID recipient not supported",
        "Sending to a business-scoped user ID is not supported for this message.",
    ),
    132000: (
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values does not match the template.",
    ),
    132001: (
        "Template name does not exist in the translation",
        "The template does not exist in the specified language or has not been approved.",
    ),
    132012: (
        "Parameter format does not match format in the created template",
        "A variable parameter value is formatted incorrectly.",
    ),
    132015: (
        "Template is Paused",
        "Template is paused due to low quality so it cannot be sent in a template message.",
    ),
    132016: (
        "Template is Disabled",
        "Template has been paused too many times due to low quality and is now permanently "
        "disabled.",
    ),
}


def error_title(code: int) -> str:
    return ERRORS.get(code, ("Error", ""))[0]


def error_details(code: int) -> str:
    return ERRORS.get(code, ("", ""))[1]


def http_status_for(code: int) -> int:
    """HTTP status per Graph code; unconfirmed for most 13xxxx codes (docs/whatsapp.md 1.4 [?])."""
    if code in (0, 190):
        return 401
    if code == 4:
        return 429
    if code in (10, 368, 131031) or 200 <= code <= 299:
        return 403
    if code == 131000:
        return 500
    if code in (2, 131016):
        return 503
    return 400


def webhook_error(code: int, details: str | None = None) -> dict[str, Any]:
    """An error object as webhooks carry it: title and message, no `type` (docs/whatsapp.md 1.4)."""
    title = error_title(code)
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": error_details(code) if details is None else details},
        "href": ERROR_HREF,
    }


def serialise_webhook(envelope: Mapping[str, Any]) -> bytes:
    """Meta's wire form: escaped unicode (`Jos\\u00e9`), which the signature covers."""
    return json.dumps(envelope, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _unix(at: datetime | int | None, default: datetime) -> int:
    if at is None:
        return int(default.timestamp())
    if isinstance(at, datetime):
        return int(at.timestamp())
    return int(at)


def _new_wamid() -> str:
    return (
        "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x12" + secrets.token_bytes(18)).decode()
    )


def _fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class GraphError(Exception):
    """An error the fake answers in Graph's shape (docs/whatsapp.md 1.4)."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        message: str | None = None,
        error_type: str = "OAuthException",
        http_status: int | None = None,
        error_subcode: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {details or message or error_title(code)}")
        self.code = code
        self.details = error_details(code) if details is None else details
        self.message = message or f"(#{code}) {error_title(code)}"
        self.error_type = error_type
        self.http_status = http_status or http_status_for(code)
        self.error_subcode = error_subcode

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.error_subcode is not None:
            error["error_subcode"] = self.error_subcode
        if self.details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = _fbtrace_id()
        return {"error": error}


def _missing_object(method: str, object_id: str) -> GraphError:
    return GraphError(
        100,
        "",
        message=(
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation."
        ),
        error_type="GraphMethodException",
        error_subcode=33,
    )


# --- What the fake records -------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON
    at: datetime  # by the fake's clock
    status: int | None = None  # None until answered, and for dropped connections


@dataclass(frozen=True)
class SentMessage:
    wamid: str
    to: str  # `to` or `recipient` exactly as sent
    wa_id: str  # who it reached (differs from `to` after alias_wa_id)
    type: str
    body: dict[str, Any]
    at: datetime
    template: tuple[str, str] | None  # (name, language) for template sends
    category: str | None  # the template's category; None for service messages


@dataclass(frozen=True)
class ReadReceipt:
    message_id: str
    is_typing: bool
    is_known_inbound: bool  # a wamid this fake delivered inbound (not, say, our own outbound)
    body: dict[str, Any]
    at: datetime


@dataclass
class Template:
    id: str
    name: str
    language: str
    category: str
    status: str
    components: list[dict[str, Any]]
    body_params: int
    header: str | None  # None, "TEXT", "IMAGE", "VIDEO" or "DOCUMENT"
    header_text_params: int
    buttons: list[tuple[str, bool]]  # (QUICK_REPLY | URL | PHONE_NUMBER, has a variable)
    rejected_reason: str | None = None

    def listing(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "name": self.name,
            "parameter_format": "POSITIONAL",
            "components": self.components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
        }
        if self.rejected_reason is not None:
            item["rejected_reason"] = self.rejected_reason
        return item


@dataclass(frozen=True)
class PhoneNumber:
    """A business number of a WABA, as `GET /{phone-number-id}` and
    `GET /{waba-id}/phone_numbers` show it (docs/whatsapp.md 1.14)."""

    id: str
    waba_id: str
    display_phone_number: str
    verified_name: str
    quality_rating: str = "GREEN"
    code_verification_status: str = "VERIFIED"

    def node(self, fields: Sequence[str]) -> dict[str, Any]:
        values = {
            "id": self.id,
            "display_phone_number": self.display_phone_number,
            "verified_name": self.verified_name,
            "quality_rating": self.quality_rating,
            "code_verification_status": self.code_verification_status,
        }
        return {"id": self.id} | {name: values[name] for name in fields}


# What Graph answers for a phone number when `fields` is not given.
PHONE_NUMBER_DEFAULT_FIELDS = (
    "code_verification_status",
    "display_phone_number",
    "id",
    "quality_rating",
    "verified_name",
)


@dataclass(frozen=True)
class MediaFile:
    id: str
    content: bytes
    mime_type: str
    sha256: str


@dataclass(frozen=True)
class WebhookItem:
    """One message, status, preference, error or template update, before it is enveloped."""

    field: str
    kind: Literal["message", "status", "user_preference", "error", "template_status"]
    payload: dict[str, Any]
    contact: dict[str, Any] | None = None


@dataclass
class Delivery:
    index: int
    url: str
    body: bytes  # exactly what was signed and posted
    headers: dict[str, str]
    at: datetime
    status_code: int | None = None
    error: str | None = None  # the exception when the POST itself failed
    redelivery_of: int | None = None

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    path_contains: str | None
    code: int | None = None
    http_status: int | None = None
    raw_body: bytes | None = None
    details: str | None = None
    seconds: float = 0.0
    is_processed: bool = True


@dataclass
class _AsyncFailure:
    code: int
    remaining: int | None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json_response(payload: Any, status: int = 200) -> _Response:
    return _Response(status, json.dumps(payload).encode())


def _error_response(error: GraphError) -> _Response:
    headers: tuple[tuple[str, str], ...] = ()
    if error.http_status == 401:
        headers = (
            ("WWW-Authenticate", f'OAuth "Facebook Platform" "invalid_token" "{error.message}"'),
        )
    return _Response(error.http_status, json.dumps(error.body()).encode(), headers=headers)


class WebhookPoster(Protocol):
    """What an httpx.Client or a Starlette TestClient offers: posting bytes with headers."""

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response: ...


_SIGN = object()  # deliver_raw's default: sign the bytes correctly


# --- The HTTP server -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeMetaGraph) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track_connection(self.connection, is_open=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track_connection(self.connection, is_open=False)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def do_DELETE(self) -> None:
        self.server.fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep pytest output clean; fake.requests is the log


# --- The fake --------------------------------------------------------------------------------


class FakeMetaGraph:
    """Meta's Graph API for one WhatsApp business number and its WABA; see docs/whatsapp.md 1.13."""

    def __init__(
        self,
        *,
        access_token: str = "EAAG-test",
        app_secret: str = "app-secret",
        phone_number_id: str = "106540352242922",
        waba_id: str = "102290129340398",
        display_phone_number: str = "15550783881",
        verified_name: str = "SHVYA Test Business",
        version: str = DEFAULT_VERSION,
        now: Callable[[], datetime] | None = None,
        throughput_per_second: int | None = 80,
        pair_burst: int | None = 45,
        pair_interval_seconds: float = 6.0,
        webhook_url: str | None = None,
        webhook_client: WebhookPoster | None = None,
    ) -> None:
        self.access_token = access_token
        self.app_secret = app_secret
        self.phone_number_id = phone_number_id
        self.waba_id = waba_id
        self.display_phone_number = display_phone_number
        self.verified_name = verified_name
        self.version = version
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.throughput_per_second = throughput_per_second
        self.pair_burst = pair_burst
        self.pair_interval_seconds = pair_interval_seconds
        self.webhook_url = webhook_url
        self.webhook_client = webhook_client
        # Meta reports some window misses only as a later `failed` status (docs/whatsapp.md 1.3).
        self.window_errors_async = False
        # Statuses queued for every accepted send (e.g. ("sent", "delivered")); see
        # deliver_statuses(). Empty by default so nothing arrives unasked.
        self.auto_statuses: tuple[str, ...] = ()

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._http_client: httpx.Client | None = None
        self._ids = itertools.count(1)
        self._clear_state()

    def _clear_state(self) -> None:
        with self._lock:
            self._requests: list[RecordedRequest] = []
            self._sent: list[SentMessage] = []
            self._reads: list[ReadReceipt] = []
            self._deliveries: list[Delivery] = []
            self._faults: list[_Fault] = []
            self._last_inbound: dict[str, datetime] = {}
            self._inbound_wamids: set[str] = set()
            self._send_times: deque[datetime] = deque()
            self._pair_tokens: dict[str, tuple[float, datetime]] = {}
            self._templates: dict[tuple[str, str], Template] = {}
            self._media: dict[str, MediaFile] = {}
            self._media_tokens: dict[str, tuple[str, datetime]] = {}
            self._async_failures: dict[str, _AsyncFailure] = {}
            self._pending_statuses: list[WebhookItem] = []
            self._marketing_stopped: set[str] = set()
            self._aliases: dict[str, str] = {}
            self._other_numbers: dict[str, PhoneNumber] = {}
            self.server_errors: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeMetaGraph:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # how long stop() waits for the loop
            name="fake-meta-graph",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes delay_next waits
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive sockets would hold handler threads
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def __enter__(self) -> FakeMetaGraph:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None and self.server_errors:
            # A bug in the fake must not pass as a Meta outage.
            raise AssertionError("the fake Graph server crashed:\n" + "\n".join(self.server_errors))

    def reset(self) -> None:
        """Forget everything a test did (requests, catalog, windows, faults); keep the config."""
        self._clear_state()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Graph server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/{self.version}"

    def _track_connection(self, connection: socket.socket, *, is_open: bool) -> None:
        with self._lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _now(self) -> datetime:
        now = self.now()
        if now.tzinfo is None:
            raise ValueError("the fake's clock must return aware datetimes")
        return now

    # --- recordings --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sent_messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._sent)

    @property
    def read_receipts(self) -> list[ReadReceipt]:
        with self._lock:
            return list(self._reads)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def pending_statuses(self) -> list[WebhookItem]:
        with self._lock:
            return list(self._pending_statuses)

    def requests_to(
        self, path_contains: str, *, method: str | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._requests
                if path_contains in r.path and (method is None or r.method == method.upper())
            ]

    def wait_for_requests(
        self, count: int, *, path_contains: str = "", timeout_seconds: float = 5.0
    ) -> list[RecordedRequest]:
        """Wait (bounded, no sleeping) for `count` answered requests: tests with workers.

        Dropped requests are never answered, so they never count.
        """

        def answered() -> list[RecordedRequest]:
            return [r for r in self._requests if path_contains in r.path and r.status is not None]

        with self._changed:
            if not self._changed.wait_for(lambda: len(answered()) >= count, timeout_seconds):
                raise TimeoutError(
                    f"{len(answered())} of {count} requests to {path_contains!r} "
                    f"within {timeout_seconds} s"
                )
            return answered()

    # --- state the test sets -----------------------------------------------------------------

    def user_wrote(self, wa_id: str, *, at: datetime | None = None) -> None:
        """Open the user's 24-hour window as if they wrote at `at` (docs/whatsapp.md 1.11)."""
        at = at or self._now()
        with self._lock:
            previous = self._last_inbound.get(wa_id)
            self._last_inbound[wa_id] = at if previous is None else max(previous, at)

    def add_phone_number(
        self,
        phone_number_id: str,
        *,
        waba_id: str,
        display_phone_number: str = "15550100999",
        verified_name: str = "Another Business",
    ) -> PhoneNumber:
        """Another business number the token may see, in `waba_id` (a new WABA or this one).
        Only the fake's own number sends messages."""
        number = PhoneNumber(phone_number_id, waba_id, display_phone_number, verified_name)
        with self._lock:
            self._other_numbers[phone_number_id] = number
        return number

    def phone_numbers(self) -> dict[str, PhoneNumber]:
        """Every business number the fake knows, by id: its own first."""
        own = PhoneNumber(
            self.phone_number_id, self.waba_id, self.display_phone_number, self.verified_name
        )
        with self._lock:
            return {own.id: own} | {k: v for k, v in self._other_numbers.items() if k != own.id}

    def alias_wa_id(self, number: str, wa_id: str) -> None:
        """Sends to `number` reach `wa_id` (Meta normalises some countries' numbers)."""
        with self._lock:
            self._aliases[number] = wa_id

    def set_marketing_preference(self, wa_id: str, value: Literal["stop", "resume"]) -> None:
        with self._lock:
            if value == "stop":
                self._marketing_stopped.add(wa_id)
            else:
                self._marketing_stopped.discard(wa_id)

    def fail_async(self, wa_id: str, code: int = 131026, *, times: int | None = None) -> None:
        """Sends to `wa_id` answer 200, then queue a `failed` status with `code`.

        The status waits in pending_statuses until deliver_statuses(): deterministic, no
        background timers. `times=None` means every send until reset().
        """
        with self._lock:
            self._async_failures[wa_id] = _AsyncFailure(code, times)

    def add_template(
        self,
        name: str,
        language: str = "en_US",
        category: str = "UTILITY",
        *,
        status: str = "APPROVED",
        body_params: int = 2,
        header: Literal["TEXT", "IMAGE", "VIDEO", "DOCUMENT"] | None = None,
        url_buttons: int = 0,
        quick_replies: int = 0,
        template_id: str | None = None,
    ) -> Template:
        """Put a template in the catalog; its buttons are the quick replies, then the URLs."""
        components: list[dict[str, Any]] = []
        if header == "TEXT":
            components.append(
                {
                    "type": "HEADER",
                    "format": "TEXT",
                    "text": "Hello {{1}}",
                    "example": {"header_text": ["Ana"]},
                }
            )
        elif header is not None:
            components.append(
                {"type": "HEADER", "format": header, "example": {"header_handle": ["4::aGVhZGVy"]}}
            )
        placeholders = " ".join(f"{{{{{i}}}}}" for i in range(1, body_params + 1))
        body: dict[str, Any] = {
            "type": "BODY",
            "text": f"Hi, thanks for your interest. {placeholders}",
        }
        if body_params:
            body["example"] = {"body_text": [[f"value{i}" for i in range(1, body_params + 1)]]}
        components.append(body)
        buttons: list[dict[str, Any]] = [
            {"type": "QUICK_REPLY", "text": f"Option {i + 1}"} for i in range(quick_replies)
        ]
        buttons += [
            {
                "type": "URL",
                "text": f"Open link {i + 1}",
                "url": f"https://example.com/{i + 1}/{{{{1}}}}",
                "example": [f"https://example.com/{i + 1}/abc"],
            }
            for i in range(url_buttons)
        ]
        if buttons:
            components.append({"type": "BUTTONS", "buttons": buttons})
        template = _template_from_components(
            template_id=template_id or self._numeric_id(),
            name=name,
            language=language,
            category=category.upper(),
            status=status,
            components=components,
        )
        with self._lock:
            self._templates[(name, language)] = template
        return replace(template)

    def template(self, name: str, language: str) -> Template | None:
        with self._lock:
            found = self._templates.get((name, language))
            return None if found is None else replace(found)

    @property
    def templates(self) -> list[Template]:
        with self._lock:
            return [replace(t) for t in self._templates.values()]

    def set_template_status(
        self,
        name: str,
        language: str,
        status: str,
        *,
        reason: str | None = None,
        deliver: bool = False,
    ) -> httpx.Response | None:
        """Meta's review outcome; with deliver=True also the status-update webhook (1.6)."""
        with self._lock:
            template = self._templates[(name, language)]
            template.status = status
            template.rejected_reason = (reason or "NONE") if status == "REJECTED" else None
        if deliver:
            return self.deliver_template_status(name, language, status, reason=reason)
        return None

    def add_media(self, media_id: str, content: bytes, mime_type: str) -> MediaFile:
        media = MediaFile(media_id, content, mime_type, hashlib.sha256(content).hexdigest())
        with self._lock:
            self._media[media_id] = media
        return media

    # --- fault injection ---------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        code: int | None = None,
        http_status: int | None = None,
        raw_body: str | bytes | None = None,
        details: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next `n` requests fail without being processed.

        With `raw_body` they answer those bytes (default HTTP 500); otherwise a Graph error
        with `code` (default 131000) and its usual HTTP status unless `http_status` is given.
        """
        body = raw_body.encode() if isinstance(raw_body, str) else raw_body
        with self._lock:
            self._faults.extend(
                _Fault(
                    "fail",
                    path_contains,
                    code=code,
                    http_status=http_status,
                    raw_body=body,
                    details=details,
                )
                for _ in range(n)
            )

    def delay_next(self, seconds: float, n: int = 1, *, path_contains: str | None = None) -> None:
        """The next `n` requests are processed at once but answered `seconds` later.

        A client that times out meanwhile has had its message accepted: the ambiguous case.
        """
        with self._lock:
            self._faults.extend(_Fault("delay", path_contains, seconds=seconds) for _ in range(n))

    def drop_next(
        self, n: int = 1, *, is_processed: bool = True, path_contains: str | None = None
    ) -> None:
        """The next `n` requests are read, then the connection closes with no answer.

        `is_processed=True` (default): Meta took the message and the answer was lost.
        """
        with self._lock:
            self._faults.extend(
                _Fault("drop", path_contains, is_processed=is_processed) for _ in range(n)
            )

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path_contains is None or fault.path_contains in path:
                    return self._faults.pop(index)
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> _Response:
        if fault.raw_body is not None:
            return _Response(fault.http_status or 500, fault.raw_body, content_type="text/plain")
        code = 131000 if fault.code is None else fault.code
        return _error_response(GraphError(code, fault.details, http_status=fault.http_status))

    # --- serving -----------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        record = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=dict(parse_qsl(split.query)),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=raw,
            json=_parse_json(raw),
            at=self._now(),
        )
        with self._changed:
            self._requests.append(record)
        fault = self._take_fault(split.path)
        response: _Response | None = None
        if fault is not None and fault.kind == "fail":
            response = self._fault_response(fault)
        elif fault is None or fault.kind != "drop" or fault.is_processed:
            response = self._answer(record)
        if fault is not None and fault.kind == "drop":
            handler.close_connection = True
            return
        if fault is not None and fault.kind == "delay" and self._stopping.wait(fault.seconds):
            handler.close_connection = True
            return
        assert response is not None
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:
            handler.close_connection = True  # the client gave up (timed out) meanwhile
        with self._changed:
            record.status = response.status
            self._changed.notify_all()

    def _answer(self, record: RecordedRequest) -> _Response:
        try:
            return self._route(record)
        except GraphError as error:
            return _error_response(error)
        except Exception:
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return _error_response(GraphError(1, "the fake Graph server crashed"))

    def _is_authorised(self, record: RecordedRequest) -> bool:
        scheme, _, token = record.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.access_token.encode()
        )

    def _route(self, record: RecordedRequest) -> _Response:
        if not self._is_authorised(record):
            raise GraphError(
                190, "", message="Invalid OAuth access token - Cannot parse access token"
            )
        parts = [part for part in record.path.split("/") if part]
        method = record.method
        if len(parts) == 2 and parts[0] == "media-files" and method == "GET":
            return self._download_media(parts[1], record.query.get("token", ""))
        if not parts or not VERSION_RE.fullmatch(parts[0]):
            raise GraphError(2500, "", message=f"Unknown path components: {record.path}")
        rest = parts[1:]
        if len(rest) == 2 and rest[1] == "messages" and method == "POST":
            if rest[0] != self.phone_number_id:
                raise _missing_object(method, rest[0])
            return self._handle_messages(record)
        if len(rest) == 2 and rest[1] == "message_templates" and method in ("GET", "POST"):
            if rest[0] != self.waba_id:
                raise _missing_object(method, rest[0])
            if method == "GET":
                return self._list_templates(record, parts[0])
            return self._create_template(record)
        numbers = self.phone_numbers()
        if len(rest) == 2 and rest[1] == "phone_numbers" and method == "GET":
            if rest[0] not in {n.waba_id for n in numbers.values()}:
                raise _missing_object(method, rest[0])
            return self._list_phone_numbers(record, parts[0], rest[0], numbers)
        if len(rest) == 1 and method == "GET" and rest[0] in numbers:
            return self._phone_number(record, numbers[rest[0]])
        if len(rest) == 1 and method == "GET":
            return self._media_info(rest[0])
        raise GraphError(2500, "", message=f"Unknown path components: {record.path}")

    # --- GET /{version}/{phone_number_id}, GET /{version}/{waba_id}/phone_numbers ------------

    @staticmethod
    def _fields(record: RecordedRequest) -> tuple[str, ...]:
        if "fields" not in record.query:
            return PHONE_NUMBER_DEFAULT_FIELDS
        fields = tuple(f.strip() for f in record.query["fields"].split(",") if f.strip())
        for name in fields:
            if name not in PHONE_NUMBER_DEFAULT_FIELDS:
                raise GraphError(
                    100,
                    "",
                    message=(
                        f"(#100) Tried accessing nonexisting field ({name}) on node type "
                        "(WhatsAppBusinessPhoneNumber)"
                    ),
                )
        return fields

    def _phone_number(self, record: RecordedRequest, number: PhoneNumber) -> _Response:
        return _json_response(number.node(self._fields(record)))

    def _list_phone_numbers(
        self,
        record: RecordedRequest,
        version: str,
        waba_id: str,
        numbers: dict[str, PhoneNumber],
    ) -> _Response:
        fields = self._fields(record)
        query = record.query
        limit, offset = _page_window(query)
        matching = [n.node(fields) for n in numbers.values() if n.waba_id == waba_id]
        return _paged_response(
            matching, query, limit, offset, f"{self.base_url}/{version}/{waba_id}/phone_numbers"
        )

    # --- POST /{version}/{phone_number_id}/messages ------------------------------------------

    def _handle_messages(self, record: RecordedRequest) -> _Response:
        body = record.json
        if not isinstance(body, dict):
            raise GraphError(100, "The request body must be a JSON object.")
        if body.get("messaging_product") != "whatsapp":
            raise GraphError(100, "The parameter messaging_product is required.")
        if body.get("status") == "read":
            return self._mark_read(body)
        to, wa_id = self._recipient(body)
        message_type = body.get("type", "text")
        if message_type not in MESSAGE_TYPES:
            raise GraphError(100, f"Param type must be one of {sorted(MESSAGE_TYPES)}.")
        content = body.get(message_type)
        if not isinstance(content, dict) and not (
            message_type == "contacts" and isinstance(content, list)
        ):
            raise GraphError(131008, f"The parameter {message_type} is required.")
        template: Template | None = None
        if message_type == "template":
            template = self._check_template(content)
        else:
            _check_content(message_type, content)
        context = body.get("context")
        if context is not None and not (
            isinstance(context, dict) and isinstance(context.get("message_id"), str)
        ):
            raise GraphError(131009, "context.message_id must be a string.")

        with self._lock:
            now = self._now()
            is_outside_window = template is None and not self._window_is_open(wa_id, now)
            if is_outside_window and not self.window_errors_async:
                raise GraphError(131047, error_details(131047))
            self._check_throughput(now)
            self._take_pair_token(wa_id, now)
            async_code = 131047 if is_outside_window else self._async_code(wa_id, template)
            wamid = _new_wamid()
            self._send_times.append(now)
            sent = SentMessage(
                wamid=wamid,
                to=to,
                wa_id=wa_id,
                type=message_type,
                body=body,
                at=now,
                template=None if template is None else (template.name, template.language),
                category=None if template is None else template.category,
            )
            self._sent.append(sent)
            if async_code is not None:
                self._pending_statuses.append(
                    self.status_item(wamid, "failed", errors=[async_code], timestamp=now)
                )
            else:
                self._pending_statuses.extend(
                    self.status_item(wamid, status, timestamp=now) for status in self.auto_statuses
                )
        contact = {"input": to, "wa_id": wa_id} if "to" in body else {"input": to, "user_id": to}
        message: dict[str, Any] = {"id": wamid}
        if template is not None:
            message["message_status"] = "accepted"
        return _json_response(
            {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}
        )

    def _mark_read(self, body: dict[str, Any]) -> _Response:
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id.startswith("wamid."):
            raise GraphError(131009, "message_id must be a wamid.")
        typing = body.get("typing_indicator")
        if typing is not None and typing != {"type": "text"}:
            raise GraphError(131009, "typing_indicator.type must be text.")
        with self._lock:
            self._reads.append(
                ReadReceipt(
                    message_id=message_id,
                    is_typing=typing is not None,
                    is_known_inbound=message_id in self._inbound_wamids,
                    body=body,
                    at=self._now(),
                )
            )
        return _json_response({"success": True})

    def _recipient(self, body: dict[str, Any]) -> tuple[str, str]:
        to, recipient = body.get("to"), body.get("recipient")
        if to is not None and recipient is not None:
            raise GraphError(100, "Give either to or recipient, not both.")
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type != "individual":
            raise GraphError(100, "Param recipient_type must be individual.")
        if to is not None:
            if not isinstance(to, str) or not PHONE_RE.fullmatch(to):
                raise GraphError(100, "Param to must be a phone number of digits only.")
            with self._lock:
                return to, self._aliases.get(to, to)
        if recipient is not None:
            if not isinstance(recipient, str) or not BSUID_RE.fullmatch(recipient):
                raise GraphError(100, "Param recipient must be a business-scoped user ID.")
            return recipient, recipient
        raise GraphError(131008, "The parameter to is required.")

    def _async_code(self, wa_id: str, template: Template | None) -> int | None:
        failure = self._async_failures.get(wa_id)
        if failure is not None:
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self._async_failures[wa_id]
            return failure.code
        if (
            template is not None
            and template.category == "MARKETING"
            and wa_id in self._marketing_stopped
        ):
            return 131050  # docs/whatsapp.md 1.12: accepted, then failed
        return None

    def _window_is_open(self, wa_id: str, now: datetime) -> bool:
        last = self._last_inbound.get(wa_id)
        return last is not None and now - last < CUSTOMER_SERVICE_WINDOW

    def _check_throughput(self, now: datetime) -> None:
        """Accepted sends in the last second, by the fake's clock (docs/whatsapp.md 1.9)."""
        if self.throughput_per_second is None:
            return
        while self._send_times and now - self._send_times[0] >= timedelta(seconds=1):
            self._send_times.popleft()
        if len(self._send_times) >= self.throughput_per_second:
            raise GraphError(130429)

    def _take_pair_token(self, wa_id: str, now: datetime) -> None:
        """A token bucket: `pair_burst` at once, then one per `pair_interval_seconds`."""
        if self.pair_burst is None:
            return
        tokens, updated = self._pair_tokens.get(wa_id, (float(self.pair_burst), now))
        elapsed = max((now - updated).total_seconds(), 0.0)
        tokens = min(float(self.pair_burst), tokens + elapsed / self.pair_interval_seconds)
        if tokens < 1.0:
            self._pair_tokens[wa_id] = (tokens, now)
            raise GraphError(131056)
        self._pair_tokens[wa_id] = (tokens - 1.0, now)

    def _check_template(self, content: Any) -> Template:
        if not isinstance(content, dict):
            raise GraphError(131008, "The parameter template is required.")
        name = content.get("name")
        language = content.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not name:
            raise GraphError(131008, "The parameter template.name is required.")
        if not isinstance(code, str) or not code:
            raise GraphError(131008, "The parameter template.language.code is required.")
        if (
            isinstance(language, dict)
            and language.get("policy", "deterministic") != "deterministic"
        ):
            raise GraphError(100, "Param template.language.policy must be deterministic.")
        with self._lock:
            found = self._templates.get((name, code))
            template = None if found is None else replace(found)
        if template is None:
            raise GraphError(132001, f"template name ({name}) does not exist in {code}")
        if template.status == "PAUSED":
            raise GraphError(132015)
        if template.status == "DISABLED":
            raise GraphError(132016)
        if template.status != "APPROVED":
            raise GraphError(
                132001, f"template name ({name}) is not approved in {code} ({template.status})"
            )
        _check_template_parameters(template, content.get("components", []))
        return template

    # --- templates ---------------------------------------------------------------------------

    def _list_templates(self, record: RecordedRequest, version: str) -> _Response:
        query = record.query
        limit, offset = _page_window(query)
        statuses = set(query["status"].split(",")) if "status" in query else None
        with self._lock:
            matching = [
                t.listing()
                for t in self._templates.values()
                if (statuses is None or t.status in statuses)
                and query.get("name", "") in t.name
                and query.get("language", t.language) == t.language
                and query.get("category", t.category) == t.category
            ]
        return _paged_response(
            matching,
            query,
            limit,
            offset,
            f"{self.base_url}/{version}/{self.waba_id}/message_templates",
        )

    def _create_template(self, record: RecordedRequest) -> _Response:
        definition = record.json
        if not isinstance(definition, dict):
            raise GraphError(100, "The request body must be a JSON object.")
        name, language = definition.get("name"), definition.get("language")
        category = str(definition.get("category", "")).upper()
        components = definition.get("components")
        if not isinstance(name, str) or not TEMPLATE_NAME_RE.fullmatch(name):
            raise GraphError(
                100, "Template names take lowercase letters, digits and underscores only."
            )
        if not isinstance(language, str) or not language:
            raise GraphError(100, "The parameter language is required.")
        if category not in TEMPLATE_CATEGORIES:
            raise GraphError(100, f"Param category must be one of {sorted(TEMPLATE_CATEGORIES)}.")
        if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
            raise GraphError(100, "The parameter components is required.")
        if category != "AUTHENTICATION" and not any(
            str(c.get("type", "")).upper() == "BODY" for c in components
        ):
            raise GraphError(100, "A template needs a BODY component.")
        template = _template_from_components(
            template_id=self._numeric_id(),
            name=name,
            language=language,
            category=category,
            status="PENDING",
            components=components,
        )
        with self._lock:
            if (name, language) in self._templates:
                raise GraphError(100, "Content in this language already exists.")
            self._templates[(name, language)] = template
        return _json_response({"id": template.id, "status": "PENDING", "category": category})

    def _numeric_id(self) -> str:
        return str(1_000_000_000_000_000 + next(self._ids))

    # --- media -------------------------------------------------------------------------------

    def _media_info(self, media_id: str) -> _Response:
        with self._lock:
            media = self._media.get(media_id)
            if media is None:
                raise _missing_object("GET", media_id)
            token = secrets.token_urlsafe(12)
            self._media_tokens[token] = (media_id, self._now() + MEDIA_URL_TTL)
        return _json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base_url}/media-files/{media_id}?token={token}",
                "mime_type": media.mime_type,
                "sha256": media.sha256,
                "file_size": len(media.content),
                "id": media.id,
            }
        )

    def _download_media(self, media_id: str, token: str) -> _Response:
        with self._lock:
            issued = self._media_tokens.get(token)
            media = self._media.get(media_id)
            is_valid = issued is not None and issued[0] == media_id and self._now() < issued[1]
        if media is None or not is_valid:
            return _Response(404, b"URL signature expired or unknown", content_type="text/plain")
        return _Response(200, media.content, content_type=media.mime_type)

    # --- webhook items -----------------------------------------------------------------------

    def inbound_item(
        self,
        wa_id: str | None,
        text: str | None = None,
        *,
        name: str = "Test User",
        type: str = "text",
        wamid: str | None = None,
        timestamp: datetime | int | None = None,
        user_id: str | None = None,
        reply_to: str | None = None,
        reply_id: str | None = None,
        media_id: str | None = None,
        mime_type: str | None = None,
        filename: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> WebhookItem:
        """A user's message as Meta sends it (docs/whatsapp.md 1.6); `extra` is merged on top.

        `text` is the body, caption, button or row title, or location name, by `type`:
        text, button, interactive_button, interactive_list, image, document, audio, video,
        sticker, location, contacts, unsupported. `reply_id` is the button/row id or payload.
        """
        message: dict[str, Any] = {}
        if wa_id is not None:
            message["from"] = wa_id
        elif user_id is not None:
            message["from_user_id"] = user_id  # usernames: no wa_id [?] (docs/whatsapp.md 1.2)
        else:
            raise ValueError("give wa_id or user_id")
        message["id"] = wamid or _new_wamid()
        message["timestamp"] = str(_unix(timestamp, self._now()))
        if reply_to is not None:
            message["context"] = {"from": self.display_phone_number, "id": reply_to}
        message.update(self._inbound_content(type, text, reply_id, media_id, mime_type, filename))
        if type == "button" and "context" not in message:
            message["context"] = {"from": self.display_phone_number, "id": _new_wamid()}
        if extra:
            message.update(extra)
        contact: dict[str, Any] = {"profile": {"name": name}}
        if wa_id is not None:
            contact["wa_id"] = wa_id
        if user_id is not None:
            contact["user_id"] = user_id
        return WebhookItem("messages", "message", message, contact)

    def _inbound_content(
        self,
        kind: str,
        text: str | None,
        reply_id: str | None,
        media_id: str | None,
        mime_type: str | None,
        filename: str | None,
    ) -> dict[str, Any]:
        if kind == "text":
            return {"type": "text", "text": {"body": "Hello" if text is None else text}}
        if kind == "button":
            title = text or "Yes"
            return {"type": "button", "button": {"payload": reply_id or title, "text": title}}
        if kind == "interactive_button":
            title = text or "Yes"
            reply = {"id": reply_id or title.lower().replace(" ", "_"), "title": title}
            return {
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": reply},
            }
        if kind == "interactive_list":
            title = text or "Basic"
            row = {"id": reply_id or title.lower().replace(" ", "_"), "title": title}
            return {"type": "interactive", "interactive": {"type": "list_reply", "list_reply": row}}
        if kind in MEDIA_TYPES:
            with self._lock:
                known = self._media.get(media_id) if media_id else None
            media: dict[str, Any] = {
                "id": media_id or self._numeric_id(),
                "mime_type": mime_type or (known.mime_type if known else _DEFAULT_MIME_TYPES[kind]),
                "sha256": known.sha256 if known else hashlib.sha256(b"").hexdigest(),
            }
            if text is not None and kind in ("image", "video", "document"):
                media["caption"] = text
            if kind == "document":
                media["filename"] = filename or "file.pdf"
            if kind == "audio":
                media["voice"] = False
            return {"type": kind, kind: media}
        if kind == "location":
            location: dict[str, Any] = {"latitude": 38.7223, "longitude": -9.1393}
            if text is not None:
                location["name"] = text
            return {"type": "location", "location": location}
        if kind == "contacts":
            card = {
                "name": {"formatted_name": text or "Ana Silva", "first_name": "Ana"},
                "phones": [{"phone": "+1 415 555 0100", "wa_id": "14155550100", "type": "CELL"}],
            }
            return {"type": "contacts", "contacts": [card]}
        if kind == "unsupported":
            return {"type": "unsupported", "errors": [webhook_error(131051)]}
        raise ValueError(f"unknown inbound type {kind!r}")

    def status_item(
        self,
        wamid: str,
        status: str = "delivered",
        *,
        errors: Sequence[int | Mapping[str, Any]] | None = None,
        timestamp: datetime | int | None = None,
        recipient_id: str | None = None,
    ) -> WebhookItem:
        """A status for one of our sends; `failed` without `errors` means 131026."""
        with self._lock:
            sent = next((s for s in self._sent if s.wamid == wamid), None)
        recipient = recipient_id or (sent.wa_id if sent else None)
        if recipient is None:
            raise ValueError(f"{wamid} was not sent through this fake: give recipient_id")
        at = _unix(timestamp, self._now())
        item: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(at),
            "recipient_id": recipient,
        }
        if sent is not None and isinstance(sent.body.get("biz_opaque_callback_data"), str):
            item["biz_opaque_callback_data"] = sent.body["biz_opaque_callback_data"]
        if status == "failed":
            item["errors"] = [
                webhook_error(e) if isinstance(e, int) else dict(e) for e in (errors or [131026])
            ]
        else:
            category = (sent.category or "SERVICE").lower() if sent else "service"
            conversation: dict[str, Any] = {
                "id": hashlib.md5(f"{recipient}:{category}".encode()).hexdigest(),
                "origin": {"type": category},
            }
            if status == "sent":
                conversation["expiration_timestamp"] = str(at + 24 * 3600)
            item["conversation"] = conversation
            item["pricing"] = {
                "billable": category != "service",
                "pricing_model": "PMP",
                "category": category,
                "type": "regular" if category != "service" else "free_customer_service",
            }
        return WebhookItem("messages", "status", item)

    def user_preference_item(
        self,
        wa_id: str,
        value: Literal["stop", "resume"] = "stop",
        *,
        timestamp: datetime | int | None = None,
    ) -> WebhookItem:
        detail = f"User requested to {value} marketing messages"
        preference = {
            "wa_id": wa_id,
            "detail": detail,
            "category": "marketing_messages",
            "value": value,
            "timestamp": _unix(timestamp, self._now()),
        }
        return WebhookItem("user_preferences", "user_preference", preference, {"wa_id": wa_id})

    def template_status_item(
        self,
        name: str,
        language: str,
        event: str,
        *,
        reason: str | None = None,
        template_id: str | None = None,
    ) -> WebhookItem:
        with self._lock:
            template = self._templates.get((name, language))
        identifier = template_id or (template.id if template else self._numeric_id())
        value: dict[str, Any] = {
            "event": event,
            "message_template_id": int(identifier),
            "message_template_name": name,
            "message_template_language": language,
            "reason": reason,
        }
        if template is not None:
            value["message_template_category"] = template.category
        return WebhookItem("message_template_status_update", "template_status", value)

    def error_item(self, code: int, details: str | None = None) -> WebhookItem:
        """A value-level error with no message or status (async API errors,
        docs/whatsapp.md 1.6)."""
        return WebhookItem("messages", "error", webhook_error(code, details))

    # --- webhook envelopes and delivery ------------------------------------------------------

    def envelope(
        self,
        items: Sequence[WebhookItem],
        *,
        items_per_change: int = 1,
        changes_per_entry: int = 1,
    ) -> dict[str, Any]:
        """Meta's envelope: consecutive items of one kind share a change, up to the limits."""
        groups: list[list[WebhookItem]] = []
        for item in items:
            current = groups[-1] if groups else None
            if (
                current is None
                or current[0].kind != item.kind
                or len(current) >= items_per_change
                or item.kind == "template_status"
            ):
                groups.append([item])
            else:
                current.append(item)
        changes = [self._change(group) for group in groups]
        entries: list[dict[str, Any]] = []
        for start in range(0, len(changes), changes_per_entry):
            chunk = changes[start : start + changes_per_entry]
            entry: dict[str, Any] = {"id": self.waba_id}
            if any(c["field"] == "message_template_status_update" for c in chunk):
                entry["time"] = int(self._now().timestamp())
            entry["changes"] = chunk
            entries.append(entry)
        return {"object": "whatsapp_business_account", "entry": entries}

    def _change(self, group: list[WebhookItem]) -> dict[str, Any]:
        first = group[0]
        if first.kind == "template_status":
            return {"value": first.payload, "field": first.field}
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
        }
        contacts: list[dict[str, Any]] = []
        for item in group:
            if item.contact is not None and item.contact not in contacts:
                contacts.append(item.contact)
        if contacts:
            value["contacts"] = contacts
        value[_LIST_KEYS[first.kind]] = [item.payload for item in group]
        return {"value": value, "field": first.field}

    def sign(self, body: bytes) -> str:
        """The X-Hub-Signature-256 value for these exact bytes (docs/whatsapp.md 1.7)."""
        digest = hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    def _headers(self, body: bytes, signature: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature is not None:
            sha1 = hmac.new(self.app_secret.encode(), body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={sha1}"
            headers["X-Hub-Signature-256"] = signature
        return headers

    def deliver_batch(
        self,
        items: Sequence[WebhookItem],
        *,
        items_per_change: int = 1,
        changes_per_entry: int = 1,
    ) -> httpx.Response:
        """One signed POST with all `items` (at most 1,000); the default is an entry each."""
        if not 1 <= len(items) <= MAX_WEBHOOK_ITEMS:
            raise ValueError(f"a delivery holds 1 to {MAX_WEBHOOK_ITEMS} items")
        envelope = self.envelope(
            items, items_per_change=items_per_change, changes_per_entry=changes_per_entry
        )
        self._note_delivered(items)
        body = serialise_webhook(envelope)
        return self._post_webhook(body, self._headers(body, self.sign(body)))

    def _note_delivered(self, items: Sequence[WebhookItem]) -> None:
        """What Meta knows once the user wrote: the window and the message ids (1.11)."""
        with self._lock:
            for item in items:
                if item.kind == "message":
                    at = datetime.fromtimestamp(int(item.payload["timestamp"]), UTC)
                    self._inbound_wamids.add(str(item.payload["id"]))
                    contact = item.contact or {}
                    for key in {contact.get("wa_id"), contact.get("user_id")} - {None}:
                        previous = self._last_inbound.get(str(key))
                        self._last_inbound[str(key)] = at if previous is None else max(previous, at)
                elif item.kind == "user_preference":
                    self.set_marketing_preference(item.payload["wa_id"], item.payload["value"])

    def deliver_inbound(
        self, wa_id: str | None, text: str | None = None, **fields: Any
    ) -> httpx.Response:
        """deliver_batch([inbound_item(...)]): also opens the user's 24-hour window."""
        return self.deliver_batch([self.inbound_item(wa_id, text, **fields)])

    def deliver_status(
        self,
        wamid: str,
        status: str = "delivered",
        *,
        errors: Sequence[int | Mapping[str, Any]] | None = None,
        timestamp: datetime | int | None = None,
        recipient_id: str | None = None,
    ) -> httpx.Response:
        item = self.status_item(
            wamid, status, errors=errors, timestamp=timestamp, recipient_id=recipient_id
        )
        return self.deliver_batch([item])

    def deliver_user_preference(
        self,
        wa_id: str,
        value: Literal["stop", "resume"] = "stop",
        *,
        timestamp: datetime | int | None = None,
    ) -> httpx.Response:
        return self.deliver_batch([self.user_preference_item(wa_id, value, timestamp=timestamp)])

    def deliver_template_status(
        self,
        name: str,
        language: str,
        event: str,
        *,
        reason: str | None = None,
        template_id: str | None = None,
    ) -> httpx.Response:
        """Only the webhook; set_template_status() changes the catalog too."""
        item = self.template_status_item(
            name, language, event, reason=reason, template_id=template_id
        )
        return self.deliver_batch([item])

    def deliver_statuses(self, *, in_one_delivery: bool = False) -> list[httpx.Response]:
        """Deliver and forget the queued statuses (fail_async, auto_statuses) in send order."""
        with self._lock:
            pending, self._pending_statuses = self._pending_statuses, []
        if not pending:
            return []
        if in_one_delivery:
            return [self.deliver_batch(pending, items_per_change=len(pending))]
        return [self.deliver_batch([item]) for item in pending]

    def deliver_raw(
        self,
        body: bytes | str,
        *,
        signature: object = _SIGN,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST these bytes as they are: signed correctly by default, or with `signature`
        as the header value, or with no signature header when `signature=None`."""
        raw = body.encode() if isinstance(body, str) else body
        value = self.sign(raw) if signature is _SIGN else signature
        sent_headers = self._headers(raw, value if isinstance(value, str) else None)
        if isinstance(value, str):
            sent_headers.pop("X-Hub-Signature", None)  # only the one under test
        sent_headers.update(headers or {})
        return self._post_webhook(raw, sent_headers)

    def redeliver(self, index: int = -1) -> httpx.Response:
        """Post delivery `index` again with the very same bytes and headers
        (docs/whatsapp.md 1.8)."""
        with self._lock:
            original = self._deliveries[index]
        return self._post_webhook(original.body, original.headers, redelivery_of=original.index)

    def _post_webhook(
        self, body: bytes, headers: Mapping[str, str], *, redelivery_of: int | None = None
    ) -> httpx.Response:
        url = self.webhook_url
        if url is None:
            raise RuntimeError("set fake.webhook_url (and webhook_client for a TestClient)")
        with self._lock:
            delivery = Delivery(
                index=len(self._deliveries),
                url=url,
                body=body,
                headers=dict(headers),
                at=self._now(),
                redelivery_of=redelivery_of,
            )
            self._deliveries.append(delivery)
        # No lock while posting: SHVYA's handler may call this fake back.
        try:
            if self.webhook_client is not None:
                response = self.webhook_client.post(url, content=body, headers=dict(headers))
            else:
                response = self._webhook_http().post(url, content=body, headers=dict(headers))
        except Exception as exc:
            with self._lock:
                delivery.error = f"{type(exc).__name__}: {exc}"
            raise
        with self._lock:
            delivery.status_code = response.status_code
        return response

    def _webhook_http(self) -> httpx.Client:
        if self._http_client is None:
            self._http_client = httpx.Client(timeout=10.0, trust_env=False)
        return self._http_client


_LIST_KEYS = {
    "message": "messages",
    "status": "statuses",
    "user_preference": "user_preferences",
    "error": "errors",
}

_DEFAULT_MIME_TYPES = {
    "image": "image/jpeg",
    "document": "application/pdf",
    "audio": "audio/ogg; codecs=opus",
    "video": "video/mp4",
    "sticker": "image/webp",
}


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def _page_window(query: dict[str, str]) -> tuple[int, int]:
    """Graph's cursor paging of a listing: `limit` (1 to 1000, 25 by default) and the
    offset the `after` cursor encodes."""
    try:
        limit = int(query.get("limit", "25"))
        offset = int(base64.urlsafe_b64decode(query["after"]).decode()) if "after" in query else 0
    except ValueError:
        raise GraphError(100, "Invalid limit or cursor.") from None
    if not 1 <= limit <= 1000 or offset < 0:
        raise GraphError(100, "Param limit must be between 1 and 1000.")
    return limit, offset


def _paged_response(
    matching: list[Any], query: dict[str, str], limit: int, offset: int, url: str
) -> _Response:
    """One page of a listing, with Graph's cursors and a `next` URL while more remain."""
    page = matching[offset : offset + limit]
    cursors = {"before": _cursor(offset), "after": _cursor(offset + len(page))}
    paging: dict[str, Any] = {"cursors": cursors}
    if offset + limit < len(matching):
        next_query = {k: v for k, v in query.items() if k not in ("after", "before")}
        next_query.update({"limit": str(limit), "after": cursors["after"]})
        paging["next"] = f"{url}?" + urlencode(next_query)
    return _json_response({"data": page, "paging": paging})


def _placeholders(text: Any) -> int:
    return len(set(PLACEHOLDER_RE.findall(text))) if isinstance(text, str) else 0


def _template_from_components(
    *,
    template_id: str,
    name: str,
    language: str,
    category: str,
    status: str,
    components: list[dict[str, Any]],
) -> Template:
    header: str | None = None
    header_text_params = 0
    body_params = 0
    buttons: list[tuple[str, bool]] = []
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header = str(component.get("format", "TEXT")).upper()
            header_text_params = _placeholders(component.get("text"))
        elif kind == "BODY":
            body_params = _placeholders(component.get("text"))
        elif kind == "BUTTONS":
            for button in component.get("buttons", []):
                button_type = str(button.get("type", "")).upper()
                buttons.append((button_type, _placeholders(button.get("url")) > 0))
    return Template(
        id=template_id,
        name=name,
        language=language,
        category=category,
        status=status,
        components=components,
        body_params=body_params,
        header=header,
        header_text_params=header_text_params,
        buttons=buttons,
    )


def _check_template_parameters(template: Template, components: Any) -> None:
    """Parameter counts and formats against the catalog entry (docs/whatsapp.md 1.2)."""
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise GraphError(100, "Param template.components must be a list of objects.")
    header_params: list[Any] = []
    body_params: list[Any] = []
    button_components: dict[int, dict[str, Any]] = {}
    for component in components:
        kind = str(component.get("type", "")).lower()
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            raise GraphError(100, f"Param {kind}.parameters must be a list.")
        if kind == "header":
            header_params.extend(parameters)
        elif kind == "body":
            body_params.extend(parameters)
        elif kind == "button":
            index = component.get("index")
            if not (isinstance(index, str | int) and str(index).isdigit()):
                raise GraphError(131008, "buttons: the parameter index is required.")
            if int(index) in button_components:
                raise GraphError(100, f"buttons: index {index} is given twice.")
            button_components[int(index)] = component
        else:
            raise GraphError(100, f"Invalid component type {component.get('type')!r}.")

    if template.header in HEADER_MEDIA_FORMATS:
        expected = template.header.lower()
        got = (
            header_params[0].get("type")
            if header_params and isinstance(header_params[0], dict)
            else None
        )
        media = header_params[0].get(expected) if got == expected else None
        if len(header_params) != 1 or not (
            isinstance(media, dict) and (media.get("link") or media.get("id"))
        ):
            received = str(got).upper() if got else "UNKNOWN"
            raise GraphError(
                132012, f"header: Format mismatch, expected {template.header}, received {received}"
            )
    else:
        _check_count("header", header_params, template.header_text_params)
        _check_text_parameters("header", header_params, {"text"})

    _check_count("body", body_params, template.body_params)
    _check_text_parameters("body", body_params, BODY_PARAMETER_TYPES)

    for index, component in sorted(button_components.items()):
        if index >= len(template.buttons):
            raise GraphError(131009, f"buttons: the template has no button at index {index}")
        button_type, has_variable = template.buttons[index]
        sub_type = component.get("sub_type")
        expected_sub_type = {"URL": "url", "QUICK_REPLY": "quick_reply"}.get(button_type)
        if sub_type != expected_sub_type:
            raise GraphError(
                131009,
                f"buttons: button at index {index} is of type {button_type}, not {sub_type}",
            )
        parameters = component.get("parameters", [])
        if button_type == "URL":
            _check_count(f"button at index {index}", parameters, 1 if has_variable else 0)
            _check_text_parameters(f"button at index {index}", parameters, {"text"})
        else:
            for parameter in parameters:
                if not isinstance(parameter, dict) or parameter.get("type") not in (
                    "payload",
                    "text",
                ):
                    raise GraphError(132012, f"buttons: index {index} takes payload or text")
    for index, (button_type, has_variable) in enumerate(template.buttons):
        if button_type == "URL" and has_variable and index not in button_components:
            raise GraphError(
                131008, f"buttons: Button at index {index} of type Url requires a parameter"
            )


def _check_count(where: str, parameters: list[Any], expected: int) -> None:
    if len(parameters) != expected:
        raise GraphError(
            132000,
            f"{where}: number of localizable_params ({len(parameters)}) does not match the "
            f"expected number of params ({expected})",
        )


def _check_text_parameters(
    where: str, parameters: list[Any], allowed: set[str] | frozenset[str]
) -> None:
    for parameter in parameters:
        kind = parameter.get("type") if isinstance(parameter, dict) else None
        if kind not in allowed:
            raise GraphError(132012, f"{where}: parameter type {kind!r} is not allowed here")
        value = parameter.get(kind)
        if kind == "text" and (not isinstance(value, str) or not value.strip()):
            raise GraphError(131008, f"{where}: parameter text cannot be empty")
        if kind != "text" and not isinstance(value, dict):
            raise GraphError(131008, f"{where}: parameter {kind} needs its object")


def _check_content(message_type: str, content: Any) -> None:
    """Meta's limits per message type (docs/whatsapp.md 1.2)."""
    if message_type == "text":
        body = content.get("body")
        if not isinstance(body, str) or not body:
            raise GraphError(131008, "The parameter text.body is required.")
        if len(body) > 4096:
            raise GraphError(100, "Param text['body'] must be at most 4096 characters long.")
        if not isinstance(content.get("preview_url", False), bool):
            raise GraphError(100, "Param text['preview_url'] must be a boolean.")
    elif message_type in MEDIA_TYPES:
        _check_media(message_type, content)
    elif message_type == "interactive":
        _check_interactive(content)
    elif message_type == "location":
        if not all(isinstance(content.get(k), int | float) for k in ("latitude", "longitude")):
            raise GraphError(131008, "location needs numeric latitude and longitude.")
    elif message_type == "reaction" and not isinstance(content.get("message_id"), str):
        raise GraphError(131008, "The parameter reaction.message_id is required.")


def _check_media(kind: str, media: dict[str, Any]) -> None:
    link, media_id = media.get("link"), media.get("id")
    if (link is None) == (media_id is None):
        raise GraphError(131008, f"{kind} needs exactly one of link or id.")
    if link is not None and not (isinstance(link, str) and re.match(r"https?://[^/\s]+", link)):
        raise GraphError(131009, f"{kind}.link must be an http(s) URL.")
    if media_id is not None and not (isinstance(media_id, str) and media_id):
        raise GraphError(131009, f"{kind}.id must be a media id.")
    if "caption" in media:
        if kind in ("audio", "sticker"):
            raise GraphError(100, f"Param {kind}['caption'] is not allowed.")
        if not isinstance(media["caption"], str) or len(media["caption"]) > 1024:
            raise GraphError(100, f"Param {kind}['caption'] must be at most 1024 characters long.")
    if "filename" in media and kind != "document":
        raise GraphError(100, f"Param {kind}['filename'] is not allowed.")


def _text_of(obj: Any, key: str = "text") -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def _check_interactive(interactive: dict[str, Any]) -> None:
    kind = interactive.get("type")
    action = interactive.get("action")
    body = _text_of(interactive.get("body"))
    if kind not in ("button", "list", "cta_url"):
        raise GraphError(100, "Param interactive['type'] must be button, list or cta_url.")
    if not body:
        raise GraphError(131008, "The parameter interactive.body.text is required.")
    if not isinstance(action, dict):
        raise GraphError(131008, "The parameter interactive.action is required.")
    footer = interactive.get("footer")
    if footer is not None and len(_text_of(footer) or "") > 60:
        raise GraphError(131009, "interactive.footer.text is at most 60 characters.")
    header = interactive.get("header")
    if kind == "button":
        if len(body) > 1024:
            raise GraphError(131009, "interactive.body.text is at most 1024 characters.")
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise GraphError(131009, "interactive.action.buttons takes 1 to 3 buttons.")
        ids: set[str] = set()
        titles: set[str] = set()
        for button in buttons:
            reply = button.get("reply") if isinstance(button, dict) else None
            reply_id, title = _text_of(reply, "id"), _text_of(reply, "title")
            if button.get("type") != "reply" or not reply_id or not title:
                raise GraphError(131008, "Each button needs type reply with an id and a title.")
            if len(title) > 20:
                raise GraphError(131009, "Button title length is at most 20 characters.")
            if len(reply_id) > 256:
                raise GraphError(131009, "Button id is at most 256 characters.")
            if reply_id in ids or title in titles:
                raise GraphError(131009, "Button ids and titles must be unique.")
            ids.add(reply_id)
            titles.add(title)
        if header is not None and not isinstance(header, dict):
            raise GraphError(131009, "interactive.header must be an object.")
    elif kind == "list":
        if len(body) > 4096:
            raise GraphError(131009, "interactive.body.text is at most 4096 characters.")
        if header is not None and (
            not isinstance(header, dict)
            or header.get("type") != "text"
            or len(_text_of(header) or "") > 60
        ):
            raise GraphError(131009, "A list header is text of at most 60 characters.")
        label = _text_of(action, "button")
        if not label or len(label) > 20:
            raise GraphError(131009, "interactive.action.button is 1 to 20 characters.")
        sections = action.get("sections")
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            raise GraphError(131009, "interactive.action.sections takes 1 to 10 sections.")
        rows = [row for s in sections if isinstance(s, dict) for row in s.get("rows") or []]
        if not 1 <= len(rows) <= 10:
            raise GraphError(131009, "A list takes 1 to 10 rows across all its sections.")
        if len(sections) > 1 and not all(_text_of(s, "title") for s in sections):
            raise GraphError(131009, "Each section needs a title when there are several.")
        if any(len(_text_of(s, "title") or "") > 24 for s in sections):
            raise GraphError(131009, "Section title is at most 24 characters.")
        row_ids: set[str] = set()
        for row in rows:
            row_id, title = _text_of(row, "id"), _text_of(row, "title")
            if not row_id or not title:
                raise GraphError(131008, "Each row needs an id and a title.")
            if len(row_id) > 200 or len(title) > 24 or len(_text_of(row, "description") or "") > 72:
                raise GraphError(
                    131009, "Row id, title and description are at most 200, 24 and 72 characters."
                )
            if row_id in row_ids:
                raise GraphError(131009, "Row ids must be unique.")
            row_ids.add(row_id)
    elif not (
        _text_of(action.get("parameters"), "url")
        and _text_of(action.get("parameters"), "display_text")
    ):
        raise GraphError(131008, "cta_url needs action.parameters.url and display_text.")
