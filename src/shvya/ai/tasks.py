"""Job handlers of the AI salesperson. The AI issues fill these in; until then each says,
in its job's result, that it did nothing."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.jobs.runner import JobContext


def _not_yet(what: str) -> dict[str, Any]:
    return {"outcome": "not_implemented", "detail": f"{what}: nothing was sent"}


def engage(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("AI replies arrive with the AI salesperson")


def bumpup(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("bump-ups arrive with the AI salesperson")


def summarise(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("conversation summaries arrive with the AI salesperson")


def ingest_document(ctx: JobContext) -> dict[str, Any]:
    """kb.ingest: a large knowledge-base upload, read outside the request that brought it."""
    from shvya.ai import service
    from shvya.ai.embeddings import embedding_backend

    return service.ingest_pending(
        ctx.session,
        company_id=ctx.job.company_id,
        document_id=uuid.UUID(ctx.job.payload["document_id"]),
        expected_hash=str(ctx.job.payload["hash"]),
        backend=embedding_backend(ctx.settings),
        now=ctx.now,
    )
