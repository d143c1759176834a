from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shvya.schemas import Integer, Number, Page, SafeStr, StrictInput


class KBDocumentIn(StrictInput):
    title: SafeStr = Field(min_length=1, max_length=500)
    content: SafeStr = Field(min_length=1, description="Markdown or plain text")


class KBDocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
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


class UsageTotalsOut(BaseModel):
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    avg_latency_ms: float | None


class UsageOut(BaseModel):
    lead_id: uuid.UUID | None
    since: datetime | None
    total: UsageTotalsOut
    by_task: dict[str, UsageTotalsOut]
    by_model: dict[str, UsageTotalsOut]


class AIModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    task: str
    provider: str
    model: str
    temperature: Decimal
    max_tokens: int
    price_per_1k_input: Decimal
    price_per_1k_output: Decimal


class AIModelIn(StrictInput):
    provider: Literal["offline", "openai", "anthropic"]
    model: SafeStr = Field(default="", max_length=200)
    # Numbers in, exact decimals stored (a JSON number reads the same either way).
    temperature: Number = Field(default=0.3, ge=0, le=2)
    max_tokens: Integer = Field(default=512, ge=16, le=32_000)
    price_per_1k_input: Number = Field(default=0.0, ge=0, le=1000)
    price_per_1k_output: Number = Field(default=0.0, ge=0, le=1000)

    def stored_values(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "model": self.model,
            "temperature": Decimal(str(self.temperature)),
            "max_tokens": self.max_tokens,
            "price_per_1k_input": Decimal(str(self.price_per_1k_input)),
            "price_per_1k_output": Decimal(str(self.price_per_1k_output)),
        }
