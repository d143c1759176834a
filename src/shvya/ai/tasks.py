"""Job handlers of the AI salesperson and of the knowledge base."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.jobs.runner import JobContext


def engage(ctx: JobContext) -> dict[str, Any]:
    """ai.engage: answer the lead's unanswered messages (ai.engage)."""
    from shvya.ai.engage import engage as run

    return run(ctx)


def bumpup(ctx: JobContext) -> dict[str, Any]:
    """followup.bumpup: nudge a lead who went quiet (ai.followups)."""
    from shvya.ai.followups import bumpup as run

    return run(ctx)


def summarise(ctx: JobContext) -> dict[str, Any]:
    """ai.summary: 3 to 5 sentences on the lead for the team (ai.followups)."""
    from shvya.ai.followups import summarise as run

    return run(ctx)


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
