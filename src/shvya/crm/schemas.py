from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shvya.crm.models import (
    BUMPUP_IDLE_MINUTES_RANGE,
    BUMPUP_MAX_RANGE,
    DEFAULT_BUMPUP_IDLE_MINUTES,
    DEFAULT_BUMPUP_MAX,
    Channel,
)
from shvya.schemas import (
    NOT_A_BOOL,
    Integer,
    JsonObject,
    Number,
    Page,
    RowOut,
    SafeStr,
    StrictInput,
    leave_out_or_set,
)


class ContactIn(StrictInput):
    channel: Channel
    value: SafeStr = Field(min_length=1, max_length=320, description="Phone or email address.")


class LeadCreateIn(StrictInput):
    name: SafeStr | None = Field(default=None, max_length=200)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=20)
    stage: SafeStr | None = Field(
        default=None,
        max_length=100,
        description="Stage id or name; the default pipeline's first stage when omitted.",
    )
    attributes: JsonObject = Field(default_factory=dict)


class LeadPatchIn(StrictInput):
    """Only these fields can change; ids, the company and timestamps never can."""

    stage: SafeStr | None = Field(
        default=None,
        max_length=100,
        description="Stage id or name.",
        json_schema_extra=leave_out_or_set,
    )
    name: SafeStr | None = Field(default=None, max_length=200, description="null clears it.")
    priority: Annotated[int, Field(ge=-1000, le=1000), NOT_A_BOOL] | None = Field(
        default=None, json_schema_extra=leave_out_or_set
    )
    attributes: JsonObject | None = Field(
        default=None,
        description="Merged into the lead's attributes; a key set to null is removed.",
        json_schema_extra=leave_out_or_set,
    )
    assigned_to: uuid.UUID | None = Field(
        default=None,
        description="The id of a user of the company the lead is assigned to; null unassigns.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_null_for_required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("stage", "priority", "attributes"):
                if field in data and data[field] is None:
                    raise ValueError(f"{field} cannot be null")
        return data


# --- what the AI does in each stage, and the rules that move leads between stages ----------

BantField = Literal["budget", "authority", "need", "timeline"]
BANT_FIELDS: tuple[BantField, ...] = ("budget", "authority", "need", "timeline")
# What a lead's message is about, as the AI's understanding names it (ai.understanding).
Intent = Literal[
    "greeting",
    "question",
    "price_inquiry",
    "purchase_intent",
    "demo_request",
    "human_request",
    "complaint",
    "not_interested",
    "opt_out",
    "other",
]
HandoffReason = Literal["asked_for_person", "angry", "legal_or_complaint", "unknown_answer"]
HANDOFF_REASONS: tuple[HandoffReason, ...] = (
    "asked_for_person",
    "angry",
    "legal_or_complaint",
    "unknown_answer",
)


class StageAIConfig(StrictInput):
    """The AI's brief for leads in a stage. Every field has a default."""

    goal: SafeStr | None = Field(
        default=None, max_length=500, description="What the AI works toward in this stage"
    )
    tone: SafeStr | None = Field(default=None, max_length=200, description="e.g. warm, brief")
    ask_next: SafeStr | None = Field(
        default=None,
        max_length=300,
        description="The question to ask next; default: the first BANT field not yet known",
    )
    avoid: list[Annotated[SafeStr, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=20, description="Topics the AI must not discuss"
    )
    max_chars: Integer = Field(default=700, ge=80, le=4096, description="Longest reply")
    quiet_seconds: Number = Field(
        default=3.0,
        ge=0,
        le=60,
        description="Wait this long after a lead's last message, so a burst gets one answer",
    )
    handoff_on: list[HandoffReason] = Field(
        default_factory=lambda: list(HANDOFF_REASONS),
        description="When to hand the conversation to a person",
    )


class StageRuleWhen(StrictInput):
    # The schema says what the validator below demands: at least one condition.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["bant_known"], "properties": {"bant_known": {"minItems": 1}}},
                {"required": ["intent"], "properties": {"intent": {"minItems": 1}}},
            ]
        }
    )

    bant_known: list[BantField] = Field(
        default_factory=list, description="All of these BANT fields are known"
    )
    intent: list[Intent] = Field(
        default_factory=list, description="The lead's latest message has one of these intents"
    )

    @model_validator(mode="after")
    def _something(self) -> StageRuleWhen:
        if not self.bant_known and not self.intent:
            raise ValueError("a rule needs a condition: bant_known or intent")
        return self


class StageRule(StrictInput):
    model_config = ConfigDict(populate_by_name=True)

    from_: list[Annotated[SafeStr, Field(min_length=1, max_length=100)]] = Field(
        alias="from",
        default_factory=list,
        max_length=50,
        description="Stage names the rule applies in; empty: every stage but `to`",
    )
    to: SafeStr = Field(min_length=1, max_length=100, description="The stage to move to")
    when: StageRuleWhen


DEFAULT_STAGE_RULES: tuple[dict[str, Any], ...] = (
    {"from": ["New"], "to": "Qualified", "when": {"bant_known": ["budget", "need", "timeline"]}},
    {"from": ["New", "Qualified", "Nurture"], "to": "Lost", "when": {"intent": ["not_interested"]}},
)


class StageRulesIn(StrictInput):
    rules: list[StageRule] = Field(max_length=50, description="Checked in order; the first wins")


_IDLE_DEFAULTS = ", ".join(
    f"{minutes} on {channel.value}" for channel, minutes in DEFAULT_BUMPUP_IDLE_MINUTES.items()
)
BUMPUP_IDLE_DESCRIPTION = (
    "Minutes a lead stays silent after our last message before the scheduler sends a "
    f"bump-up ({BUMPUP_IDLE_MINUTES_RANGE[0]} to {BUMPUP_IDLE_MINUTES_RANGE[1]}); null: the "
    f"lead's channel's default ({_IDLE_DEFAULTS}; no bump-ups by email or SMS)"
)
BUMPUP_MAX_DESCRIPTION = (
    "Bump-ups a lead gets after their last message before the scheduler stops "
    f"({BUMPUP_MAX_RANGE[0]} to {BUMPUP_MAX_RANGE[1]}; 0: none); null: the default "
    f"({DEFAULT_BUMPUP_MAX})"
)
BumpupIdleMinutes = Annotated[
    int, Field(ge=BUMPUP_IDLE_MINUTES_RANGE[0], le=BUMPUP_IDLE_MINUTES_RANGE[1]), NOT_A_BOOL
]
BumpupMax = Annotated[int, Field(ge=BUMPUP_MAX_RANGE[0], le=BUMPUP_MAX_RANGE[1]), NOT_A_BOOL]


class StagePatchIn(StrictInput):
    """What a field left out does not change; docs/scheduler.md for the bump-up timing."""

    ai_config: StageAIConfig | None = Field(
        default=None,
        description="The AI's brief for the stage, replaced whole",
        json_schema_extra=leave_out_or_set,
    )
    bumpup_idle_minutes: BumpupIdleMinutes | None = Field(
        default=None, description=BUMPUP_IDLE_DESCRIPTION
    )
    bumpup_max: BumpupMax | None = Field(default=None, description=BUMPUP_MAX_DESCRIPTION)
    # A lead entering the stage is enrolled in this sequence; null: none (docs/sequences.md).
    auto_enroll_sequence_id: uuid.UUID | None = Field(
        default=None, description="The sequence a lead entering this stage is enrolled in"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_null_ai_config(cls, data: Any) -> Any:
        if isinstance(data, dict) and "ai_config" in data and data["ai_config"] is None:
            raise ValueError("ai_config cannot be null; leave it out to keep it")
        return data


class StageOut(RowOut):
    name: str
    position: int
    ai_config: dict[str, Any]
    auto_enroll_sequence_id: uuid.UUID | None = None
    bumpup_idle_minutes: int | None = Field(description=BUMPUP_IDLE_DESCRIPTION)
    bumpup_max: int | None = Field(description=BUMPUP_MAX_DESCRIPTION)


class StageRef(BaseModel):
    id: uuid.UUID
    name: str


class PipelineOut(BaseModel):
    id: uuid.UUID
    name: str
    is_default: bool
    stages: list[StageOut]
    stage_rules: list[dict[str, Any]] = Field(description="The rules in force, in order")
    stage_rules_are_default: bool


class ContactOut(RowOut):
    channel: str
    value: str
    last_inbound_at: datetime | None


class LeadOut(BaseModel):
    id: uuid.UUID
    name: str | None
    pipeline_id: uuid.UUID
    stage: StageRef
    attributes: dict[str, Any]
    priority: int
    ai_paused: bool
    ai_paused_reason: str | None = Field(
        description="Why the AI is paused (a handoff's is `handoff: <reason>`); null when not"
    )
    ai_paused_since: datetime | None = Field(description="When the AI was paused")
    needs_person: bool = Field(
        description="The AI handed the conversation to a person and no person has answered "
        "or taken it over yet (docs/ai.md 5.5)"
    )
    assigned_to: uuid.UUID | None = Field(description="The user the lead is assigned to")
    contacts: list[ContactOut]
    created_at: datetime
    updated_at: datetime
    last_inbound_at: datetime | None


def _assignee(value: object) -> uuid.UUID | Literal["none", "me"]:
    if value in ("none", "me"):
        return "me" if value == "me" else "none"
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise PydanticCustomError(
            "user_id_or_none",
            "a user id, me for the key's own person, or none for leads assigned to no one",
        ) from None


# `GET /leads?assigned_to=`: one clear error for a bad value, not one per member of the union.
AssigneeRef = Annotated[
    uuid.UUID | Literal["none", "me"],
    PlainValidator(_assignee),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "uuid"},
                {"type": "string", "enum": ["none", "me"]},
            ]
        }
    ),
]


@dataclass(frozen=True)
class LeadFilter:
    """GET /leads and `shvya leads list`: every field set narrows the list (docs/ai.md 5.5 says
    what needs_person means)."""

    stage: str | None = None  # a stage's id, or its name in the default pipeline
    needs_person: bool | None = None
    ai_paused: bool | None = None
    channel: Channel | None = None  # the lead has a contact on it
    search: str | None = None  # in the name and the contacts (phone, email), any case
    assigned_to: uuid.UUID | Literal["none"] | None = None


class LeadPage(Page):
    items: list[LeadOut]


class ResumeOut(LeadOut):
    """The lead, and what the AI answers now that it is resumed."""

    pending_messages: int = Field(
        description="How many of the lead's messages no one has answered yet: one AI reply, "
        "by the job below, answers them all"
    )
    job_id: uuid.UUID | None = Field(
        description="The ai.engage job that answers them (GET /jobs/{id}); null: nothing to answer"
    )


class SuppressionIn(StrictInput):
    channel: Literal["wa_cloud", "wa_web", "email", "sms", "sandbox"]
    address: SafeStr = Field(min_length=1, max_length=320)
    reason: Literal["manual", "bounce", "complaint", "opt_out", "marketing_opt_out"] = "manual"


class SuppressionOut(RowOut):
    channel: str
    address: str
    reason: str
    source: str
    created_at: datetime


class AIPauseIn(StrictInput):
    reason: SafeStr | None = Field(
        default=None, max_length=200, description="Why (kept in the AIPaused event)"
    )
