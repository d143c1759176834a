from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shvya.crm.models import Channel
from shvya.schemas import JsonObject, Page, SafeStr, StrictInput


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


def _leave_out_or_set(schema: dict[str, Any]) -> None:
    """Publish a field that may be left out but not sent as null without its null variant,
    so the schema says what the validator accepts."""
    variants = [variant for variant in schema.pop("anyOf", []) if variant != {"type": "null"}]
    if len(variants) == 1:
        schema.update(variants[0])
    elif variants:
        schema["anyOf"] = variants
    schema.pop("default", None)


class LeadPatchIn(StrictInput):
    """Only these fields can change; ids, the company and timestamps never can."""

    stage: SafeStr | None = Field(
        default=None,
        max_length=100,
        description="Stage id or name.",
        json_schema_extra=_leave_out_or_set,
    )
    name: SafeStr | None = Field(default=None, max_length=200, description="null clears it.")
    priority: int | None = Field(
        default=None, ge=-1000, le=1000, json_schema_extra=_leave_out_or_set
    )
    attributes: JsonObject | None = Field(
        default=None,
        description="Merged into the lead's attributes; a key set to null is removed.",
        json_schema_extra=_leave_out_or_set,
    )

    @model_validator(mode="before")
    @classmethod
    def _no_null_for_required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("stage", "priority", "attributes"):
                if field in data and data[field] is None:
                    raise ValueError(f"{field} cannot be null")
        return data


class StageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    position: int
    ai_config: dict[str, Any]


class StageRef(BaseModel):
    id: uuid.UUID
    name: str


class PipelineOut(BaseModel):
    id: uuid.UUID
    name: str
    is_default: bool
    stages: list[StageOut]


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
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
    contacts: list[ContactOut]
    created_at: datetime
    updated_at: datetime
    last_inbound_at: datetime | None


class LeadPage(Page):
    items: list[LeadOut]


class SuppressionIn(StrictInput):
    channel: Literal["wa_cloud", "wa_web", "email", "sms", "sandbox"]
    address: SafeStr = Field(min_length=1, max_length=320)
    reason: Literal["manual", "bounce", "complaint", "opt_out", "marketing_opt_out"] = "manual"


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: str
    address: str
    reason: str
    source: str
    created_at: datetime
