"""A fake Amazon SES API v2 for SHVYA's tests (docs/email-providers.md section 1).

A real HTTP server on 127.0.0.1:<ephemeral port> in a background thread, speaking SESv2's
REST-JSON protocol as boto3 does: POST /v2/email/outbound-emails (SendEmail) and
GET /v2/email/account (GetAccount). Errors come as AWS sends them: the HTTP status, an
`x-amzn-ErrorType` header naming the code and a JSON body with `message`. It records what it
received (the raw message bytes decoded from base64, and the TCP connection each request came
on, so tests can count connections), checks the access key id in the SigV4 Authorization
header (the signature itself is not recomputed), refuses a From domain that is not a verified
identity, and throttles at `max_send_rate` sends per second like SES's sending rate.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/")


@dataclass(frozen=True)
class SentRaw:
    message_id: str
    raw: bytes
    destination: dict[str, Any] | None
    configuration_set: str | None


@dataclass(frozen=True)
class Fault:
    code: str
    status: int
    message: str


@dataclass
class FakeSes:
    access_keys: frozenset[str] = frozenset({"AKIAFAKE"})
    verified_domains: frozenset[str] = frozenset({"example.com"})
    max_send_rate: float | None = None  # sends per second; None: unlimited
    account_status: str = "HEALTHY"  # or "SUSPENDED", "PAUSED"
    delay_seconds: float = 0.0  # answer this late (tests of read timeouts)
    sent: list[SentRaw] = field(default_factory=list)
    requests: list[tuple[str, str, tuple[str, int]]] = field(default_factory=list)
    _faults: deque[Fault] = field(default_factory=deque)
    _send_times: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- control ---

    def fail_next(self, code: str, status: int, message: str = "") -> None:
        """The next call answers this error (then back to normal)."""
        self._faults.append(Fault(code, status, message or code))

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def connections(self) -> int:
        """Distinct TCP connections the requests arrived on."""
        return len({peer for _, _, peer in self.requests})

    def __enter__(self) -> FakeSes:
        fake = self

        class Handler(_Handler):
            ses = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
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

    # --- the API ---

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, peer: tuple[str, int]
    ) -> tuple[int, dict[str, Any], str | None]:
        """(status, JSON body, error code or None)."""
        with self._lock:
            self.requests.append((method, path, peer))
            match = CREDENTIAL_RE.search(headers.get("authorization", ""))
            if match is None:
                return _error("MissingAuthenticationToken", 403, "Missing Authentication Token")
            if match.group(1) not in self.access_keys:
                return _error(
                    "UnrecognizedClientException",
                    403,
                    "The security token included in the request is invalid.",
                )
            if self._faults:
                fault = self._faults.popleft()
                return _error(fault.code, fault.status, fault.message)
            if method == "GET" and path == "/v2/email/account":
                return 200, self._account(), None
            if method == "POST" and path == "/v2/email/outbound-emails":
                return self._send(body)
            return _error("NotFoundException", 404, f"no route {method} {path}")

    def _account(self) -> dict[str, Any]:
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": self.account_status,
            "ProductionAccessEnabled": True,
            "SendQuota": {
                "Max24HourSend": 50000.0,
                "MaxSendRate": float(self.max_send_rate or 14.0),
                "SentLast24Hours": float(len(self.sent)),
            },
            "SendingEnabled": self.account_status == "HEALTHY",
        }

    def _send(self, body: bytes) -> tuple[int, dict[str, Any], str | None]:
        if self.account_status == "SUSPENDED":
            return _error("AccountSuspendedException", 400, "Account is suspended.")
        if self.account_status == "PAUSED":
            return _error("SendingPausedException", 400, "Sending is paused for this account.")
        try:
            request = json.loads(body)
            data = base64.b64decode(request["Content"]["Raw"]["Data"], validate=True)
        except (ValueError, KeyError, TypeError):
            return _error("BadRequestException", 400, "Content.Raw.Data is required")
        parsed = message_from_bytes(data)
        sender = parseaddr(str(parsed.get("From", "")))[1]
        if not sender:
            return _error("BadRequestException", 400, "Missing required header 'From'.")
        domain = sender.rpartition("@")[2].lower()
        if domain not in self.verified_domains:
            return _error(
                "MessageRejected",
                400,
                "Email address is not verified. The following identities failed the check "
                f"in region US-EAST-1: {sender}",
            )
        now = time.monotonic()
        if self.max_send_rate is not None:
            while self._send_times and now - self._send_times[0] >= 1.0:
                self._send_times.popleft()
            if len(self._send_times) >= self.max_send_rate:
                return _error("TooManyRequestsException", 429, "Maximum sending rate exceeded.")
            self._send_times.append(now)
        message_id = f"0100018c{uuid.uuid4().hex}-000000"
        self.sent.append(
            SentRaw(
                message_id=message_id,
                raw=data,
                destination=request.get("Destination"),
                configuration_set=request.get("ConfigurationSetName"),
            )
        )
        return 200, {"MessageId": message_id}, None


def _error(code: str, status: int, message: str) -> tuple[int, dict[str, Any], str | None]:
    return status, {"message": message}, code


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and left (the timeout tests) is not the fake's error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    ses: FakeSes
    protocol_version = "HTTP/1.1"  # keep-alive, as AWS's endpoints

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        status, payload, code = self.ses.handle(
            self.command, self.path.split("?")[0], headers, body, peer
        )
        if self.ses.delay_seconds:
            time.sleep(self.ses.delay_seconds)
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if code is not None:
            self.send_header("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/")
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()
