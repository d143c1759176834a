from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from shvya.db.base import new_id, table_of
from shvya.db.queries import page_of
from shvya.events.models import Event
from shvya.schemas import PageRequest


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


def append_lead_events(
    session: Session,
    *,
    type: str,
    events: Sequence[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]],
    actor: str = "system",
    now: datetime,
) -> None:
    """Events of one type on many leads' timelines, one (company id, lead id, data) each, in
    one executemany (a scheduler's batch)."""
    if not events:
        return
    session.connection().execute(
        _INSERT,
        [
            {
                "id": new_id(),
                "company_id": company_id,
                "entity_type": "lead",
                "entity_id": lead_id,
                "type": type,
                "data": data,
                "actor": actor,
                "created_at": now,
            }
            for company_id, lead_id, data in events
        ],
    )


def append_lead_event(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID | None,
    type: str,
    data: dict[str, Any] | None = None,
    actor: str = "system",
    now: datetime,
) -> uuid.UUID:
    """An event on a lead's timeline (GET /leads/{id}/events); on the company's when it
    concerns no one lead (lead_id None)."""
    return append_event(
        session,
        company_id=company_id,
        entity_type="lead" if lead_id else "company",
        entity_id=lead_id or company_id,
        type=type,
        data=data,
        actor=actor,
        now=now,
    )


def append_company_event(
    session: Session,
    *,
    company_id: uuid.UUID,
    type: str,
    data: dict[str, Any] | None = None,
    actor: str = "system",
    now: datetime,
) -> uuid.UUID:
    """An event on the company's own timeline: its settings, keys, channels, templates."""
    return append_lead_event(
        session, company_id=company_id, lead_id=None, type=type, data=data, actor=actor, now=now
    )


def list_entity_events(
    session: Session,
    *,
    company_id: uuid.UUID,
    entity_type: str,
    entity_id: uuid.UUID,
    page: PageRequest,
) -> tuple[Sequence[Event], int]:
    """A timeline, oldest first. Ids are time-ordered UUIDv7, so they break ties in one instant."""
    return page_of(
        session,
        Event,
        Event.company_id == company_id,
        Event.entity_type == entity_type,
        Event.entity_id == entity_id,
        order_by=(Event.created_at, Event.id),
        page=page,
    )
