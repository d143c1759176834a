from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from shvya.jobs.service import JobType
from shvya.schemas import NOT_A_BOOL, Page, RowOut, StrictInput


class JobOut(RowOut):
    type: str
    priority: int
    status: str = Field(description="queued, processing, completed, failed or dlq")
    lead_id: uuid.UUID | None
    attempts: int
    max_attempts: int
    run_at: datetime = Field(description="When it is (or was last) due")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    last_error: str | None


class JobPage(Page):
    items: list[JobOut]


class LaneStatsOut(BaseModel):
    queued_due: int = Field(description="Queued jobs that are due now")
    oldest_due_age_seconds: float | None
    wait_p50_ms: float | None = Field(
        description="Due-to-start wait, jobs started in the last hour"
    )
    wait_p99_ms: float | None
    started_last_hour: int


class QueueStatsOut(BaseModel):
    scope: str = Field(description="`company`, or `all` (every company: an operator key)")
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    lanes: dict[str, LaneStatsOut] = Field(description="p1: replies to live leads; p2: bulk")


class ReplayIn(StrictInput):
    limit: Annotated[int, Field(ge=1, le=100_000), NOT_A_BOOL] | None = None
    type: JobType | None = Field(default=None, description="Only jobs of this type")


class ReplayOut(BaseModel):
    replayed: int
