"""The AI's memory of a lead (AISession): the recent turns a reply was written from and the
rolling summary of what fell out of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.ai.models import AISession
from shvya.conversations import service as conversations
from shvya.conversations.models import Message
from shvya.crm.models import Lead

MEMORY_MESSAGES = 20
MEMORY_WORDS = 1200  # the recent turns an LLM sees, newest kept first


def recent_turns(session: Session, *, lead: Lead) -> list[Message]:
    """The recent turns an LLM reads, within MEMORY_WORDS; older ones live in the summary."""
    recent = conversations.recent_messages(
        session, company_id=lead.company_id, lead_id=lead.id, limit=MEMORY_MESSAGES
    )
    kept: list[Message] = []
    budget = MEMORY_WORDS
    for message in reversed(recent):
        budget -= len(message.text.split())
        if budget < 0 and kept:
            break
        kept.append(message)
    return list(reversed(kept))


def find_ai_session(session: Session, *, lead: Lead) -> AISession | None:
    return session.scalars(select(AISession).where(AISession.lead_id == lead.id)).first()


def ai_session(session: Session, *, lead: Lead, now: datetime) -> AISession:
    """The lead's AI memory (recent turns and the rolling summary), made on first use."""
    row = find_ai_session(session, lead=lead)
    if row is None:
        row = AISession(
            company_id=lead.company_id, lead_id=lead.id, created_at=now, summary="", turns={}
        )
        session.add(row)
    return row


def remember(
    session: Session, *, lead: Lead, turns: list[Message], reply: str, now: datetime
) -> None:
    """AISession: the turns the reply was written from, and its size in tokens (words)."""
    row = ai_session(session, lead=lead, now=now)
    recent: list[dict[str, str | None]] = [
        {"id": str(m.id), "direction": m.direction, "text": m.text[:1000]} for m in turns
    ]
    recent.append({"id": None, "direction": "out", "text": reply})
    row.turns = {"recent": recent}
    row.token_count = sum(len(str(t["text"]).split()) for t in recent) + len(row.summary.split())
    row.updated_at = now
