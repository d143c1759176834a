"""A fake SendGrid v3 API for SHVYA's tests (docs/email-providers.md section 2).

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread: POST /v3/mail/send
(202 with an empty body and X-Message-Id; 400 with SendGrid's {"errors": [...]} for a body it
would refuse; 401 for an unknown key; 413 over 30 MB; 429 with the X-RateLimit-* headers past
`rate_limit` requests in the current window) and GET /v3/scopes. It records every accepted
mail body and the TCP connection each request came on.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# SendGrid's documented reserved headers: a body setting any of them is refused (kept here on
# its own, not imported from the transport, so the fake checks the transport).
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
MAX_BODY_BYTES = 30 * 1024 * 1024


@dataclass(frozen=True)
class Accepted:
    message_id: str
    body: dict[str, Any]


@dataclass
class FakeSendGrid:
    api_keys: frozenset[str] = frozenset({"SG.fake-key"})
    scopes: tuple[str, ...] = ("mail.send", "scopes.read")
    rate_limit: int | None = None  # requests per window; None: unlimited
    window_seconds: int = 60
    server_error_next: int = 0  # the next N sends answer 500
    delay_seconds: float = 0.0  # answer this late (tests of read timeouts)
    accepted: list[Accepted] = field(default_factory=list)
    requests: list[tuple[str, str, tuple[str, int]]] = field(default_factory=list)
    _window_start: float = field(default_factory=time.time)
    _window_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def connections(self) -> int:
        return len({peer for _, _, peer in self.requests})

    def __enter__(self) -> FakeSendGrid:
        fake = self

        class Handler(_Handler):
            sendgrid = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, peer: tuple[str, int]
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        with self._lock:
            self.requests.append((method, path, peer))
            auth = headers.get("authorization", "")
            key = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or key not in self.api_keys:
                return (
                    401,
                    {},
                    _errors(
                        ("The provided authorization grant is invalid, expired, or revoked", None)
                    ),
                )
            now = time.time()
            if now - self._window_start >= self.window_seconds:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            limits = {}
            if self.rate_limit is not None:
                reset = int(self._window_start + self.window_seconds)
                limits = {
                    "X-RateLimit-Limit": str(self.rate_limit),
                    "X-RateLimit-Remaining": str(max(0, self.rate_limit - self._window_count)),
                    "X-RateLimit-Reset": str(reset),
                }
                if self._window_count > self.rate_limit:
                    return 429, limits, _errors(("too many requests", None))
            if method == "GET" and path == "/v3/scopes":
                return 200, limits, {"scopes": list(self.scopes)}
            if method == "POST" and path == "/v3/mail/send":
                if "mail.send" not in self.scopes:
                    return 403, limits, _errors(("access forbidden", None))
                if self.server_error_next:
                    self.server_error_next -= 1
                    return 500, limits, _errors(("internal error", None))
                if len(body) > MAX_BODY_BYTES:
                    return 413, limits, _errors(("payload too large", None))
                return self._send(body, limits)
            return 404, limits, _errors((f"no route {method} {path}", None))

    def _send(
        self, raw: bytes, limits: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, limits, _errors(("Bad Request", None))
        problems = _validate(body)
        if problems:
            return 400, limits, _errors(*problems)
        message_id = secrets.token_urlsafe(16)
        self.accepted.append(Accepted(message_id=message_id, body=body))
        return 202, {**limits, "X-Message-Id": message_id}, None


def _validate(body: Any) -> list[tuple[str, str | None]]:
    problems: list[tuple[str, str | None]] = []
    if not isinstance(body, dict):
        return [("The request body must be a JSON object.", None)]
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("The personalizations field is required.", "personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        problems.append(("The from object must be provided for every email send.", "from.email"))
    if not body.get("subject"):
        problems.append(("The subject is required.", "subject"))
    content = body.get("content")
    if not isinstance(content, list) or not content:
        problems.append(
            (
                "Unless a valid template_id is provided, the content parameter is required.",
                "content",
            )
        )
    elif content[0].get("type") != "text/plain" and any(
        c.get("type") == "text/plain" for c in content
    ):
        problems.append(("If present, text/plain must be first.", "content"))
    headers = body.get("headers") or {}
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            problems.append((f"The {name} header is reserved.", "headers"))
        if not isinstance(value, str):
            problems.append(("Header values must be strings.", "headers"))
    for name, value in (body.get("custom_args") or {}).items():
        if not isinstance(value, str):
            problems.append((f"custom_args values must be strings ({name}).", "custom_args"))
    return problems


def _errors(*items: tuple[str, str | None]) -> dict[str, Any]:
    return {
        "errors": [
            {"message": message, "field": field_name, "help": None} for message, field_name in items
        ]
    }


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and left (the timeout tests) is not the fake's error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    sendgrid: FakeSendGrid
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        status, extra, payload = self.sendgrid.handle(
            self.command, self.path.split("?")[0], headers, body, peer
        )
        if self.sendgrid.delay_seconds:
            time.sleep(self.sendgrid.delay_seconds)
        raw = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()
