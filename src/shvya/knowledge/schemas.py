"""The knowledge base's API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from shvya.schemas import Page, RowOut, SafeStr, StrictInput


class KBDocumentIn(StrictInput):
    title: SafeStr = Field(min_length=1, max_length=500)
    content: SafeStr = Field(min_length=1, description="Markdown or plain text")


class KBDocumentOut(RowOut):
    title: str
    source: str | None
    mime_type: str
    content_hash: str
    status: str = Field(description="ready, pending (a job is ingesting it) or failed")
    error: str | None
    passage_count: int
    created_at: datetime
    updated_at: datetime


class KBAddOut(BaseModel):
    document: KBDocumentOut
    outcome: Literal["created", "replaced", "unchanged", "pending"]
    job_id: uuid.UUID | None = Field(default=None, description="The kb.ingest job, if pending")


class KBDocumentPage(Page):
    items: list[KBDocumentOut]


class KBPassageOut(BaseModel):
    passage_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    heading: str
    position: int
    content: str
    score: float = Field(description="Reciprocal-rank-fusion score (higher is better)")
    matched_by: dict[str, int] = Field(description="Each retriever that found it, and its rank")


class KBSearchOut(BaseModel):
    query: str
    retrieval: str
    passages: list[KBPassageOut]
