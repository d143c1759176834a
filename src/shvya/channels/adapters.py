"""The seam every channel adapter implements (docs/architecture.md rule 7), and how sends fail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from shvya.channels.schemas import OutboundContent


class FailureKind(StrEnum):
    retry = "retry"  # try again later with backoff (rate limits, outages)
    outside_window = "outside_window"  # WhatsApp 131047: only a template may go now
    permanent = "permanent"  # this message can never be sent as it is
    auth = "auth"  # the channel's credentials are bad: nothing will send until fixed
    # The account is locked, blocked for policy or lacks permissions: stop and alert.
    channel_blocked = "channel_blocked"
    unknown = "unknown"  # the provider may or may not have taken it: never resend


class ChannelSendError(Exception):
    def __init__(
        self,
        kind: FailureKind,
        code: str,
        message: str,
        *,
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.kind = kind
        self.code = code
        self.message = message
        # For `retry`: the earliest moment the provider said it will take another request
        # (SendGrid's X-RateLimit-Reset); None: the queue's own backoff decides.
        self.retry_at = retry_at


@dataclass(frozen=True)
class SendResult:
    external_id: str


class ChannelAdapter(Protocol):
    def send(self, *, to: str, content: OutboundContent) -> SendResult: ...
