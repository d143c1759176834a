"""A fake Twilio REST API (Programmable Messaging) for SHVYA's tests (docs/sms.md).

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread. It speaks what SHVYA
relies on: basic auth with the account SID and auth token (20003 when wrong), GET
/2010-04-01/Accounts/{sid}.json, POST /2010-04-01/Accounts/{sid}/Messages.json with form
fields From, To, Body, MediaUrl and StatusCallback, answered 201 with the message resource,
and Twilio's JSON error bodies ({"code", "message", "more_info", "status"}): 21211 for a To
that is not a phone number, 21610 for a number that texted STOP to the sender, 20429 when
told to throttle. It signs the webhooks it makes (`signed_form`) as Twilio does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MORE_INFO = "https://www.twilio.com/docs/errors/"


def sign(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio computes it (docs/sms.md 4)."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(
        hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    ).decode()


@dataclass
class SentSms:
    sid: str
    from_: str
    to: str
    body: str
    media_urls: list[str]
    status_callback: str | None


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    numbers: set[str] = field(default_factory=set)
    sent: list[SentSms] = field(default_factory=list)
    # Numbers that texted STOP to one of our numbers: Twilio refuses them with 21610.
    unsubscribed: set[str] = field(default_factory=set)
    # Error codes to answer the next Messages.json creates with, in order.
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                fake.connections += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeTwilio:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the API ---

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode() if length else ""
        self.requests.append((method, request.path))
        status, body = self._answer(method, request.path, request.headers.get("Authorization"), raw)
        payload = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _error(self, code: int, message: str, status: int) -> tuple[int, dict[str, Any]]:
        return status, {
            "code": code,
            "message": message,
            "more_info": f"{MORE_INFO}{code}",
            "status": status,
        }

    def _answer(
        self, method: str, path: str, authorization: str | None, raw: str
    ) -> tuple[int, dict[str, Any]]:
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if authorization != expected:
            return self._error(20003, "Authenticate", 401)
        account = f"/2010-04-01/Accounts/{self.account_sid}"
        if method == "GET" and path == f"{account}.json":
            return 200, {"sid": self.account_sid, "status": "active", "type": "Full"}
        if method == "POST" and path == f"{account}/Messages.json":
            return self._create(dict(parse_qsl(raw, keep_blank_values=True)), parse_qsl(raw))
        if path.startswith("/2010-04-01/Accounts/"):
            return self._error(20404, "The requested resource was not found", 404)
        return self._error(20404, "The requested resource was not found", 404)

    def _create(
        self, form: dict[str, str], pairs: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any]]:
        if self.fail_next:
            code = self.fail_next.pop(0)
            status = {20429: 429, 20500: 500}.get(code, 400)
            return self._error(code, f"simulated error {code}", status)
        to, from_ = form.get("To", ""), form.get("From", "")
        if from_ not in self.numbers:
            return self._error(
                21606,
                f"The 'From' phone number {from_} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
                400,
            )
        if not E164.match(to):
            return self._error(21211, f"The 'To' number {to} is not a valid phone number.", 400)
        if to in self.unsubscribed:
            return self._error(21610, "Attempt to send to unsubscribed recipient", 400)
        if not form.get("Body") and not form.get("MediaUrl"):
            return self._error(21602, "Message body is required.", 400)
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(
            SentSms(
                sid=sid,
                from_=from_,
                to=to,
                body=form.get("Body", ""),
                media_urls=[v for k, v in pairs if k == "MediaUrl"],
                status_callback=form.get("StatusCallback"),
            )
        )
        return 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "from": from_,
            "to": to,
            "body": form.get("Body", ""),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
        }

    # --- webhooks Twilio would make ---

    def signed_form(
        self, url: str, params: dict[str, str], *, token: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """The urlencoded body and headers of a webhook to `url` (the full public URL)."""
        signature = sign(token or self.auth_token, url, params.items())
        return urlencode(params), {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        }
