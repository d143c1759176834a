from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shvya.schemas import Integer, Number, SafeStr, StrictInput


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
    until: datetime | None
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
