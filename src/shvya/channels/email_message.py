"""The seam between composing an email and handing it to a provider (docs/email.md).

Composing (headers, parts, unsubscribe links, the DKIM signature) happens once, in SHVYA; a
transport only delivers what it is given: SMTP and Amazon SES take the signed bytes as they
are, SendGrid's v3 API takes the fields and the extra headers. Every transport returns the
provider's message id, stored as the Message's external_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shvya.channels.adapters import SendResult


@dataclass(frozen=True)
class OutgoingEmail:
    """One composed email to one recipient."""

    from_address: str  # lower-case addr-spec
    from_name: str | None
    to: str  # lower-case addr-spec
    subject: str
    text: str  # the plain-text part: always present
    html: str | None  # the HTML part, when there is one
    # SHVYA's Message-ID, without angle brackets (also stored as Message.email_message_id).
    message_id: str
    # Further headers in the order they were added (List-Unsubscribe, List-Unsubscribe-Post,
    # In-Reply-To, References...), each value on one line.
    headers: tuple[tuple[str, str], ...]
    # The whole message as it goes over SMTP, DKIM signature included when the sending domain
    # has a key.
    raw: bytes


class EmailTransport(Protocol):
    """A provider that delivers composed email: SMTP, Amazon SES or SendGrid."""

    def send_email(self, email: OutgoingEmail) -> SendResult: ...

    def close(self) -> None: ...

    # Checks the credentials with the provider when an account is connected: raises
    # ChannelSendError(FailureKind.auth, ...) when it refuses them.
    def verify(self) -> None: ...
