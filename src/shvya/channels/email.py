"""Email out: composing a message, unsubscribe tokens, the SMTP transport, and the adapter the
router sends email through (docs/email.md).

Composing happens once, here (docs/email.md 1): a plain-text part beside an HTML part, a
Message-ID SHVYA generates, `List-Unsubscribe` with an https one-click URL and a mailto, and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), and an unsubscribe link in both
parts. The bytes are serialised with CRLF and headers never refolded, so a DKIM signature over
them stays valid. A transport only delivers those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import html as html_lib
import quopri
import secrets
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr
from typing import Any, TypeVar
from urllib.parse import quote

import aiosmtplib
from itsdangerous import BadSignature, URLSafeSerializer

from shvya.channels.adapters import ChannelSendError, FailureKind, SendResult
from shvya.channels.email_message import EmailTransport, OutgoingEmail
from shvya.channels.schemas import OutboundContent
from shvya.channels.sendgrid import sendgrid_transport
from shvya.config import Settings

# CRLF line ends and no header ever refolded (SMTP allows 998 characters a line): what is
# signed is what is sent (docs/email.md 1.3). The composer writes the bytes itself, each header
# on one line; this policy is for anyone re-serialising a parsed message.
EMAIL_POLICY = SMTP_POLICY.clone(max_line_length=998)

UNSUBSCRIBE_SALT = "shvya.unsubscribe.v1"
ONE_CLICK = "List-Unsubscribe=One-Click"

T = TypeVar("T")


# --- unsubscribe tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeTarget:
    company_id: uuid.UUID
    address: str


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=UNSUBSCRIBE_SALT)


def unsubscribe_token(settings: Settings, *, company_id: uuid.UUID, address: str) -> str:
    """A token naming the company and the address, signed with SHVYA_SECRET_KEY (HMAC): nobody
    without the key can make one for another address (docs/email.md 2)."""
    return str(_serializer(settings).dumps([company_id.hex, address.lower()]))


def read_unsubscribe_token(settings: Settings, token: str) -> UnsubscribeTarget | None:
    """The company and address a token names, or None when it is forged or altered."""
    try:
        data = _serializer(settings).loads(token)
    except BadSignature:
        return None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(item, str) for item in data)
    ):
        return None
    try:
        company_id = uuid.UUID(hex=data[0])
    except ValueError:
        return None
    return UnsubscribeTarget(company_id=company_id, address=data[1])


def unsubscribe_url(settings: Settings, token: str) -> str:
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


# --- composing --------------------------------------------------------------------------------


def new_message_id(from_address: str) -> str:
    """`<random>@<sending domain>`, without the angle brackets."""
    domain = from_address.rpartition("@")[2] or "localhost"
    return f"{secrets.token_hex(16)}@{domain}"


def _text_with_link(text: str, url: str) -> str:
    return f"{text.rstrip()}\n\n--\nUnsubscribe: {url}\n"


def _html_from_text(text: str) -> str:
    """A minimal HTML part for a text-only send: each paragraph escaped, line breaks kept."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    body = "\n".join(
        "<p>" + html_lib.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs
    )
    return f"<!doctype html>\n<html><body>\n{body}\n</body></html>\n"


def _html_with_link(html: str, url: str) -> str:
    link = (
        '<p style="font-size:12px;color:#666"><a href="'
        + html_lib.escape(url, quote=True)
        + '">Unsubscribe</a></p>'
    )
    at = html.lower().rfind("</body>")
    if at == -1:
        return f"{html}\n{link}\n"
    return f"{html[:at]}{link}\n{html[at:]}"


def _one_line(value: str) -> str:
    """A header value on one line: no CR or LF can start a header of its own."""
    return " ".join(value.split()) if ("\r" in value or "\n" in value) else value


def _encoded_word(value: str) -> str:
    """ASCII as it is; anything else as RFC 2047 encoded words, on one line."""
    value = _one_line(value)
    if value.isascii():
        return value
    return str(Header(value, "utf-8", maxlinelen=100_000).encode(linesep=" "))


def _quoted_printable(text: str) -> str:
    """A body as quoted-printable with CRLF line ends, lines under SMTP's limit."""
    body = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8")).decode("ascii")
    return body.replace("\n", "\r\n").rstrip("\r\n")


def _angle(message_id: str) -> str:
    return f"<{message_id.strip().strip('<>')}>"


def compose_email(
    *,
    from_address: str,
    from_name: str | None,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    message_id: str | None = None,
    date: datetime | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> OutgoingEmail:
    """One email to one recipient (docs/email.md 1): multipart/alternative with the text part
    first and the HTML part (derived from the text, escaped, when none is given), both ending
    with the unsubscribe link. `sign` takes the message's bytes and returns the header bytes to
    prepend (a DKIM-Signature)."""
    from_address, to = from_address.lower(), to.lower()
    message_id = message_id or new_message_id(from_address)
    list_unsubscribe = f"<{unsubscribe_url}>, <{unsubscribe_mailto}>"
    headers: list[tuple[str, str]] = [
        ("List-Unsubscribe", list_unsubscribe),
        ("List-Unsubscribe-Post", ONE_CLICK),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", _angle(in_reply_to)))
    chain = [*references]
    if in_reply_to and in_reply_to not in chain:
        chain.append(in_reply_to)
    if chain:
        headers.append(("References", " ".join(_angle(r) for r in chain)))

    text_part = _text_with_link(text, unsubscribe_url)
    html_part = _html_with_link(
        html if html is not None else _html_from_text(text), unsubscribe_url
    )
    boundary = f"=_shvya_{secrets.token_hex(12)}"
    lines = [
        f"From: {formataddr((_one_line(from_name), from_address)) if from_name else from_address}",
        f"To: {to}",
        f"Subject: {_encoded_word(subject)}",
        f"Date: {format_datetime(date or datetime.now(UTC))}",
        f"Message-ID: {_angle(message_id)}",
        *(f"{name}: {_one_line(value)}" for name, value in headers),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(text_part),
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(html_part),
        f"--{boundary}--",
        "",
    ]
    raw = "\r\n".join(lines).encode("ascii")
    if sign is not None:
        raw = sign(raw) + raw
    return OutgoingEmail(
        from_address=from_address,
        from_name=from_name,
        to=to,
        subject=subject,
        text=text_part,
        html=html_part,
        message_id=message_id,
        headers=tuple(headers),
        raw=raw,
    )


# --- the SMTP transport -----------------------------------------------------------------------

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class _LoopThread:
    """One asyncio event loop in its own daemon thread: the sync workers hand it coroutines
    and wait for their results (aiosmtplib is async; our job workers are threads)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


def _classify(code: int, what: str, message: str) -> ChannelSendError:
    """An SMTP reply code as a FailureKind (docs/email.md 4)."""
    if code == 535 or code == 530:
        return ChannelSendError(FailureKind.auth, f"smtp_{code}", f"{what}: {message}")
    if 400 <= code < 500:
        return ChannelSendError(FailureKind.retry, f"smtp_{code}", f"{what}: {message}")
    return ChannelSendError(FailureKind.permanent, f"smtp_{code}", f"{what}: {message}")


class SmtpTransport:
    """Delivers composed email over one SMTP connection kept open and reused across sends
    (docs/email.md 3), reconnecting when the server has closed it. Thread-safe: sends are
    serialised on the transport's event loop, as one SMTP connection must be."""

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        security: str,
        username: str | None,
        password: str | None,
        timeout: float = 30.0,
        validate_certs: bool = True,
    ) -> None:
        if security not in DEFAULT_PORTS:
            raise ValueError(f"SMTP security is starttls, tls or none, not {security!r}")
        self.host, self.security = host, security
        self.port = port or DEFAULT_PORTS[security]
        self.username, self.password = username, password
        self.timeout, self.validate_certs = timeout, validate_certs
        self._loop = _LoopThread(f"smtp-{host}:{self.port}")
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock: asyncio.Lock | None = None
        self.connections = 0  # opened over the transport's life (the bench reports it)

    # --- on the loop --------------------------------------------------------------------

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            validate_certs=self.validate_certs,
            timeout=self.timeout,
        )

    async def _open(self) -> aiosmtplib.SMTP:
        smtp = self._client()
        try:
            await smtp.connect()
            if self.username:
                await smtp.login(self.username, self.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise ChannelSendError(
                FailureKind.auth,
                f"smtp_{exc.code}",
                f"the SMTP server refused the user name or password: {exc.message}",
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise _classify(exc.code, "connecting", exc.message) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            raise ChannelSendError(
                FailureKind.retry,
                "smtp_unreachable",
                f"cannot connect to {self.host}:{self.port} ({type(exc).__name__}: {exc})",
            ) from None
        self.connections += 1
        return smtp

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def _send(self, email: OutgoingEmail) -> SendResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for attempt in (1, 2):
                if self._smtp is None or not self._smtp.is_connected:
                    self._smtp = await self._open()
                try:
                    await self._smtp.mail(email.from_address)
                    break
                except aiosmtplib.SMTPServerDisconnected:
                    # The server closed the kept connection: nothing was sent, open another.
                    self._drop()
                    if attempt == 2:
                        raise ChannelSendError(
                            FailureKind.retry, "smtp_disconnected", "the server closed the link"
                        ) from None
                except aiosmtplib.SMTPResponseException as exc:
                    self._drop()
                    raise _classify(exc.code, "MAIL FROM refused", exc.message) from None
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    self._drop()
                    raise ChannelSendError(
                        FailureKind.retry, "smtp_error", f"MAIL FROM: {exc}"
                    ) from None
            assert self._smtp is not None
            try:
                await self._smtp.rcpt(email.to)
            except aiosmtplib.SMTPResponseException as exc:
                self._drop()
                raise _classify(exc.code, f"recipient {email.to} refused", exc.message) from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self._drop()
                raise ChannelSendError(FailureKind.retry, "smtp_error", f"RCPT TO: {exc}") from None
            try:
                response = await self._smtp.data(email.raw)
            except aiosmtplib.SMTPResponseException as exc:
                # The server answered: it did not take the message.
                self._drop()
                raise _classify(exc.code, "message refused", exc.message) from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # The bytes may have reached it and no answer came: never resend (docs/email.md 4).
                self._drop()
                raise ChannelSendError(
                    FailureKind.unknown,
                    "smtp_no_answer_after_data",
                    f"no answer after the message was sent ({type(exc).__name__}: {exc})",
                ) from None
            return SendResult(external_id=_queue_id(response.message) or email.message_id)

    async def _verify(self) -> None:
        smtp = await self._open()
        try:
            await smtp.noop()
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()

    async def _close(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await self._smtp.quit()
        self._drop()

    # --- from the workers ---------------------------------------------------------------

    def send_email(self, email: OutgoingEmail) -> SendResult:
        return self._loop.run(self._send(email))

    def verify(self) -> None:
        """Connect (STARTTLS or TLS as configured), log in and say NOOP on a connection of its
        own; ChannelSendError(auth) when the server refuses the credentials, (retry) when it
        cannot be reached."""
        self._loop.run(self._verify())

    def close(self) -> None:
        try:
            self._loop.run(self._close())
        finally:
            self._loop.stop()


def _queue_id(reply: str) -> str | None:
    """The server's queue id from `250 2.0.0 Ok: queued as 4Z1abc`, when it says one."""
    marker = "queued as "
    at = reply.find(marker)
    if at == -1:
        return None
    found = reply[at + len(marker) :].split()
    return found[0][:255] if found else None


# --- providers --------------------------------------------------------------------------------

TransportFactory = Callable[[dict[str, Any], str | None, Settings], EmailTransport]


def smtp_transport(
    config: dict[str, Any], secret: str | None, settings: Settings
) -> EmailTransport:
    """An SmtpTransport from an account's config: host, port, security, username."""
    if not config.get("host"):
        raise ChannelSendError(FailureKind.auth, "config", "the SMTP account has no host")
    return SmtpTransport(
        host=str(config["host"]),
        port=int(config["port"]) if config.get("port") else None,
        security=str(config.get("security") or "starttls"),
        username=str(config["username"]) if config.get("username") else None,
        password=secret,
    )


def _ses_transport(
    config: dict[str, Any], secret: str | None, settings: Settings
) -> EmailTransport:
    """Amazon SES (channels/ses.py), imported when an account uses it: boto3 takes a
    noticeable part of a second to import, which every worker and CLI start would pay."""
    from shvya.channels.ses import ses_transport

    return ses_transport(config, secret, settings)


EMAIL_TRANSPORTS: dict[str, TransportFactory] = {
    "smtp": smtp_transport,
    "ses": _ses_transport,
    "sendgrid": sendgrid_transport,
}


# --- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailSendResult(SendResult):
    """What an email send returns: the provider's id, and SHVYA's Message-ID."""

    email_message_id: str | None = None


def content_refusal(content: OutboundContent) -> tuple[str, str] | None:
    """Why this content cannot go as an email, or None (docs/email.md 1)."""
    if content.text is None:
        return "email_text_required", "an email is sent from `text` (and optional `html`)"
    if not content.subject:
        return "subject_required", "an email needs a `subject`"
    return None


class EmailAdapter:
    """The router's adapter for email: composes for the lead's address with its unsubscribe
    token and hands the bytes to the account's transport."""

    def __init__(
        self,
        *,
        transport: EmailTransport,
        company_id: uuid.UUID,
        from_address: str,
        from_name: str | None,
        settings: Settings,
        unsubscribe_mailto: str | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.transport, self.company_id = transport, company_id
        self.from_address, self.from_name = from_address, from_name
        self.settings, self.sign = settings, sign
        self.unsubscribe_mailto = unsubscribe_mailto

    def compose(self, *, to: str, content: OutboundContent) -> OutgoingEmail:
        refusal = content_refusal(content)
        if refusal is not None:
            raise ChannelSendError(FailureKind.permanent, refusal[0], refusal[1])
        assert content.text is not None and content.subject is not None
        token = unsubscribe_token(self.settings, company_id=self.company_id, address=to)
        mailto = self.unsubscribe_mailto or (
            f"mailto:{self.from_address}?subject={quote('unsubscribe')}"
        )
        return compose_email(
            from_address=self.from_address,
            from_name=self.from_name,
            to=to,
            subject=content.subject,
            text=content.text,
            html=content.html,
            unsubscribe_url=unsubscribe_url(self.settings, token),
            unsubscribe_mailto=mailto,
            in_reply_to=content.email_in_reply_to,
            references=content.email_references or (),
            sign=self.sign,
        )

    def send(self, *, to: str, content: OutboundContent) -> SendResult:
        email = self.compose(to=to, content=content)
        result = self.transport.send_email(email)
        return EmailSendResult(external_id=result.external_id, email_message_id=email.message_id)
