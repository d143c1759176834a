"""What can be sent, and the API's channel shapes."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    StringConstraints,
    model_validator,
)

from shvya.conversations.schemas import MAX_TEXT_CHARS, MessageText
from shvya.crm.models import Channel
from shvya.schemas import NOT_BLANK, SafeStr, StrictInput, leave_out_or_set


class MediaKind(StrEnum):
    image = "image"
    document = "document"
    audio = "audio"
    video = "video"


class Media(StrictInput):
    kind: MediaKind
    link: HttpUrl | None = None
    media_id: SafeStr | None = Field(default=None, max_length=255)
    caption: SafeStr | None = Field(default=None, max_length=1024)
    filename: SafeStr | None = Field(default=None, max_length=240)

    @model_validator(mode="after")
    def _one_source(self) -> Media:
        if (self.link is None) == (self.media_id is None):
            raise ValueError("give exactly one of link or media_id")
        if self.caption is not None and self.kind is MediaKind.audio:
            raise ValueError("audio takes no caption")
        if self.filename is not None and self.kind is not MediaKind.document:
            raise ValueError("only documents take a filename")
        return self


class ReplyButton(StrictInput):
    id: SafeStr = Field(min_length=1, max_length=256)
    title: SafeStr = Field(min_length=1, max_length=20)


class ListRow(StrictInput):
    id: SafeStr = Field(min_length=1, max_length=200)
    title: SafeStr = Field(min_length=1, max_length=24)
    description: SafeStr | None = Field(default=None, max_length=72)


class ListSection(StrictInput):
    title: SafeStr | None = Field(default=None, max_length=24)
    rows: list[ListRow] = Field(min_length=1, max_length=10)


class Interactive(StrictInput):
    """WhatsApp reply buttons (up to 3) or a list (up to 10 rows in all)."""

    kind: Literal["buttons", "list"]
    body: SafeStr = Field(min_length=1, max_length=4096)
    header: SafeStr | None = Field(default=None, max_length=60)
    footer: SafeStr | None = Field(default=None, max_length=60)
    buttons: list[ReplyButton] = Field(default_factory=list, max_length=3)
    list_button: SafeStr | None = Field(default=None, max_length=20)
    sections: list[ListSection] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _shape(self) -> Interactive:
        if self.kind == "buttons":
            if not self.buttons:
                raise ValueError("reply buttons need 1 to 3 buttons")
            if len(self.body) > 1024:
                raise ValueError("a reply-button body is at most 1024 characters")
        else:
            rows = sum(len(section.rows) for section in self.sections)
            if not self.list_button or not 1 <= rows <= 10:
                raise ValueError("a list needs list_button and 1 to 10 rows across its sections")
        return self


class TemplateSend(StrictInput):
    """An approved template and the values of its variables."""

    name: SafeStr = Field(min_length=1, max_length=512)
    language: SafeStr = Field(default="en", max_length=16)
    body_params: list[SafeStr] = Field(default_factory=list, max_length=50)
    header_media: Media | None = None
    header_text: SafeStr | None = Field(default=None, max_length=60)
    button_url_params: list[SafeStr] = Field(default_factory=list, max_length=10)
    # Each URL parameter's button position among all the template's buttons (quick replies
    # too); filled by the router from the stored template.
    url_button_indexes: list[int] | None = Field(default=None, max_length=10)

    @model_validator(mode="after")
    def _header(self) -> TemplateSend:
        if self.header_media is not None and self.header_media.kind is MediaKind.audio:
            raise ValueError("a template header is an image, video or document, not audio")
        if self.header_media is not None and self.header_text is not None:
            raise ValueError("give header_media or header_text, not both")
        return self


class OutboundContent(StrictInput):
    """One message. Exactly one of text, media, interactive or template."""

    text: SafeStr | None = Field(default=None, min_length=1, max_length=4096)
    media: Media | None = None
    interactive: Interactive | None = None
    template: TemplateSend | None = None
    # Quote-reply to this provider message id (the lead's message).
    reply_to: SafeStr | None = Field(default=None, max_length=255)
    # Outside WhatsApp's 24-hour window, may the router swap this for the company's
    # re-engagement template? (AI replies and bump-ups: yes.)
    reengage_with_template: StrictBool = False
    # Email only (docs/email.md 1): the subject (required for an email send), an HTML part
    # beside the text, and the Message-IDs (without angle brackets) it answers.
    subject: SafeStr | None = Field(default=None, min_length=1, max_length=998)
    # Within the API's 1 MB body limit even JSON-escaped; Gmail clips over about 102 KB.
    html: SafeStr | None = Field(default=None, min_length=1, max_length=100_000)
    email_in_reply_to: SafeStr | None = Field(default=None, max_length=998)
    email_references: list[Annotated[SafeStr, Field(max_length=998)]] | None = Field(
        default=None, max_length=100
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> OutboundContent:
        given = [
            f for f in ("text", "media", "interactive", "template") if getattr(self, f) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of text, media, interactive or template")
        return self

    @property
    def kind(self) -> str:
        for kind in ("text", "media", "interactive", "template"):
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated to hold one kind")

    def preview(self) -> str:
        """The text shown for this message in the conversation."""
        if self.text is not None:
            return self.text
        if self.media is not None:
            return self.media.caption or f"[{self.media.kind.value}]"
        if self.interactive is not None:
            return self.interactive.body
        assert self.template is not None
        return f"[template {self.template.name}]"


class SendOutcome(StrEnum):
    sent = "sent"
    deferred = "deferred"
    refused = "refused"
    already_sent = "already_sent"
    unknown = "unknown"
    # Nothing was owed any more (an opt-out confirmation to a contact who opted in again).
    skipped = "skipped"


class SendResultOut(BaseModel):
    outcome: SendOutcome
    message_id: uuid.UUID | None = None
    external_id: str | None = None
    reason: str | None = None
    retry_at: datetime | None = None


# --- API shapes ---------------------------------------------------------------------------


_MESSAGE_FIELDS = ("text", "template", "media")


class PersonMessageIn(StrictInput):
    """A person's message to a lead: exactly one of text, template or media."""

    # The schema says what the validator checks: exactly one of them, never null.
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": [field]} for field in _MESSAGE_FIELDS]}
    )

    channel: Channel | None = Field(
        default=None,
        description="Where it goes; default: the channel the lead last wrote on",
    )
    text: MessageText | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=NOT_BLANK,
        description=f"Free-form text, at most {MAX_TEXT_CHARS} characters (WhatsApp's limit); "
        "on WhatsApp only inside the 24-hour window",
        json_schema_extra=leave_out_or_set,
    )
    template: TemplateSend | None = Field(
        default=None,
        description="An approved template (see GET /templates) and its parameters: what "
        "WhatsApp allows outside the 24-hour window",
        json_schema_extra=leave_out_or_set,
    )
    media: Media | None = Field(
        default=None,
        description="An image, document, audio or video by its http(s) `link`, with an "
        "optional caption (not on audio) and filename (documents)",
        json_schema_extra=leave_out_or_set,
    )
    subject: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=998,
        pattern=NOT_BLANK,
        description="The email's subject: required when `channel` is email",
        json_schema_extra=leave_out_or_set,
    )
    html: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=500_000,
        description="Email only: an HTML part sent beside `text` (the plain-text part); "
        "without it SHVYA derives a minimal HTML part from the text",
        json_schema_extra=leave_out_or_set,
    )

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [f for f in _MESSAGE_FIELDS if f in data]
            if len(given) != 1:
                shown = ", ".join(given) if given else "none"
                raise ValueError(f"give exactly one of text, template or media (got {shown})")
            if data[given[0]] is None:
                raise ValueError(f"{given[0]} cannot be null")
        return data

    def content(self) -> OutboundContent:
        return OutboundContent(
            text=self.text,
            template=self.template,
            media=self.media,
            subject=self.subject,
            html=self.html,
        )


class VerdictOut(BaseModel):
    decision: Literal["send_now", "wait"] = Field(
        description="send_now: the job sends it now; wait: the router defers it until `until`"
    )
    until: datetime | None = None
    reason: str | None = Field(default=None, description="Why it waits (pacing, throughput)")
    detail: str


class PersonMessageOut(BaseModel):
    message_id: uuid.UUID = Field(description="The message the lead will get")
    job_id: uuid.UUID = Field(description="The agent.reply job that sends it")
    lead_id: uuid.UUID
    channel: str
    status: str = Field(description="queued: see it in GET /leads/{id}/messages")
    verdict: VerdictOut


# Meta's numeric ids (phone_number_id, WABA id).
GraphId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,64}$")]


# A Graph access token is printable ASCII without spaces (docs/whatsapp.md 1.1): anything
# else cannot even go into an HTTP header, and Meta would refuse it anyway.
PRINTABLE_ASCII_PATTERN = r"^[!-~]+$"
GRAPH_CREDENTIAL_RULE = "a Graph access token is printable ASCII without spaces or line breaks"
_PRINTABLE_ASCII = re.compile(PRINTABLE_ASCII_PATTERN)


def is_graph_token(token: str) -> bool:
    return _PRINTABLE_ASCII.fullmatch(token) is not None


def _check_graph_token(value: str) -> str:
    if not is_graph_token(value):
        raise ValueError(
            f"{GRAPH_CREDENTIAL_RULE}: copy it again from Meta (a space, a line break or a "
            "typographic character came with it)"
        )
    return value


class WhatsAppAccountIn(StrictInput):
    phone_number_id: GraphId
    access_token: Annotated[str, AfterValidator(_check_graph_token)] = Field(
        min_length=8,
        max_length=1024,
        json_schema_extra={"pattern": PRINTABLE_ASCII_PATTERN},
        description="A Graph API access token that may use this number and its WABA",
    )
    waba_id: GraphId | None = Field(
        default=None,
        description=(
            "The WhatsApp Business Account the number belongs to; checked with Meta, and "
            "needed for templates. One company per WABA."
        ),
    )
    display_phone_number: SafeStr | None = Field(default=None, max_length=32)
    name: SafeStr = Field(default="", max_length=200)


class EmailAccountIn(StrictInput):
    """An email sending account (docs/email.md 5): the from address and name, the provider,
    and the provider's fields (for SMTP: host, port, security, username, password)."""

    model_config = ConfigDict(extra="allow")

    provider: SafeStr = Field(
        default="smtp", max_length=32, description="smtp, ses (Amazon SES v2) or sendgrid"
    )
    from_email: SafeStr = Field(min_length=3, max_length=320)
    from_name: SafeStr | None = Field(default=None, max_length=200)
    name: SafeStr = Field(default="", max_length=200)
    host: SafeStr | None = Field(default=None, max_length=255, description="SMTP server")
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: SafeStr | None = Field(default=None, max_length=320)
    password: SafeStr | None = Field(
        default=None,
        max_length=4096,
        description="The SMTP password (or the provider's secret): stored encrypted, never shown",
    )
    unsubscribe_mailto: SafeStr | None = Field(
        default=None,
        max_length=320,
        description="Where List-Unsubscribe's mailto goes (default: the from address)",
    )
    region: SafeStr | None = Field(default=None, max_length=32, description="ses: AWS region")
    access_key_id: SafeStr | None = Field(default=None, max_length=128, description="ses")
    secret_access_key: SafeStr | None = Field(
        default=None, max_length=256, description="ses: stored encrypted, never shown"
    )
    configuration_set: SafeStr | None = Field(
        default=None, max_length=64, description="ses: the configuration set to send with"
    )
    api_key: SafeStr | None = Field(
        default=None, max_length=256, description="sendgrid: stored encrypted, never shown"
    )
    verify: StrictBool = Field(
        default=True, description="Check the connection and credentials before storing"
    )


class ChannelAccountOut(BaseModel):
    id: uuid.UUID
    channel: str
    name: str
    external_id: str
    config: dict[str, Any]
    token_hint: str | None = Field(description="The last 4 characters of the stored token")
    is_active: bool
    needs_attention: str | None = Field(
        default=None,
        description=(
            "Why a person must act on this account: Meta refused its token (nothing sends "
            "until then), or its WABA was another company's; cleared by connecting it again"
        ),
    )
    needs_attention_since: datetime | None = None
    created_at: datetime


# --- quiet hours (docs/quiet-hours.md) --------------------------------------------------------


class QuietWindowOut(BaseModel):
    start: str = Field(description="Local time the channel may send from, HH:MM.")
    end: str = Field(description="Local time it stops, HH:MM; before start for overnight.")


class QuietHoursOut(BaseModel):
    email: QuietWindowOut
    sms: QuietWindowOut


HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _check_hhmm(value: str) -> str:
    if not re.match(HHMM_PATTERN, value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM, 00:00 to 23:59 (e.g. 08:00)")
    return value


HHMM = Annotated[
    str,
    AfterValidator(_check_hhmm),
    Field(max_length=5, json_schema_extra={"pattern": HHMM_PATTERN}),
]


class QuietWindowIn(StrictInput):
    start: HHMM = Field(description="Local time the channel may send from, HH:MM")
    end: HHMM = Field(
        description="Local time it stops, HH:MM; before start for an overnight window; "
        "never equal to start"
    )


class QuietHoursPatchIn(StrictInput):
    """The channels to change; a channel sent as null goes back to its default."""

    email: QuietWindowIn | None = None
    sms: QuietWindowIn | None = None

    def as_patch(self) -> dict[str, Any]:
        return {
            name: None if getattr(self, name) is None else getattr(self, name).model_dump()
            for name in self.model_fields_set
        }


# --- SMS over Twilio (docs/sms.md) ------------------------------------------------------------


class SmsAccountIn(StrictInput):
    phone_number: Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")] = Field(
        description="The Twilio number SMS go from, E.164 (+14155550100)"
    )
    account_sid: Annotated[str, StringConstraints(pattern=r"^AC[0-9a-fA-F]{32}$")] = Field(
        description="The Twilio account SID that owns the number (AC and 32 hex digits)"
    )
    auth_token: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{16,128}$")] = Field(
        description="The account's auth token: stored encrypted, never shown again"
    )
    name: SafeStr = Field(default="", max_length=200)
    verify: StrictBool = Field(
        default=True, description="Check the SID and token with Twilio before storing them"
    )
