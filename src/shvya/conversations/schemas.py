from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shvya.crm.models import Channel
from shvya.schemas import (
    NOT_BLANK,
    TIMESTAMP_FORMAT,
    Page,
    RowOut,
    SafeStr,
    StrictInput,
    Timestamp,
)

MAX_TEXT_CHARS = 4096


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# A message's text, with `Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK)`:
# the pattern says in the schema what the validator checks, something besides blanks. (The
# Field goes on the field, not in here: inside the Annotated its constraints would be checked
# after the validators, with other error types, and the pattern would leave the schema.)
MessageText = Annotated[SafeStr, AfterValidator(_not_blank)]


class InboundMessageIn(StrictInput):
    model_config = ConfigDict(populate_by_name=True)

    channel: Channel
    from_: SafeStr = Field(
        alias="from",
        min_length=1,
        max_length=320,
        description="The lead's phone (E.164, or national in the company's region) or email.",
    )
    name: SafeStr | None = Field(default=None, max_length=200)
    text: MessageText = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK)
    external_id: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The provider's message id; a repeat answers 200 with the first result.",
    )
    received_at: Timestamp | None = Field(
        default=None,
        description=f"When the provider received it ({TIMESTAMP_FORMAT}); default now.",
    )


class ReceiveResultOut(BaseModel):
    lead_id: uuid.UUID
    message_id: uuid.UUID
    job_id: uuid.UUID | None = Field(description="The queued ai.engage job; null if AI is paused.")
    lead_created: bool
    duplicate: bool


class MessageOut(RowOut):
    lead_id: uuid.UUID
    channel: str
    direction: str
    text: str
    status: str
    external_id: str | None
    template_id: uuid.UUID | None
    error: str | None
    meta: dict[str, Any] = Field(
        description="For outbound messages: `purpose` (reply, safe_answer, handoff, bumpup, "
        "opt_out_confirmation, agent_reply), for a person's message its `actor` (`user:<id>`, "
        "or `api_key:<id>` for a key of no user) and, for AI replies, `passages` (the ids of "
        "the knowledge-base passages the reply used, see GET /kb/search), `answers` (the "
        "inbound message ids it answers), `intent` and `language`"
    )
    created_at: datetime
    received_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


class MessagePage(Page):
    items: list[MessageOut]


MAX_HISTORY_ITEMS = 500


class HistoryItemIn(StrictInput):
    direction: Literal["in", "out"] = Field(description="in: from the lead; out: from the team")
    text: MessageText = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK)
    kind: Literal["reply", "bumpup"] = Field(
        default="reply",
        description="bumpup: a follow-up nudge; new bump-ups never repeat imported ones",
    )
    sent_at: Timestamp = Field(description=f"When it was sent ({TIMESTAMP_FORMAT})")


class HistoryIn(StrictInput):
    channel: Channel | None = Field(
        default=None, description="The conversation's channel; default: the lead's first contact's"
    )
    messages: list[HistoryItemIn] = Field(min_length=1, max_length=MAX_HISTORY_ITEMS)


class HistoryOut(BaseModel):
    imported: int = Field(description="Messages stored now")
    already_imported: int = Field(description="Messages an earlier import already stored")
    message_ids: list[uuid.UUID] = Field(description="Every message of the request, in order")
