"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives: each envelope's
sender, recipients and the message's exact bytes, and counts the connections made to it.

Errors are scripted per recipient: `refuse_rcpt[address] = "550 5.1.1 no such user"` answers
RCPT TO with that reply; `refuse_data[address] = "451 4.3.0 try later"` answers the DATA of a
message to that address. `users` turns on AUTH (LOGIN, PLAIN; without TLS, for tests).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=default)


@dataclass
class _Handler:
    sink: SmtpSink

    async def handle_RCPT(  # noqa: N802 (aiosmtpd calls it by this name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        refusal = self.sink.refuse_rcpt.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd calls it by this name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        for address in envelope.rcpt_tos:
            refusal = self.sink.refuse_data.get(address.lower())
            if refusal:
                return refusal
        content = envelope.original_content or b""
        with self.sink.lock:
            self.sink.received.append(
                Received(
                    sender=str(envelope.mail_from),
                    recipients=[str(r) for r in envelope.rcpt_tos],
                    data=bytes(content),
                )
            )
            n = len(self.sink.received)
        return f"250 2.0.0 Ok: queued as Q{n:06d}"


@dataclass
class SmtpSink:
    users: dict[str, str] | None = None
    port: int = 0
    received: list[Received] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    refuse_data: dict[str, str] = field(default_factory=dict)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SmtpSink:
        sink = self

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and sink.users is not None
                and sink.users.get(data.login.decode()) == data.password.decode()
            )
            return AuthResult(success=ok, handled=False)

        class CountingSMTP(SMTP):
            def connection_made(self, transport: Any) -> None:
                with sink.lock:
                    sink.connections += 1
                super().connection_made(transport)

        class SinkController(Controller):
            def factory(self) -> SMTP:
                kwargs: dict[str, Any] = {"decode_data": False}
                if sink.users is not None:
                    kwargs.update(
                        authenticator=authenticate,
                        auth_require_tls=False,
                        auth_exclude_mechanism=["LOGIN"],
                    )
                return CountingSMTP(self.handler, **kwargs)

        self._controller = SinkController(
            _Handler(self), hostname="127.0.0.1", port=self.port or _free_port()
        )
        self._controller.start()
        self.port = self._controller.port
        self.connections = 0  # start() made one to check the server answers
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
