"""Job handlers of the knowledge base."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.db.phases import Phases
from shvya.jobs.runner import JobContext
from shvya.knowledge import service
from shvya.knowledge.embeddings import embedding_backend


def ingest_document(ctx: JobContext) -> Phases[dict[str, Any]]:
    """kb.ingest: a large knowledge-base upload, read outside the request that brought it."""
    return service.ingest_pending(
        ctx.session,
        company_id=ctx.job.company_id,
        document_id=uuid.UUID(ctx.job.payload["document_id"]),
        expected_hash=str(ctx.job.payload["hash"]),
        backend=embedding_backend(ctx.settings),
        now=ctx.now,
        job_id=ctx.job.id,
    )
