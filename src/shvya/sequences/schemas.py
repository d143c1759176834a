"""The sequences API's shapes (docs/sequences.md, "The contract")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from shvya.schemas import (
    NOT_A_BOOL,
    NOT_BLANK,
    Integer,
    Number,
    Page,
    SafeStr,
    StrictInput,
    leave_out_or_set,
)

StepChannel = Literal["whatsapp", "wa_cloud", "wa_web", "email", "sms", "sandbox"]
StopOn = Literal["reply", "stage_change", "unsubscribe", "handoff"]
# "stage:<name or id>": the enrolment ends when the lead reaches that stage (docs/sequences.md).
StageStop = Annotated[str, Field(pattern=r"^stage:\S.{0,199}$")]
StopOnItem = StopOn | StageStop
STOP_ON_DESCRIPTION = (
    "What ends an enrolment when a step runs: reply, stage_change, unsubscribe, handoff, and"
    ' "stage:<name or id>" for reaching that stage (stored as "stage:<id>")'
)
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
MAX_STEPS = 50
MAX_AFTER_MINUTES = 365 * 24 * 60
DEFAULT_STOP_ON: list[StopOnItem] = ["reply", "stage_change", "unsubscribe", "handoff"]


class AfterIn(StrictInput):
    """How long after the previous step (or the enrolment, for the first) the step is due."""

    days: Integer = Field(default=0, ge=0, le=365, description="Calendar (or business) days")
    hours: Integer = Field(default=0, ge=0, le=365 * 24)
    minutes: Integer = Field(default=0, ge=0, le=MAX_AFTER_MINUTES)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        total = self.days * 24 * 60 + self.hours * 60 + self.minutes
        if total > MAX_AFTER_MINUTES:
            raise ValueError(
                f"after adds up to {total} minutes; at most 365 days: lower days, hours or minutes"
            )
        return self


class WindowIn(StrictInput):
    """When, in the lead's local time, the step may go."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: SafeStr = Field(alias="from", pattern=HHMM_PATTERN, description="HH:MM, local")
    to: SafeStr = Field(pattern=HHMM_PATTERN, description="HH:MM, local; later than from")
    weekdays: list[Annotated[int, Field(ge=1, le=7), NOT_A_BOOL]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7],
        min_length=1,
        max_length=7,
        json_schema_extra={"uniqueItems": True},
        description="ISO weekdays the window opens on: Monday = 1 ... Sunday = 7",
    )

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.from_ >= self.to:
            raise ValueError(
                f"window from {self.from_} is not before to {self.to}: give from < to "
                "(a window cannot cross midnight)"
            )
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError("weekdays repeat a day: name each day once")
        return self


class TemplateRefIn(StrictInput):
    """An approved template of the step's channel, and its variables' values."""

    name: SafeStr = Field(min_length=1, max_length=512)
    language: SafeStr = Field(default="en", min_length=2, max_length=16)
    params: list[SafeStr] = Field(default_factory=list, max_length=50)


class StepIn(StrictInput):
    """One step: its channel, timing and exactly one content (text, template or ai)."""

    channel: StepChannel = Field(description="whatsapp (wa_cloud or wa_web), email, sms, sandbox")
    after: AfterIn = Field(default_factory=AfterIn)
    window: WindowIn | None = None
    business_days: StrictBool = Field(default=False, description="Only Monday to Friday")
    subject: SafeStr | None = Field(default=None, min_length=1, max_length=998)
    text: SafeStr | None = Field(default=None, min_length=1, max_length=4096)
    template: TemplateRefIn | None = None
    ai: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="An instruction: the AI writes the step with its usual guardrails",
    )

    @model_validator(mode="after")
    def _content(self) -> Self:
        given = [k for k in ("text", "template", "ai") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a step has exactly one of text, template or ai; this one has "
                f"{', '.join(given) or 'none'}"
            )
        if self.channel == "email":
            if self.text is not None and self.subject is None:
                raise ValueError("an email step with text needs a subject")
        elif self.subject is not None:
            raise ValueError(f"subject is for email steps only, not {self.channel}: remove it")
        if self.template is not None and self.channel not in ("whatsapp", "wa_cloud", "email"):
            raise ValueError(
                f"{self.channel} has no approved templates: use text or ai, or a whatsapp step"
            )
        return self


class SequenceIn(StrictInput):
    name: SafeStr = Field(min_length=1, max_length=200)
    stop_on: list[StopOnItem] = Field(
        default_factory=lambda: list(DEFAULT_STOP_ON),
        max_length=12,
        description=STOP_ON_DESCRIPTION,
    )
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)


class SequencePatchIn(StrictInput):
    """Only the fields given change; `steps` replaces every step."""

    name: SafeStr | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=leave_out_or_set
    )
    active: StrictBool | None = Field(default=None, json_schema_extra=leave_out_or_set)
    stop_on: list[StopOnItem] | None = Field(
        default=None,
        max_length=12,
        description=STOP_ON_DESCRIPTION,
        json_schema_extra=leave_out_or_set,
    )
    steps: list[StepIn] | None = Field(
        default=None, min_length=1, max_length=MAX_STEPS, json_schema_extra=leave_out_or_set
    )

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        nulls = [f for f in self.model_fields_set if getattr(self, f) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null: leave it out instead")
        return self


class AfterOut(BaseModel):
    days: int = 0
    hours: int = 0
    minutes: int = 0


class WindowOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    weekdays: list[int]


class TemplateRefOut(BaseModel):
    name: str
    language: str
    params: list[str]


class StepOut(BaseModel):
    position: int
    channel: str
    after: AfterOut
    window: WindowOut | None
    business_days: bool
    subject: str | None
    text: str | None
    template: TemplateRefOut | None
    ai: str | None


class SequenceOut(BaseModel):
    id: uuid.UUID
    name: str
    active: bool
    stop_on: list[str]
    steps: list[StepOut]
    created_at: datetime
    updated_at: datetime


class SequencePage(Page):
    items: list[SequenceOut]


class EnrollByIds(StrictInput):
    """These leads, by id."""

    lead_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


class EnrollByStage(StrictInput):
    """Every lead now in this stage (its name in the default pipeline, or its id)."""

    stage: SafeStr = Field(min_length=1, max_length=100, pattern=NOT_BLANK)


EnrollIn = EnrollByIds | EnrollByStage


class EnrollOut(BaseModel):
    enrolled: int = Field(description="Leads enrolled by this request (or enrolled again)")
    already: int = Field(description="Leads that were enrolled and active already")


class EnrollmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    lead_id: uuid.UUID
    status: str = Field(description="active, paused, completed or stopped")
    step: int = Field(description="The index of the next step to send (0 is the first)")
    next_run_at: datetime | None
    stop_reason: str | None
    hold_reason: str | None = Field(description="Why the next step waits, when it does")
    enrolled_at: datetime
    updated_at: datetime


class EnrollmentPage(Page):
    items: list[EnrollmentOut]


class _SimulateOptions(StrictInput):
    days: Integer = Field(default=14, ge=1, le=90, description="How many days to simulate")
    reply_rate: Number = Field(
        default=0.0,
        ge=0,
        le=1,
        description="The chance that a lead replies before each step (the same draw every run)",
    )


class SimulateByIds(_SimulateOptions):
    lead_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


class SimulateByStage(_SimulateOptions):
    stage: SafeStr = Field(min_length=1, max_length=100, pattern=NOT_BLANK)


SimulateIn = SimulateByIds | SimulateByStage


class SimulationRow(BaseModel):
    key: str = Field(description="The day (YYYY-MM-DD, UTC), the step's position, or total")
    sends: int
    deferrals: dict[str, int] = Field(description="Deferrals by reason (window, quiet_hours...)")
    refusals: dict[str, int] = Field(description="Refusals by the router, by reason")
    stops: dict[str, int] = Field(description="Enrolments that would stop, by reason")
    earliest_local_send: str | None = Field(description="HH:MM in the lead's zone")
    latest_local_send: str | None


class SimulationOut(BaseModel):
    sequence_id: uuid.UUID
    leads: int
    days: int
    reply_rate: float
    starts_at: datetime
    ends_at: datetime
    per_day: list[SimulationRow]
    per_step: list[SimulationRow]
    total: SimulationRow
