from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shvya.schemas import SafeStr, StrictInput
from shvya.tenancy.models import Role


class ApiKeyCreateIn(StrictInput):
    name: SafeStr = Field(default="", max_length=200)
    role: Role


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: str
    prefix: str = Field(description="The key's public part: it starts every key of this row.")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown only in this response; store it now.")


class MeOut(BaseModel):
    company_id: uuid.UUID
    company_name: str
    timezone: str
    key_id: uuid.UUID
    role: str
