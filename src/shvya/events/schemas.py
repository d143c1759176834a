from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shvya.schemas import Page, RowOut


class EventOut(RowOut):
    entity_type: str
    entity_id: uuid.UUID
    type: str
    data: dict[str, Any]
    actor: str
    created_at: datetime


class EventPage(Page):
    items: list[EventOut]
