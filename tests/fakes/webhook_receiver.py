"""A webhook receiver on 127.0.0.1 for the tests of outbound webhooks (docs/webhooks.md).

A real HTTP server in a background thread. It records every request (path, headers, raw body)
and answers from a script: `answers` is consumed one per request (status, extra headers, body),
then `default_status`. With `secret` set it checks each request's Shvya-Signature with the
verification function the docs publish (given as `verify`) and answers 401 when it fails,
as a receiver following the docs would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: not checked (no secret given)


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default_status: int = 200
    secret: str | None = None
    verify: Callable[..., bool] | None = None
    now: Callable[[], float] | None = None  # the clock signatures are checked against
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.answers.append((status, headers or {}, body))

    def handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        signature_ok: bool | None = None
        if self.secret is not None and self.verify is not None:
            signature_ok = self.verify(
                self.secret,
                headers.get("shvya-signature", ""),
                body,
                now=None if self.now is None else self.now(),
            )
        with self._lock:
            self.received.append(Received(path, headers, body, signature_ok))
            if signature_ok is False:
                return 401, {}, b"bad signature"
            if self.answers:
                return self.answers.pop(0)
        return self.default_status, {}, b"ok"

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, answer = receiver.handle(self.path, headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in self.host:

            class V6(ThreadingHTTPServer):
                import socket as _socket

                address_family = _socket.AF_INET6

            server_class = V6
        self._server = server_class((self.host, 0), Handler)
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
