from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from shvya.schemas import Page


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    entity_type: str
    entity_id: uuid.UUID
    type: str
    data: dict[str, Any]
    actor: str
    created_at: datetime


class EventPage(Page):
    items: list[EventOut]
