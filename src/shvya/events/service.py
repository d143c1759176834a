from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from shvya.db.base import new_id, table_of
from shvya.events.models import Event


def append_event(
    session: Session,
    *,
    company_id: uuid.UUID,
    entity_type: str,
    entity_id: uuid.UUID,
    type: str,
    data: dict[str, Any] | None = None,
    actor: str = "system",
    now: datetime,
) -> uuid.UUID:
    """Insert at once (a Core insert: the hot paths append one event per request, and the
    ORM's unit-of-work costs more CPU than the statement). Ids are time-ordered."""
    event_id = new_id()
    session.connection().execute(
        _INSERT,
        {
            "id": event_id,
            "company_id": company_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "type": type,
            "data": data or {},
            "actor": actor,
            "created_at": now,
        },
    )
    return event_id


_INSERT = insert(table_of(Event))


def list_entity_events(
    session: Session,
    *,
    company_id: uuid.UUID,
    entity_type: str,
    entity_id: uuid.UUID,
    limit: int,
    offset: int,
) -> tuple[Sequence[Event], int]:
    """A timeline, oldest first. Ids are time-ordered UUIDv7, so they break ties in one instant."""
    where = (
        Event.company_id == company_id,
        Event.entity_type == entity_type,
        Event.entity_id == entity_id,
    )
    total = session.scalar(select(func.count()).select_from(Event).where(*where)) or 0
    rows = session.scalars(
        select(Event).where(*where).order_by(Event.created_at, Event.id).limit(limit).offset(offset)
    ).all()
    return rows, total
